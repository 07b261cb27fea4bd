"""The racer processes: what runs in them, how they start (hosts, spares), the start gate."""
