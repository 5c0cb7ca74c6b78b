"""The store's contract on both engines (the ``store`` fixture runs each test on SQLite and on
PostgreSQL), and SQLite's own file safety, migrations, lock and library check."""
