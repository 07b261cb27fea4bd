"""The app of the Django example: the models and the code that starts a run."""
