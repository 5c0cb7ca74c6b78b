"""Tests of the state database: the store's contract on both engines (the ``store`` fixture runs
each test on SQLite and on PostgreSQL), and SQLite's file safety, migrations and lock."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.config import StoreConfig
from drgreen_poller.errors import StoreError
from drgreen_poller.events import Resource, event_id, matches
from drgreen_poller.store import MIGRATIONS, DeliveryState, Observation, SinkRoute, StateLock, Store
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.files import check_sqlite

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")
SINKS = [
    SinkRoute("store", ("order.*",)),
    SinkRoute("audit", ("*",)),
    SinkRoute("kyc", ("client.*",)),
]
ROOMS = {route.name: 10 for route in SINKS}  # what a claim may take of each sink


@pytest.fixture
async def store(store_state: Path | StoreConfig) -> AsyncIterator[Store]:
    """The store on each engine (``store_state``)."""
    opened = await Store.open(store_state, sinks=SINKS)
    yield opened
    await opened.close()


def _approved(snapshot_status: str = "VERIFIED") -> Observation:
    return Observation(
        ORDER,
        {"adminApproval": snapshot_status},
        "active_orders",
        obj={"id": ORDER.id},
        changes=[Change("order.approved", {"adminApproval": "PENDING"})],
    )


class TestFile:
    async def test_created_private_with_wal(self, tmp_path: Path) -> None:
        """The database is created 0600, in WAL mode, at the newest schema version."""
        path = tmp_path / "sub" / "state.db"
        opened = await Store.open(path, sinks=())
        await opened.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database from a newer drgreen-poller is refused with a clear message."""
        path = tmp_path / "state.db"
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        with pytest.raises(StoreError, match="newer than this drgreen-poller"):
            await Store.open(path, sinks=())

    async def test_unopenable_path(self, tmp_path: Path) -> None:
        """A path that cannot hold a database gives a StoreError naming it."""
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(StoreError, match=r"dir\.db"):
            await Store.open(tmp_path / "dir.db", sinks=())

    def test_second_lock_refused(self, tmp_path: Path) -> None:
        """A second daemon on the same database is refused while the first holds the lock."""
        path = tmp_path / "state.db"
        with StateLock(path), pytest.raises(StoreError, match="already running"):
            StateLock(path).acquire()
        with StateLock(path):
            pass  # released by the first: free again


class TestOutbox:
    def test_state_column_takes_exactly_the_delivery_states(self, tmp_path: Path) -> None:
        """The ``state`` column's CHECK accepts each DeliveryState and refuses anything else."""
        path = tmp_path / "state.db"
        with closing(sqlite3.connect(path)) as db:
            for migration in MIGRATIONS:
                db.executescript(migration)
            insert = (
                "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
                " next_attempt_at, created_at, updated_at) VALUES (?, 's', ?, 'r', 1, 0, '', '')"
            )
            for n, state in enumerate(DeliveryState):
                db.execute(insert, (f"evt_{n}", state.value))
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(insert, ("evt_x", "retrying"))

    async def test_commit_writes_events_and_matching_deliveries(self, store: Store) -> None:
        """One commit stores the snapshot, the event and one pending row per matching sink."""
        result = await store.commit_poll(
            "main", "active_orders", [_approved()], now=NOW, next_due_at=0
        )
        assert [e["type"] for e in result.events] == ["order.approved"]
        assert result.deliveries == 2
        assert await store.backlog() == {"store": {"pending": 1}, "audit": {"pending": 1}}
        [entity] = await store.entities("main", kind="order")
        assert entity.snapshot == {"adminApproval": "VERIFIED"}
        assert entity.sequence == store.lineage.sequence_floor + 1

    async def test_sequences_rise_and_ids_are_deterministic(self, store: Store) -> None:
        """Each event of a resource takes the next sequence; its id derives from the transition."""
        await store.commit_poll("main", "active_orders", [_approved()], now=NOW, next_due_at=0)
        second = await store.commit_poll(
            "main", "active_orders", [_approved()], now=NOW, next_due_at=0
        )
        event = second.events[0]
        sequence = store.lineage.sequence_floor + 2
        assert event["sequence"] == sequence
        assert event["id"] == event_id("main", ORDER, "order.approved", {}, sequence)
        assert event["resource"] == {"type": "order", "id": ORDER.id}
        assert event["observed_at"] == "2026-11-23T10:00:00.000Z"

    async def test_preview_matches_commit_and_writes_nothing(self, store: Store) -> None:
        """A dry run shows the events a commit would write, with the same ids, writing nothing."""
        previewed = await store.preview("main", [_approved()], now=NOW)
        assert await store.events() == []
        committed = await store.commit_poll(
            "main", "active_orders", [_approved()], now=NOW, next_due_at=0
        )
        assert previewed == committed.events

    async def test_failed_commit_writes_nothing(self, store: Store) -> None:
        """If any part of a commit fails, none of it is written."""
        bad = Observation(ORDER, {"x": {1, 2}}, "active_orders", changes=[Change("order.paid", {})])
        with pytest.raises(TypeError):
            await store.commit_poll(
                "main", "active_orders", [_approved(), bad], now=NOW, next_due_at=0
            )
        assert await store.events() == []
        assert await store.entities("main") == []
        assert await store.backlog() == {}

    async def test_run_state_success_and_failure(self, store: Store) -> None:
        """Failures count up; a success resets them and records the first sync once."""
        assert (
            await store.record_failure("main", "commissions", now=NOW, error="boom", next_due_at=5)
            == 1
        )
        assert (
            await store.record_failure("main", "commissions", now=NOW, error="boom", next_due_at=9)
            == 2
        )
        await store.commit_poll("main", "commissions", [], now=NOW, next_due_at=60)
        [run] = await store.tier_runs("main")
        assert (run.consecutive_failures, run.last_error, run.next_due_at) == (0, None, 60)
        assert run.seeded_at == "2026-11-23T10:00:00.000Z"

    async def test_events_filter(self, store: Store) -> None:
        """The event log filters by glob and time."""
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_poll(
            "main", "active_orders", [_approved(), client], now=NOW, next_due_at=0
        )
        assert [e["type"] for e in await store.events(patterns=["client.*"])] == ["client.created"]
        later = datetime(2026, 11, 24, tzinfo=UTC)
        assert await store.events(since=later) == []

    async def test_unauthorized_flag_moves_with_its_event(self, store: Store) -> None:
        """A holder's unauthorized mark is set and cleared together with its event."""
        holder = Resource("holder", "main")

        def event(kind: str) -> Observation:
            return Observation(holder, {"event": kind}, None, changes=[Change(kind, {})])

        await store.ensure_holders(["main"], NOW)
        await store.commit_holder_event(
            "main", event("poller.holder_unauthorized"), now=NOW, unauthorized_since=NOW
        )
        assert await store.unauthorized_holders() == {"main": "2026-11-23T10:00:00.000Z"}
        await store.commit_holder_event(
            "main", event("poller.holder_recovered"), now=NOW, unauthorized_since=None
        )
        assert await store.unauthorized_holders() == {}
        assert [e["type"] for e in await store.events()] == [
            "poller.holder_unauthorized",
            "poller.holder_recovered",
        ]


class TestSharedConnection:
    async def test_concurrent_writers_take_turns(self, store: Store) -> None:
        """The poller and the delivery worker write through one connection without clashing."""
        import asyncio

        async def poll(number: int) -> None:
            observation = Observation(
                Resource("order", f"o-{number}"), {}, None, changes=[Change("order.created", {})]
            )
            await store.commit_events("main", [observation], now=NOW)

        async def deliver() -> None:
            for _ in range(20):
                await store.settle([], NOW, {"store": 5})

        await asyncio.gather(*(poll(n) for n in range(30)), deliver(), deliver())
        assert len(await store.events(limit=0)) == 30


class TestTrack:
    async def test_track_never_overwrites_a_known_entity(self, store: Store) -> None:
        """Tracking an entity a poll already stored only moves its tier; its snapshot stays."""
        await store.commit_poll("main", "stale_orders", [_approved()], now=NOW, next_due_at=0)
        assert await store.track("main", ORDER, "active_orders", NOW)
        [entity] = await store.entities("main")
        assert (entity.tier, entity.snapshot, entity.sequence) == (
            "active_orders",
            {"adminApproval": "VERIFIED"},
            store.lineage.sequence_floor + 1,
        )

    async def test_track_unknown_stores_the_mark(self, store: Store) -> None:
        """An entity no poll has seen is stored with only the tracked mark."""
        assert not await store.track("main", Resource("client", "c-1"), "pending_kyc", NOW)
        [entity] = await store.entities("main", tier="pending_kyc")
        assert entity.snapshot == {"_tracked": True}


class TestCancellation:
    async def test_cancelled_commit_leaves_no_open_transaction(self, store: Store) -> None:
        """A commit cancelled mid-way (a stop) is rolled back whole; the next one works."""
        import asyncio

        many = [
            Observation(
                Resource("order", f"o-{n}"), {}, None, changes=[Change("order.created", {})]
            )
            for n in range(400)
        ]
        for delay in (0.0, 0.001, 0.003, 0.01):
            task = asyncio.create_task(store.commit_events("main", many, now=NOW))
            await asyncio.wait([task], timeout=delay)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            count = len(await store.events(limit=0))
            assert count % 400 == 0  # all or nothing
        await store.commit_events("main", [_approved()], now=NOW)
        assert (await store.events(limit=0))[-1]["type"] == "order.approved"


class TestPrune:
    async def test_old_delivered_rows_and_events_go(self, store: Store) -> None:
        """Delivered rows and their events older than the cutoff are pruned; failed ones stay."""
        from datetime import timedelta

        from drgreen_poller.store import AttemptRecord

        old, later = NOW, NOW + timedelta(days=40)
        await store.commit_poll("main", "active_orders", [_approved()], now=old, next_due_at=0)
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_events("main", [client], now=old)
        rows = (await store.settle([], old, ROOMS)).claimed
        done = [
            AttemptRecord(
                delivery_id=row.id,
                attempt=1,
                started_at=old,
                duration_ms=1.0,
                ok=row.sink != "kyc",
                status=204,
                error_class=None,
                excerpt=None,
                state=DeliveryState.DELIVERED if row.sink != "kyc" else DeliveryState.FAILED,
            )
            for row in rows
        ]
        await store.settle(done, old, {})
        assert await store.prune(later - timedelta(days=30)) == (3, 1)
        assert [e["type"] for e in await store.events(limit=0)] == ["client.created"]
        assert [(r.sink, r.state) for r in await store.deliveries()] == [("kyc", "failed")]


class TestAtomically:
    """``_atomically``: a whole transaction as one call into the engine's thread (SQLite: the
    one use of aiosqlite's private ``_execute``)."""

    async def test_commits_what_the_work_wrote(self, store: Store) -> None:
        """The work runs in one transaction on the real connection and is committed."""

        def work(conn: Db) -> int:
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'now')")
            return int(conn.execute("SELECT COUNT(*) FROM holders").fetchone()[0])

        assert await store._atomically(work) == 1
        assert [row[0] for row in await store._rows("SELECT name FROM holders")] == ["h"]
        await store.ensure_holders(["next"], NOW)  # no transaction was left open

    async def test_rolls_back_whole_on_an_error(self, store: Store) -> None:
        """A failing statement rolls the whole transaction back and becomes a ``StoreError``."""

        def work(conn: Db) -> None:
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'now')")
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('h', 'again')")

        with pytest.raises(StoreError, match=r"(?i)unique"):
            await store._atomically(work)
        assert await store._rows("SELECT name FROM holders") == []
        await store.ensure_holders(["next"], NOW)  # no transaction was left open

    async def test_a_cancelled_caller_does_not_cut_it(self, store: Store) -> None:
        """Cancelling the caller leaves no open transaction; the next write works."""
        import asyncio

        many = [(f"h-{n}", "now") for n in range(2000)]

        def work(conn: Db) -> None:
            conn.executemany("INSERT INTO holders (name, added_at) VALUES (?, ?)", many)

        task = asyncio.create_task(store._atomically(work))
        await asyncio.wait([task], timeout=0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.ensure_holders(["late"], NOW)
        count = (await store._rows("SELECT COUNT(*) FROM holders"))[0][0]
        assert count in (1, 2001)  # all of the work or none of it, and the later write


class TestUnrouted:
    async def test_pending_rows_of_removed_sinks(self, store: Store) -> None:
        """The pending rows of sinks no longer configured are found (with their event and
        attempts), whatever the names sort between; those of configured sinks, and rows no
        longer pending, are not; ``limit`` bounds how many."""
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_events("main", [_approved(), client], now=NOW)
        [kyc] = (await store.settle([], NOW, {"kyc": 1})).claimed  # in flight: not pending
        found = await store.unrouted(["kyc"], 100)
        assert sorted((sink, attempts) for _id, sink, _event, attempts in found) == [
            ("audit", 0), ("audit", 0), ("store", 0),
        ]  # fmt: skip
        assert [sink for _id, sink, _e, _a in await store.unrouted(["audit"], 100)] == ["store"]
        assert len(await store.unrouted([], 2)) == 2
        assert await store.unrouted(["store", "audit"], 100) == []
        assert kyc.sink == "kyc"


class TestBatchedClaims:
    async def test_claimed_body_is_the_stored_text_exactly(self, store: Store) -> None:
        """A claim hands over each event's stored text byte for byte (escapes, non-ASCII,
        control and line-separator characters included), in due order."""
        tricky = 'é ü 漢 🌿 "q" \\ \u2028 \x01 \t </script>'
        observation = Observation(
            ORDER, {}, None, obj={"id": ORDER.id, "note": tricky},
            changes=[Change("order.approved", {}), Change("order.paid", {})],
        )  # fmt: skip
        await store.commit_events("main", [observation], now=NOW)
        claimed = (await store.settle([], NOW, ROOMS)).claimed
        stored = {
            row["id"]: row["body"] for row in await store._rows("SELECT id, body FROM events")
        }
        assert [(row.sink, row.event_type) for row in claimed] == [
            ("store", "order.approved"), ("audit", "order.approved"),
        ]  # fmt: skip
        assert all(row.body == stored[row.event_id] for row in claimed)
        assert json.loads(claimed[0].body)["data"]["object"]["note"] == tricky

    async def test_settle_records_then_claims_the_next_in_one_go(self, store: Store) -> None:
        """Recording an event's attempt and claiming in one turn hands over the resource's
        next event at once, and moves the recorded row on."""
        from drgreen_poller.store import AttemptRecord

        observation = Observation(
            ORDER, {}, None, changes=[Change("order.approved", {}), Change("order.paid", {})]
        )
        await store.commit_events("main", [observation], now=NOW)
        first = [row for row in (await store.settle([], NOW, ROOMS)).claimed if row.sink == "store"]
        done = [
            AttemptRecord(row.id, 1, NOW, 1.0, True, 204, None, None, DeliveryState.DELIVERED)
            for row in first
        ]
        settled = await store.settle(done, NOW, ROOMS)
        assert [(row.sink, row.event_type) for row in settled.claimed] == [("store", "order.paid")]
        # audit's copy of order.paid is due, held back behind audit's order.approved: whose end
        # wakes the loop, so no later time is given
        assert settled.next_attempt_at is None
        [attempt] = await store.attempts(first[0].id)
        assert (attempt["ok"], attempt["status"], attempt["attempt"]) == (1, 204, 1)


class TestReadFailures:
    async def test_a_refused_read_is_a_store_error(
        self, store: Store, store_state: Path | StoreConfig
    ) -> None:
        """A tier run's read that the engine refuses (the table is gone) raises StoreError."""
        other = await Store.open(store_state, sinks=())

        def drop(conn: Db) -> None:
            conn.execute("DROP TABLE entities")

        await other._atomically(drop)
        await other.close()
        with pytest.raises(StoreError, match="reading the state database failed"):
            await store.entities("main", kind="order")


class TestSqliteLibrary:
    @pytest.mark.parametrize(
        ("version", "has_json", "refusal"),
        [
            ((3, 40, 1), True, None),
            ((3, 35, 0), True, None),
            ((3, 34, 1), True, "SQLite library is 3.34.1; drgreen-poller needs 3.35.0 or newer"),
            ((3, 40, 1), False, "built without the JSON functions"),
        ],
    )
    def test_an_old_or_json_less_library_is_refused_in_one_line(
        self, version: tuple[int, int, int], has_json: bool, refusal: str | None
    ) -> None:
        """A Python whose SQLite cannot run the claim is told so at open, not at the first claim."""
        if refusal is None:
            check_sqlite(version, has_json)
            return
        with pytest.raises(StoreError, match=refusal) as refused:
            check_sqlite(version, has_json)
        assert "\n" not in str(refused.value)


TYPES = [
    "order.created", "order.approved", "order.paid", "client.kyc.verified",
    "client.kyc.completed", "commission.accrued", "strain.updated",
]  # fmt: skip


class TestEventLog:
    @pytest.mark.parametrize(
        "patterns",
        [["*"], ["order.*"], ["client.kyc.*", "strain.*"], ["order.?aid"], ["order.[ac]*"], []],
    )
    async def test_the_query_selects_what_sinks_route(
        self, store: Store, patterns: list[str]
    ) -> None:
        """``events list`` and replay select in SQL exactly the types a sink's globs route."""
        changes = [Change(kind, {}) for kind in TYPES]
        await store.commit_events("main", [Observation(ORDER, {}, None, changes=changes)], now=NOW)
        listed = [e["type"] for e in await store.events(patterns=patterns, limit=0)]
        assert listed == [kind for kind in TYPES if matches(kind, patterns)]
        assert await store.replay("audit", patterns, NOW, NOW) == len(listed)

    async def test_the_newest_limit_oldest_first(self, store: Store) -> None:
        """A limit keeps the newest events, still listed oldest first; ``since`` cuts earlier."""
        for minute, kind in enumerate(TYPES):
            resource = Resource("order", f"o-{minute}")
            observation = Observation(resource, {}, None, changes=[Change(kind, {})])
            await store.commit_events("main", [observation], now=NOW + timedelta(minutes=minute))
        newest = await store.events(limit=3)
        assert [e["type"] for e in newest] == TYPES[-3:]
        since = await store.events(since=NOW + timedelta(minutes=5), limit=0)
        assert [e["type"] for e in since] == TYPES[5:]
