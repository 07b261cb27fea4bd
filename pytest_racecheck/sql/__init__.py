"""Reading SQL and the database's own schema, for the footprints explore mode compares."""
