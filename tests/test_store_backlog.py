"""Tests of the backlog reads behind /metrics, /healthz and ``status``: migration 6 (the index of
owed deliveries), the results of ``undelivered()`` and ``backlog()``, and their query plans."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from drgreen_poller.config import StoreConfig
from drgreen_poller.store import MIGRATIONS, SinkBacklog, Store
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.outbox import _BACKLOG_SQL, _UNDELIVERED_SQL

# (sink, state, created_at): every state in one sink, the oldest owed row not the first one
# written, and sinks with only failed, only delivered and only delivering rows.
ROWS = [
    ("store", "delivered", "2026-11-01T00:00:00.000Z"),
    ("store", "pending", "2026-11-20T10:00:00.000Z"),
    ("store", "delivering", "2026-11-20T09:00:00.000Z"),
    ("store", "pending", "2026-11-21T10:00:00.000Z"),
    ("store", "failed", "2026-11-02T00:00:00.000Z"),
    ("store", "delivered", "2026-11-22T00:00:00.000Z"),
    ("audit", "failed", "2026-11-03T00:00:00.000Z"),
    ("audit", "failed", "2026-11-04T00:00:00.000Z"),
    ("archive", "delivered", "2026-11-05T00:00:00.000Z"),
    ("kyc", "delivering", "2026-11-23T00:00:00.000Z"),
    ("kyc", "pending", "2026-11-23T00:00:01.000Z"),
]
# What undelivered() returned before migration 6: the reference its results must equal.
OLD_UNDELIVERED_SQL = (
    "SELECT sink, SUM(state = 'pending'), SUM(state = 'delivering'), SUM(state = 'failed'),"
    " MIN(CASE WHEN state IN ('pending', 'delivering') THEN created_at END)"
    " FROM deliveries WHERE state IN ('pending', 'delivering', 'failed') GROUP BY sink"
)
OLD_BACKLOG_SQL = "SELECT sink, state, COUNT(*) FROM deliveries GROUP BY sink, state"


def _fill(db: Db, rows: list[tuple[str, str, str]]) -> None:
    """Deliveries (and their events) written with plain SQL, as any older version left them."""
    for index, (sink, state, created) in enumerate(rows):
        db.execute(
            "INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)"
            " VALUES (?, 'order.created', 'main', ?, 1, ?, '{}')",
            (f"evt_{index}", f"order:{index}", created),
        )
        db.execute(
            "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 1, 0, ?, ?)",
            (f"evt_{index}", sink, state, f"main/order:{index}", created, created),
        )


def _version_5(path: Path) -> None:
    """A state database as drgreen-poller left it at schema version 5, with deliveries."""
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:5]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 5")
        _fill(db, ROWS)


def _old_undelivered(path: Path) -> dict[str, SinkBacklog]:
    with sqlite3.connect(path) as db:
        rows = db.execute(OLD_UNDELIVERED_SQL).fetchall()
    return {
        r[0]: SinkBacklog({"pending": r[1], "delivering": r[2], "failed": r[3]}, r[4]) for r in rows
    }


def _old_backlog(path: Path) -> dict[str, dict[str, int]]:
    backlog: dict[str, dict[str, int]] = {}
    with sqlite3.connect(path) as db:
        for sink, state, count in db.execute(OLD_BACKLOG_SQL):
            backlog.setdefault(sink, {})[state] = count
    return backlog


def _plan(path: Path, sql: str) -> list[str]:
    """SQLite's plan of ``sql`` on the database at ``path``, one detail per step."""
    with sqlite3.connect(path) as db:
        return [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + sql)]


def _reads(plan: list[str]) -> list[str]:
    """The steps of a plan that read deliveries (the compound query's own steps left out)."""
    return [step for step in plan if "deliveries" in step]


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    """A version-5 database with deliveries (each test opens it with the store: migrated)."""
    path = tmp_path / "state.db"
    _version_5(path)
    return path


class TestBothEngines:
    async def test_backlog_and_undelivered(self, store_state: Path | StoreConfig) -> None:
        """On either engine, the backlog per sink and state and the oldest owed row are those
        of the rows (the figures SQLite's reference query gives, below)."""
        store = await Store.open(store_state, sinks=())
        try:
            await store._atomically(lambda conn: _fill(conn, ROWS))
            undelivered, backlog = await store.undelivered(), await store.backlog()
        finally:
            await store.close()
        assert undelivered == {
            "audit": SinkBacklog({"pending": 0, "delivering": 0, "failed": 2}, None),
            "kyc": SinkBacklog(
                {"pending": 1, "delivering": 1, "failed": 0}, "2026-11-23T00:00:00.000Z"
            ),
            "store": SinkBacklog(
                {"pending": 2, "delivering": 1, "failed": 1}, "2026-11-20T09:00:00.000Z"
            ),
        }
        assert backlog == {
            "store": {"delivered": 2, "delivering": 1, "failed": 1, "pending": 2},
            "audit": {"failed": 2},
            "archive": {"delivered": 1},
            "kyc": {"delivering": 1, "pending": 1},
        }

    async def test_an_empty_outbox_has_no_backlog(self, store_state: Path | StoreConfig) -> None:
        """Without deliveries there is no sink in the backlog."""
        store = await Store.open(store_state, sinks=())
        try:
            assert await store.undelivered() == {}
            assert await store.backlog() == {}
        finally:
            await store.close()


class TestMigration6:
    async def test_applies_on_a_version_5_state(self, old_state: Path) -> None:
        """Opening a version-5 state adds the index of owed deliveries and keeps every row."""
        store = await Store.open(old_state, sinks=())
        await store.close()
        with sqlite3.connect(old_state) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            [(sql,)] = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'deliveries_owed'"
            ).fetchall()
            assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == len(ROWS)
        assert "WHERE state IN ('pending', 'failed')" in sql

    async def test_a_new_state_has_the_index(self, tmp_path: Path) -> None:
        """A state created from scratch gets the same index as a migrated one."""
        store = await Store.open(tmp_path / "state.db", sinks=())
        await store.close()
        with sqlite3.connect(tmp_path / "state.db") as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "deliveries_owed" in names


class TestUndelivered:
    async def test_results_equal_the_query_before_the_index(self, old_state: Path) -> None:
        """Counts per state and the oldest owed time of each sink are what they were."""
        before = _old_undelivered(old_state)
        store = await Store.open(old_state, sinks=())
        try:
            after = await store.undelivered()
        finally:
            await store.close()
        assert after == before
        assert list(after) == sorted(after)  # sinks in name order, as before
        assert after["store"] == SinkBacklog(
            {"pending": 2, "delivering": 1, "failed": 1}, "2026-11-20T09:00:00.000Z"
        )
        assert after["audit"].oldest_due_at is None  # failed rows are not owed
        assert "archive" not in after  # only delivered: no backlog

    async def test_reads_only_the_index_of_owed_rows(self, old_state: Path) -> None:
        """Pending and failed rows are counted in migration 6's index alone (no table rows, no
        sort) and only the rows in flight are looked up, so the cost does not grow with the
        delivered rows kept."""
        await (await Store.open(old_state, sinks=())).close()
        plan = _plan(old_state, _UNDELIVERED_SQL)
        assert _reads(plan) == [
            "SEARCH deliveries USING COVERING INDEX deliveries_owed (state=?)",
            "SEARCH deliveries USING INDEX deliveries_by_state_time (state=?)",
        ]
        assert plan.count("USE TEMP B-TREE FOR GROUP BY") <= 1  # the rows in flight's


class TestStatusBacklog:
    async def test_results_equal_the_query_before(self, old_state: Path) -> None:
        """``status``'s rows per sink and state (delivered included) are what they were."""
        before = _old_backlog(old_state)
        store = await Store.open(old_state, sinks=())
        try:
            after = await store.backlog()
        finally:
            await store.close()
        assert json.dumps(after) == json.dumps(before)  # in the same order, too
        assert after["store"] == {"delivered": 2, "delivering": 1, "failed": 1, "pending": 2}
        assert after["archive"] == {"delivered": 1}

    async def test_reads_indexes_only(self, old_state: Path) -> None:
        """Every row is counted in an index (the rows in flight excepted), never in the table."""
        await (await Store.open(old_state, sinks=())).close()
        assert _reads(_plan(old_state, _BACKLOG_SQL)) == [
            "SCAN deliveries USING COVERING INDEX deliveries_by_resource",
            "SEARCH deliveries USING COVERING INDEX deliveries_owed (state=?)",
            "SEARCH deliveries USING INDEX deliveries_by_state_time (state=?)",
        ]
