"""What runs inside code under test: sync points, and what a racer's start did outside it."""
