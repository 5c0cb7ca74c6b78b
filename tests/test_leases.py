"""Tests of the instance registry, the holders' leases and the fence, on a real PostgreSQL
(tests/pg.py): several stores on one database stand for several daemons."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.errors import LeaseLost, StateLocked, StoreError
from drgreen_poller.events import Resource
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.leases import Fence, Instance, fair_share
from drgreen_poller.store.locking import state_lock
from tests.conftest import PgDatabase, pg_store_config
from tests.test_store_config import URL, _config, _load, _problems
from tests.waiting import eventually

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")
HOLDERS = ("alpha", "beta", "gamma")
TTL_S = 30.0
GONE_S = 0.0  # a lease taken with no time to live has expired by the next statement

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture
async def open_store(pg_database: PgDatabase) -> AsyncIterator[Opener]:
    """Stores on one database (one per "instance"), closed at the end."""
    opened: list[Store] = []

    async def opener() -> Store:
        store = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


def _instance(name: str) -> Instance:
    return Instance(f"host-{name}", "host", 1)


class TestFairShare:
    def test_share_rounds_up(self) -> None:
        """Three holders on two live instances: each aims at two (ceil)."""
        assert fair_share(3, 2) == 2
        assert fair_share(3, 3) == 1
        assert fair_share(3, 0) == 3


class TestLeases:
    async def test_a_lone_instance_takes_every_holder(self, open_store: Opener) -> None:
        """Alone, an instance takes every free lease, each with its first token."""
        store = await open_store()
        taken = await store.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert taken.held == dict.fromkeys(HOLDERS, 1)
        assert taken.taken_over == ()
        assert taken.live == 1

    async def test_renewing_keeps_the_token(self, open_store: Opener) -> None:
        """A second round renews the instance's leases under the same tokens."""
        store = await open_store()
        await store.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        again = await store.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert again.held == dict.fromkeys(HOLDERS, 1)

    async def test_a_live_lease_is_not_taken(self, open_store: Opener) -> None:
        """A second instance takes nothing while the first holds every lease unexpired; the
        first's round names what is beyond its share, keeping it until the first hands it back
        (once it stopped polling it), and the second then takes it."""
        first, second = await open_store(), await open_store()
        await first.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert (await second.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)).held == {}
        handed = await first.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert handed.live == 2
        assert handed.released == ("gamma",)
        assert sorted(handed.held) == ["alpha", "beta"]
        # Still the first's, renewed, until it has stopped polling it and hands it back.
        assert (await second.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)).held == {}
        await first.release_leases(_instance("a").id, handed.released)
        taken = await second.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)
        assert taken.held == {"gamma": 2}  # taken anew: the token moved on

    async def test_an_expired_lease_is_taken_over_with_a_new_token(
        self, open_store: Opener
    ) -> None:
        """A lease not renewed within its time to live goes to another instance, its token
        incremented, and counts as a takeover."""
        first, second = await open_store(), await open_store()
        await first.share_holders(_instance("a"), HOLDERS, GONE_S, NOW)
        taken = await second.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)
        assert taken.held == dict.fromkeys(HOLDERS, 2)
        assert taken.taken_over == HOLDERS
        rows = await second.instances(TTL_S)
        assert {row.id: row.holders for row in rows}["host-b"] == HOLDERS

    async def test_a_stopped_instance_frees_its_leases(self, open_store: Opener) -> None:
        """A deregistered instance leaves the registry and its leases are free at once."""
        first, second = await open_store(), await open_store()
        await first.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        await first.deregister("host-a")
        taken = await second.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)
        assert sorted(taken.held) == sorted(HOLDERS)
        assert taken.taken_over == ()  # handed over, not taken from a dead one
        assert [row.id for row in await second.instances(TTL_S)] == ["host-b"]


class TestNextExpiry:
    async def test_a_round_tells_when_anothers_lease_expires(self, open_store: Opener) -> None:
        """A round that leaves another instance's lease in place reports, by the database's
        clock, the seconds until that lease expires: the moment a takeover can happen."""
        dead, live = await open_store(), await open_store()
        await dead.share_holders(_instance("dead"), HOLDERS, 3.0, NOW)
        done = await live.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert done.held == {}
        assert done.next_expiry_s is not None
        assert 0 < done.next_expiry_s <= 3.0

    async def test_an_expired_lease_not_taken_is_not_waited_for(self, open_store: Opener) -> None:
        """A lease already expired that this instance leaves (it is at its share) is no
        expiry to come: only the other instance's heartbeat, a time to live away, is."""
        paused, live = await open_store(), await open_store()
        await paused.share_holders(_instance("paused"), ["alpha", "beta"], GONE_S, NOW)
        await paused.register_instance(_instance("paused"))  # alive, its leases run out
        done = await live.share_holders(_instance("a"), ["alpha", "beta"], TTL_S, NOW)
        assert len(done.held) == 1  # its share of two holders between two live instances
        assert done.next_expiry_s is not None
        assert done.next_expiry_s > TTL_S * 2 / 3

    async def test_an_expiry_during_a_slow_round_is_not_skipped(
        self, open_store: Opener, pg_database: PgDatabase
    ) -> None:
        """An instance's heartbeat that expires while a slow round is under way, after the
        round's reclaim, is an expiry to come back for at once: its deliveries are reclaimed at
        the next round, not a third of the time to live later."""
        dead, live = await open_store(), await open_store()
        await dead.share_holders(_instance("dead"), ["beta"], TTL_S, NOW)
        assert "alpha" in (await live.share_holders(_instance("a"), HOLDERS, 1.0, NOW)).held
        with (
            pg_database.server.connect(pg_database.name) as slow,
            pg_database.server.connect(pg_database.name) as watch,
        ):
            slow.execute("BEGIN")
            slow.execute("SELECT 1 FROM leases WHERE holder = 'alpha' FOR SHARE")
            sharing = asyncio.create_task(live.share_holders(_instance("a"), HOLDERS, 1.0, NOW))

            def waiting(sql: str) -> bool:
                return bool(watch.execute(sql).fetchone()[0])  # type: ignore[index]  # one row: a count, a comparison

            blocked = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            await eventually(
                lambda: waiting(blocked), what="the round held up after its reclaim", task=sharing
            )
            expired = (
                "SELECT heartbeat_at < clock_timestamp() - interval '1 s'"
                " FROM instances WHERE id = 'host-dead'"
            )
            await eventually(
                lambda: waiting(expired), what="the dead instance's heartbeat expired", task=sharing
            )
            slow.execute("COMMIT")
            done = await sharing
        assert done.reclaimed == 0  # the reclaim ran before the expiry
        assert done.next_expiry_s is not None
        assert done.next_expiry_s < 1.0

    async def test_alone_nothing_expires(self, open_store: Opener) -> None:
        """An instance's own leases and heartbeat are no expiry it waits for."""
        store = await open_store()
        done = await store.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        assert done.next_expiry_s is None


class TestFence:
    async def test_a_commit_under_the_lease_is_written(self, open_store: Opener) -> None:
        """With its lease, an instance's commit goes through."""
        store = await open_store()
        held = await store.share_holders(_instance("a"), HOLDERS, TTL_S, NOW)
        store.fence = Fence("host-a", dict(held.held))
        change = Observation(ORDER, {}, None, changes=[Change("order.approved", {})])
        result = await store.commit_events("alpha", [change], now=NOW)
        assert len(result.events) == 1

    async def test_a_paused_instance_commits_nothing(self, open_store: Opener) -> None:
        """After its lease moved to another instance, a commit is refused whole: no event, no
        outbox row, no run state."""
        paused, other = await open_store(), await open_store()
        held = await paused.share_holders(_instance("a"), HOLDERS, GONE_S, NOW)
        paused.fence = Fence("host-a", dict(held.held))
        await other.share_holders(_instance("b"), HOLDERS, TTL_S, NOW)
        change = Observation(ORDER, {}, None, changes=[Change("order.approved", {})])
        with pytest.raises(LeaseLost, match="alpha"):
            await paused.commit_poll("alpha", "active_orders", [change], now=NOW, next_due_at=0)
        with pytest.raises(LeaseLost):
            await paused.record_failure("alpha", "active_orders", now=NOW, error="x", next_due_at=0)
        with pytest.raises(LeaseLost):
            await paused.postpone("alpha", 0)
        assert await other.events() == []
        assert await other.deliveries() == []
        assert await other.tier_runs("alpha") == []

    @pytest.mark.timeout(20)
    async def test_an_instance_stalled_inside_a_commit_keeps_no_lease(
        self, pg_database: PgDatabase
    ) -> None:
        """An instance stalled inside a fenced transaction (paused, cut off) keeps its lease's
        row locked no longer than a part of the lease's time to live: the server ends its
        session, another instance takes the holder over, and the stalled write is never
        committed."""
        config = dataclasses.replace(pg_store_config(pg_database), lease_ttl_s=1.5)
        routes = [SinkRoute("all", ("*",))]
        stalled, other = (
            await Store.open(config, sinks=routes),
            await Store.open(config, sinks=routes),
        )
        held = await stalled.share_holders(_instance("a"), ["alpha"], 1.5, NOW)
        stalled.fence = Fence("host-a", dict(held.held))
        resume = threading.Event()

        def work(conn: Db) -> None:
            conn.execute("INSERT INTO holders (name, added_at) VALUES ('stalled', 'x')")
            resume.wait(15)  # the process stops here, its lease's row locked by the fence
            conn.execute("SELECT 1")

        writing = asyncio.create_task(stalled._atomically(work, holder="alpha"))

        async def taken() -> bool:
            done = await other.share_holders(_instance("b"), ["alpha"], 1.5, NOW)
            return "alpha" in done.held

        try:
            await eventually(taken, timeout_s=12, step_s=0.2, what="a takeover", task=writing)
        finally:
            resume.set()
            with pytest.raises(StoreError):
                await writing
            await stalled.close()
        assert "stalled" not in {r["name"] for r in await other._rows("SELECT name FROM holders")}
        await other.close()

    async def test_an_expired_lease_alone_refuses_too(self, open_store: Opener) -> None:
        """A lease past its time to live fences its commits even before anyone takes it."""
        store = await open_store()
        held = await store.share_holders(_instance("a"), HOLDERS, GONE_S, NOW)
        store.fence = Fence("host-a", dict(held.held))
        with pytest.raises(LeaseLost):
            await store.postpone("beta", 0)

    async def test_a_holder_never_leased_is_refused(self, open_store: Opener) -> None:
        """A holder this instance never took a lease of is refused without a query."""
        store = await open_store()
        store.fence = Fence("host-a", {})
        with pytest.raises(LeaseLost, match="gamma"):
            await store.postpone("gamma", 0)


class TestLeaseTtlConfig:
    def test_default_and_given(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """``[store] lease_ttl`` defaults to 30 s and takes a duration."""
        config = _load(_config(tmp_path, credentials, f'[store]\nurl = "{URL}"'))
        assert config.store is not None
        assert config.store.lease_ttl_s == 30.0
        given = _config(tmp_path, credentials, f'[store]\nurl = "{URL}"\nlease_ttl = "3s"')
        store = _load(given).store
        assert store is not None
        assert store.lease_ttl_s == 3.0
        assert "lease_ttl_s=3.0" in repr(store)

    def test_a_bad_ttl_is_one_line(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A lease_ttl that is no positive duration names the key."""
        bad = _config(tmp_path, credentials, f'[store]\nurl = "{URL}"\nlease_ttl = "soon"')
        assert [p for p in _problems(bad) if "lease_ttl" in p]


class TestSharedLock:
    def test_daemons_share_and_poll_once_is_refused(self, pg_database: PgDatabase) -> None:
        """Daemons take the database's lock shared, so several run at once; poll-once's
        exclusive lock is refused while any of them runs, and a daemon while poll-once runs."""
        state = pg_store_config(pg_database)
        first, second = state_lock(state, shared=True), state_lock(state, shared=True)
        with first, second, pytest.raises(StateLocked, match="already running"):
            state_lock(state).acquire()
        with state_lock(state), pytest.raises(StateLocked, match="poll-once is running"):
            state_lock(state, shared=True).acquire()
