"""Reading SQL and the database's own schema: what a statement reads and writes, and its
short name for people."""
