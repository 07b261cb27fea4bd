"""What crosses the pipe between the controller and its racers: messages and outcomes."""
