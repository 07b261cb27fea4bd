"""What crosses the pipe between the controller and its racers: messages, outcomes, and
the pickler of a race's call."""
