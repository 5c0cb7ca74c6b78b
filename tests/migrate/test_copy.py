"""Tests of the copy itself (``copy_state``): every table of either schema decided, rows, ids and
bodies arriving the same, a delivery in flight arriving pending, new ids after the copied ones,
and a copy that fails (a refused row, a damaged or locked file) writing nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.errors import StoreError
from drgreen_poller.events import iso_ms
from drgreen_poller.store import Observation, Store
from drgreen_poller.store.copying import NOT_COPIED, PG_ONLY_COLUMNS, TABLES, copy_state
from tests.conftest import PgDatabase, pg_store_config
from tests.migrate.rig import ALL, NOW, lite_rows, order, pg_rows, sqlite_state


class TestTables:
    async def test_every_table_of_either_schema_is_decided(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """Each table of the SQLite and PostgreSQL schemas is copied with the same columns, or
        is one NOT_COPIED says why not (a column: PG_ONLY_COLUMNS): a table or column added to
        either schema fails here until it is decided."""
        await sqlite_state(tmp_path / "state.db", 0, FakeClock(NOW))
        store = await Store.open(pg_store_config(pg_database), sinks=())
        await store.close()
        lite = {
            name: [c[1] for c in lite_rows(tmp_path / "state.db", f"PRAGMA table_info({name})")]
            for (name,) in lite_rows(
                tmp_path / "state.db", "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        pg: dict[str, list[str]] = {}
        for table, column in pg_rows(
            pg_database,
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        ):
            if (table, column) not in PG_ONLY_COLUMNS:
                pg.setdefault(table, []).append(column)
        for schema in (lite, pg):
            copied = {name: tuple(cols) for name, cols in schema.items() if name not in NOT_COPIED}
            assert copied == TABLES

    async def test_an_unknown_table_is_refused(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A state with a table this copy does not know is refused, naming it: never left
        behind silently."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 1, FakeClock(NOW))
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE extra (x)")
            conn.execute("ALTER TABLE holders ADD COLUMN note TEXT")
        with pytest.raises(StoreError, match=r"cannot copy \(extra, holders.note\)"):
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))


class TestCopy:
    async def test_rows_ids_and_bodies_are_the_same(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """Every row of every table arrives with the same values: ids, sequences, bodies
        byte for byte, times as written."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 5, FakeClock(NOW))
        report = copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert report.rows["events"] == report.rows["deliveries"] == 5
        for table, columns in TABLES.items():
            select = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}"  # noqa: S608 - the schema's own names
            assert [tuple(r) for r in pg_rows(pg_database, select)] == lite_rows(path, select)

    async def test_a_delivery_in_flight_arrives_pending(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A row ``delivering`` when the daemon stopped arrives ``pending`` (updated at the
        copy's time), its id, attempts and due time kept, as a restart would make it."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 2, FakeClock(NOW), in_flight=1)
        [[claimed]] = lite_rows(path, "SELECT id FROM deliveries WHERE state = 'delivering'")
        later = NOW + timedelta(minutes=5)
        before = lite_rows(path, "SELECT id, attempts, next_attempt_at FROM deliveries")
        report = copy_state(path, pg_store_config(pg_database), iso_ms(later))
        assert report.requeued_in_flight == 1
        rows = pg_rows(
            pg_database, "SELECT id, state, updated_at, attempts, next_attempt_at FROM deliveries"
        )
        states = {r[0]: (r[1], r[2]) for r in rows}
        assert states[claimed] == ("pending", iso_ms(later))
        assert sorted((r[0], r[3], r[4]) for r in rows) == sorted(before)

    async def test_new_ids_follow_every_id_sqlite_gave(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """PostgreSQL's next event and delivery ids come after every id SQLite handed out,
        also a pruned row's, and the next sequence is above the copied ones."""
        path, clock = tmp_path / "state.db", FakeClock(NOW)
        await sqlite_state(path, 3, clock)
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM deliveries WHERE id = 3")
        report = copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert report.next_ids == {"events": 4, "deliveries": 4}
        clock.advance(1)
        store = await Store.open(pg_store_config(pg_database), sinks=[ALL], clock=clock)
        try:
            change = Observation(order(0), {"n": 0}, None, changes=[Change("order.paid", {})])
            [event] = (await store.commit_events("main", [change], now=clock.now())).events
            [row] = await store.deliveries(limit=1)
        finally:
            await store.close()
        [[copied_sequence]] = lite_rows(path, "SELECT MAX(sequence) FROM events")
        assert event["sequence"] > copied_sequence
        assert (row.id, row.event_id) == (4, event["id"])
        assert pg_rows(pg_database, "SELECT MAX(seq) FROM events") == [(4,)]

    async def test_the_copied_tables_have_statistics(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """Every copied table is analyzed by the copy (the planner knows its rows at once),
        not left without statistics until autovacuum comes round."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 5, FakeClock(NOW))
        report = copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        analyzed = pg_rows(
            pg_database,
            "SELECT s.relname, s.last_analyze IS NOT NULL, c.reltuples FROM pg_stat_user_tables"
            " AS s JOIN pg_class AS c ON c.oid = s.relid",
        )
        assert {name: (done, tuples) for name, done, tuples in analyzed if name in TABLES} == {
            name: (True, float(rows)) for name, rows in report.rows.items()
        }

    async def test_a_failing_copy_writes_nothing(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A row PostgreSQL refuses (a delivery of an event that is gone, in a state edited by
        hand) fails the copy in one line, and the database is left as it was: not even the
        schema."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 2, FakeClock(NOW))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE deliveries SET event_id = 'evt_gone' WHERE id = 2")
        with pytest.raises(StoreError) as failed:
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        message = str(failed.value)
        assert message.startswith(f"copying into {pg_database.url} failed, nothing was written: ")
        assert "foreign key" in message
        assert "\n" not in message
        assert pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    async def test_a_database_opened_without_a_state_is_taken(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A database a daemon opened but wrote no state into (only its lineage row) takes the
        copy: the SQLite state's lineage, under the higher of the two sequence floors."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 1, FakeClock(NOW))
        opened = await Store.open(
            pg_store_config(pg_database), sinks=(), clock=FakeClock(NOW + timedelta(days=1))
        )
        await opened.close()
        copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        [[lineage]] = lite_rows(path, "SELECT lineage FROM lineage")
        assert pg_rows(pg_database, "SELECT lineage, sequence_floor FROM lineage") == [
            (lineage, opened.lineage.sequence_floor)
        ]

    async def test_a_damaged_file_fails_the_copy_in_one_line(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A SQLite file damaged past its schema (its second half overwritten) fails the copy
        where it cannot be read, in one line naming it, and nothing is written."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 300, FakeClock(NOW))
        size = path.stat().st_size
        with path.open("r+b") as damaged:
            damaged.seek(size // 2)
            damaged.write(b"\xff" * (size - size // 2))
        with pytest.raises(StoreError) as failed:
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert str(failed.value) == (
            f"reading the state database {path} failed, nothing was written to"
            f" {pg_database.url}: database disk image is malformed"
        )
        assert pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    @pytest.mark.timeout(30)
    async def test_a_writer_holding_the_file_past_the_busy_timeout(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A command holding SQLite's write lock longer than the busy timeout (5 s): one line
        naming the file, nothing copied."""
        path = tmp_path / "state.db"
        await sqlite_state(path, 1, FakeClock(NOW))
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=f"^cannot read the state database {path}: "):
                await asyncio.to_thread(copy_state, path, pg_store_config(pg_database), iso_ms(NOW))
        finally:
            writer.close()
        assert pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]
