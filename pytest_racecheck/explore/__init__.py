"""Explore's searches: which racer goes next at each decision, and when nothing is left."""
