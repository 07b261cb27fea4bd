"""A race's result, its failure texts, anomaly names, and the reports made from it."""
