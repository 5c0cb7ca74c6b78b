"""``migrate-state``: a SQLite state copied into a real PostgreSQL (tests/pg.py) with every id
kept, the daemon continuing there without re-sending anything, and the refusals."""
