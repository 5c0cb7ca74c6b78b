"""Tests of the PostgreSQL store that only PostgreSQL has: its server (tests/pg.py), connecting,
its schema and lineage, statement translation, the daemon's lock, a lost connection and a role
without privileges. The commands and the daemon on it: test_store_pg_commands.py; the store's
contract on both engines: tests/store/."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import Secret, StoreConfig
from drgreen_poller.errors import StateLocked, StoreError
from drgreen_poller.events import Resource
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.locking import PostgresLock, state_lock
from drgreen_poller.store.postgres import PgRow, pg_sql
from drgreen_poller.store.postgres_schema import POSTGRES_MIGRATIONS
from tests.conftest import PgDatabase, pg_store_config
from tests.ports import free_port

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")


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


class TestConnecting:
    async def test_a_refused_connection_is_one_line(self, pg_database: PgDatabase) -> None:
        """Nothing listening at the URL's port: one line naming the URL and the refusal."""
        port = free_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/{pg_database.name}"
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url), sinks=())
        message = str(refused.value)
        assert message.startswith(f"cannot connect to the state database {url}: ")
        assert "Connection refused" in message
        assert "\n" not in message

    async def test_a_wrong_password_is_one_line(self, pg_database: PgDatabase) -> None:
        """A wrong password: libpq's reason, never the password."""
        wrong = StoreConfig(pg_database.url, Secret("not-the-password", "test"))
        with pytest.raises(StoreError) as refused:
            await Store.open(wrong, sinks=())
        assert str(refused.value) == (
            f"cannot connect to the state database {pg_database.url}: "
            'password authentication failed for user "postgres"'
        )

    async def test_a_missing_database_is_one_line(self, pg_database: PgDatabase) -> None:
        """A database that does not exist is named as such."""
        url = pg_database.server.url("no_such_db")
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url, Secret(pg_database.password, "test")), sinks=())
        assert str(refused.value) == (
            f'cannot connect to the state database {url}: database "no_such_db" does not exist'
        )

    async def test_a_password_in_the_url_is_never_shown(self, pg_database: PgDatabase) -> None:
        """A refusal of a URL holding a password shows it as ***."""
        url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db"
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url), sinks=())
        assert "hunter2" not in str(refused.value)
        assert "postgres:***@127.0.0.1" in str(refused.value)


class TestSchema:
    async def test_migrated_once_to_its_own_version(self, pg_database: PgDatabase) -> None:
        """A new database gets PostgreSQL's migrations, recorded in schema_version; opening it
        again applies nothing more."""
        state = pg_store_config(pg_database)
        for _ in range(2):
            await (await Store.open(state, sinks=())).close()
        with pg_database.server.connect(pg_database.name) as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row == (len(POSTGRES_MIGRATIONS),)

    async def test_a_reader_never_creates_the_state(self, pg_database: PgDatabase) -> None:
        """A listing on a database the daemon never ran on is refused and creates nothing."""
        with pytest.raises(StoreError, match="there is no drgreen-poller state in"):
            await Store.open_reader(pg_store_config(pg_database))
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)

    async def test_a_newer_schema_is_refused(self, pg_database: PgDatabase) -> None:
        """A database migrated by a newer drgreen-poller is refused with a clear message."""
        state = pg_store_config(pg_database)
        await (await Store.open(state, sinks=())).close()
        with pg_database.server.connect(pg_database.name) as conn:
            conn.execute("UPDATE schema_version SET version = 99")
        with pytest.raises(StoreError, match="has schema version 99, newer than"):
            await Store.open(state, sinks=())


class TestLineage:
    async def test_every_writer_open_raises_the_floor(self, pg_database: PgDatabase) -> None:
        """As with SQLite, each start numbers above every sequence an earlier start could
        have used, so a lost or restored database never reuses an event id."""
        state, clock = pg_store_config(pg_database), FakeClock(NOW)
        first = await Store.open(state, sinks=(), clock=clock)
        await first.close()
        assert first.lineage.fresh
        clock.advance(60)
        second = await Store.open(state, sinks=(), clock=clock)
        await second.close()
        assert not second.lineage.fresh
        assert second.lineage.sequence_floor - first.lineage.sequence_floor == 60_000
        assert second.lineage.generation == first.lineage.generation + 1
        clock.advance(60)
        reader = await Store.open_reader(state, clock=clock)
        await reader.close()
        assert reader.lineage.generation == second.lineage.generation  # a reader records none

    async def test_a_sequence_above_int32_is_stored(self, pg_database: PgDatabase) -> None:
        """Sequences start above the floor (Unix milliseconds): they need 64 bits."""
        store = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        try:
            change = Observation(ORDER, {}, None, changes=[Change("order.approved", {})])
            [event] = (await store.commit_events("main", [change], now=NOW)).events
            assert event["sequence"] > 2**31
            [entity] = await store.entities("main")
            assert entity.sequence == event["sequence"]
        finally:
            await store.close()


class TestStatements:
    def test_placeholders_and_percent_signs_are_translated(self) -> None:
        """``?`` becomes ``%s`` outside quoted literals; a literal ``%`` is doubled."""
        assert pg_sql("SELECT '?', '100%' FROM t WHERE a = ? AND b LIKE ?") == (
            "SELECT '?', '100%%' FROM t WHERE a = %s AND b LIKE %s"
        )
        assert pg_sql("SELECT 1") is pg_sql("SELECT 1")  # translated once

    async def test_literals_survive_a_round_trip(self, pg_database: PgDatabase) -> None:
        """A statement with a literal ``%`` and a quoted ``?`` runs as written."""
        store = await Store.open(pg_store_config(pg_database), sinks=())
        try:
            [row] = await store._fetch("SELECT '100%' || ? AS a, '?' AS b", ["x"])
            assert (row[0], row["b"], len(row), list(row), row.keys()) == (
                "100%x", "?", 2, ["100%x", "?"], ["a", "b"],
            )  # fmt: skip
            assert isinstance(row, PgRow)

            def many(conn: Db) -> int:
                conn.executemany("INSERT INTO holders (name, added_at) VALUES (?, ?)", [("a", "t")])
                return int(conn.execute("SELECT COUNT(*) FROM holders").fetchone()[0])

            assert await store._atomically(many) == 1
        finally:
            await store.close()


class TestLock:
    def test_a_second_daemon_is_refused(self, pg_database: PgDatabase) -> None:
        """Taken exclusively (poll-once), one process holds it; the lock goes with its
        connection."""
        state = pg_store_config(pg_database)
        first = state_lock(state)
        assert isinstance(first, PostgresLock)
        with first, pytest.raises(StateLocked, match="already running on postgresql://"):
            state_lock(state).acquire()
        with state_lock(state):  # released: taken again
            pass

    def test_an_unreachable_database_is_a_store_error(self) -> None:
        """The lock of a database that cannot be reached says why, in one line."""
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/db"
        with pytest.raises(StoreError, match="cannot connect to the state database"):
            state_lock(StoreConfig(url)).acquire()


class TestLostConnection:
    async def test_a_dropped_connection_is_one_line(self, pg_database: PgDatabase) -> None:
        """The server ending the store's connection (a restart): the next write fails with a
        StoreError of one line, not a traceback."""
        store = await Store.open(pg_store_config(pg_database), sinks=())
        try:
            with pg_database.server.connect(pg_database.name) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'drgreen-poller' AND datname = %s",
                    (pg_database.name,),
                )
            with pytest.raises(StoreError) as failed:
                await store.ensure_holders(["main"], NOW)
            assert str(failed.value).startswith("writing the state database failed: ")
            assert "\n" not in str(failed.value)
        finally:
            await store.close()


class TestPrivileges:
    async def test_a_user_who_cannot_create_tables_is_told_so(
        self, pg_database: PgDatabase
    ) -> None:
        """A role without CREATE on the database's schema (PostgreSQL 15's default for any
        role but the owner) cannot set the state up: one line, with PostgreSQL's reason."""
        role = f"plain_{pg_database.name}"
        with pg_database.server.connect(pg_database.name) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'plain-pw'")
        url = pg_database.server.url(pg_database.name, user=role)
        try:
            with pytest.raises(StoreError) as refused:
                await Store.open(StoreConfig(url, Secret("plain-pw", "test")), sinks=())
            assert str(refused.value).startswith(f"cannot use the state database {url}: ")
            assert "permission denied for schema public" in str(refused.value)
            assert "\n" not in str(refused.value)
        finally:
            with pg_database.server.connect(pg_database.name) as admin:
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")
