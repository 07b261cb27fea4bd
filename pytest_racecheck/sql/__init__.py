"""Reading SQL: what a statement reads and writes, and its short name for people."""
