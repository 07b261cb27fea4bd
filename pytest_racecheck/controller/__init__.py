"""The controller: a race's rounds, its crew of racers, its probes, its verdicts and errors."""
