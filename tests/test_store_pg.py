"""Tests of the PostgreSQL the test suite starts itself (tests/pg.py, conftest's fixtures)."""

from __future__ import annotations

from tests.conftest import PgDatabase


class TestOwnDatabase:
    def test_a_test_writes_in_its_own_database(self, pg_database: PgDatabase) -> None:
        """A table made in one test's database is absent from another's (the next test)."""
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)
            conn.execute("CREATE TABLE marker (n int)")

    def test_the_next_test_starts_empty(self, pg_database: PgDatabase) -> None:
        """The other test's table is not here: each test's database is new."""
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)
            conn.execute("CREATE TABLE marker (n int)")
