"""Tests of deliveries across instances on one real PostgreSQL database (tests/pg.py): claims
that skip rows another instance has locked, per-resource order kept between instances, a gone
instance's rows in flight returned, and the NOTIFY that wakes a listening worker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import StoreConfig
from drgreen_poller.events import Resource
from drgreen_poller.store import (
    AttemptRecord,
    DeliveryState,
    DueDelivery,
    Observation,
    SinkRoute,
    Store,
)
from drgreen_poller.store.leases import Instance
from drgreen_poller.store.listening import RETRY_S, listen_for_deliveries
from tests.conftest import PgDatabase, pg_store_config
from tests.waiting import eventually

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)
TTL_S = 30.0
ROOM = {"all": 5}

Opener = Callable[[str], Awaitable[Store]]


def _order(n: int) -> Resource:
    return Resource("order", f"00000000-0000-4000-8000-{n:012d}")


def _lifecycle(n: int, steps: int) -> Observation:
    changes = [Change(f"order.step{k}", {}) for k in range(steps)]
    return Observation(_order(n), {}, None, changes=changes)


@pytest.fixture
async def instance_store(pg_database: PgDatabase) -> AsyncIterator[Opener]:
    """Stores on one database, each an instance of the given id (registered, heartbeat now)."""
    opened: list[Store] = []

    async def opener(name: str) -> Store:
        store = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        store.instance, store.instance_ttl_s = name, TTL_S
        await store.register_instance(Instance(name, "host", 1))
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


def _delivered(rows: list[DueDelivery]) -> list[AttemptRecord]:
    return [
        AttemptRecord(row.id, 1, LATER, 1.0, True, 200, None, None, DeliveryState.DELIVERED)
        for row in rows
    ]


def _age(database: PgDatabase, instance: str) -> None:
    """``instance`` fell silent an hour ago (its heartbeat, as a dead process leaves it)."""
    with database.server.connect(database.name) as conn:
        conn.execute(
            "UPDATE instances SET heartbeat_at = heartbeat_at - interval '1 hour' WHERE id = %s",
            (instance,),
        )


class TestSkipLocked:
    async def test_a_row_another_claim_locked_is_skipped(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """While another instance's claim holds a resource's first row, a claim neither waits
        for it nor takes it, nor the resource's later row; other resources go out."""
        store = await instance_store("b")
        await store.commit_events("main", [_lifecycle(1, 2), _lifecycle(2, 1)], now=NOW)
        with pg_database.server.connect(pg_database.name) as other:
            other.execute("BEGIN")
            first = other.execute(
                "SELECT id FROM deliveries ORDER BY sequence LIMIT 1 FOR UPDATE"
            ).fetchone()
            assert first is not None
            claimed = (await store.settle([], LATER, ROOM)).claimed
            assert [row.event_id for row in claimed] == [await _event_of(store, _order(2))]
            other.execute("ROLLBACK")
        again = (await store.settle(_delivered(claimed), LATER, ROOM)).claimed
        assert [row.id for row in again] == [first[0]]

    async def test_two_instances_never_claim_one_row(self, instance_store: Opener) -> None:
        """Two instances claiming and recording at once: every row is claimed exactly once,
        and each resource's events in sequence order, whichever instance has them."""
        a, b = await instance_store("a"), await instance_store("b")
        await a.commit_events("main", [_lifecycle(n, 3) for n in range(12)], now=NOW)
        order: list[DueDelivery] = []

        async def work(store: Store) -> None:
            claimed: list[DueDelivery] = []
            for _ in range(200):
                claimed = (await store.settle(_delivered(claimed), LATER, ROOM)).claimed
                order.extend(claimed)
                if not claimed and not await store.deliveries(state="pending", limit=1):
                    return

        await asyncio.wait_for(asyncio.gather(work(a), work(b)), 8)
        assert len(order) == 36
        assert len({row.id for row in order}) == 36
        sequences = await _sequences(a)
        for n in range(12):
            mine = [
                sequences[row.id]
                for row in order
                if sequences[row.id][0] == f"main/{_order(n).key}"
            ]
            assert mine == sorted(mine)


async def _event_of(store: Store, resource: Resource) -> str:
    [event] = [e for e in await store.events() if e["resource"]["id"] == resource.id]
    return str(event["id"])


async def _sequences(store: Store) -> dict[int, tuple[str, int]]:
    rows = await store._fetch("SELECT id, resource_key, sequence FROM deliveries")
    return {int(r[0]): (r[1], int(r[2])) for r in rows}


class TestGoneInstances:
    async def test_a_gone_instances_rows_in_flight_are_returned(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """Rows a silent instance claimed go back to pending at another's lease round, and are
        claimed again under the same event ids; its registry entry goes."""
        dead, live = await instance_store("dead"), await instance_store("live")
        await dead.commit_events("main", [_lifecycle(1, 1), _lifecycle(2, 1)], now=NOW)
        claimed = (await dead.settle([], LATER, ROOM)).claimed
        assert len(claimed) == 2
        assert (await live.settle([], LATER, ROOM)).claimed == []
        _age(pg_database, "dead")
        done = await live.share_holders(Instance("live", "host", 1), ["main"], TTL_S, LATER)
        assert done.reclaimed == 2
        again = (await live.settle([], LATER, ROOM)).claimed
        assert sorted(r.event_id for r in again) == sorted(r.event_id for r in claimed)
        assert [row.id for row in await live.instances(TTL_S)] == ["live"]

    async def test_a_restart_resets_only_the_rows_of_gone_instances(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """At start, rows in flight on a live instance stay with it; a gone one's return."""
        busy, starting = await instance_store("busy"), await instance_store("starting")
        await busy.commit_events("main", [_lifecycle(1, 1)], now=NOW)
        assert len((await busy.settle([], LATER, ROOM)).claimed) == 1
        assert await starting.reset_delivering(LATER) == 0
        _age(pg_database, "busy")
        assert await starting.reset_delivering(LATER) == 1


class TestWaking:
    async def test_new_deliveries_wake_a_listening_instance(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """A commit that writes deliveries notifies: another instance's listener wakes its
        worker as the commit lands."""
        store = await instance_store("a")
        woken = asyncio.Event()
        listening = asyncio.create_task(
            listen_for_deliveries(pg_store_config(pg_database), woken.set, SystemClock())
        )
        try:
            await asyncio.wait_for(woken.wait(), 5)  # its first wake: it listens now
            woken.clear()
            await store.commit_events("main", [_lifecycle(1, 1)], now=NOW)
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            listening.cancel()
            await asyncio.wait({listening})

    async def test_a_lost_listen_connection_is_one_line_and_retried(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A listener that cannot reach the database says so in one warning line, waits, and
        tries again (the worker's own checks go on meanwhile)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        unreachable = StoreConfig(f"postgresql://postgres@127.0.0.1:{port}/db")
        clock = FakeClock()
        said: list[str] = []

        def warned() -> bool:
            said.append(capsys.readouterr().out)
            return "".join(said).count("deliveries_listen_failed") >= 2

        listening = asyncio.create_task(listen_for_deliveries(unreachable, lambda: None, clock))
        try:
            await eventually(
                lambda: warned() or "deliveries_listen_failed" in "".join(said),
                what="the first warning", task=listening,
            )  # fmt: skip
            clock.advance(RETRY_S)
            await eventually(warned, what="a second attempt", task=listening)
        finally:
            listening.cancel()
            await asyncio.wait({listening})
        assert "Traceback" not in "".join(said)


def _retry(rows: list[DueDelivery]) -> list[AttemptRecord]:
    """A failed first attempt of each row, to be tried again later."""
    later = LATER.timestamp() + 60
    return [
        AttemptRecord(row.id, 1, LATER, 1.0, False, 503, None, None, DeliveryState.PENDING, later)
        for row in rows
    ]


async def _claimed_again(
    instance_store: Opener, pg_database: PgDatabase, steps: int
) -> tuple[Store, Store, list[DueDelivery], list[DueDelivery]]:
    """Instance "paused" claims the first of an order's ``steps`` events, then its heartbeat
    ages past the TTL and instance "live" takes the holder and claims the row again: both
    stores, and what each claimed."""
    paused, live = await instance_store("paused"), await instance_store("live")
    await paused.commit_events("main", [_lifecycle(1, steps)], now=NOW)
    claimed = (await paused.settle([], LATER, ROOM)).claimed
    _age(pg_database, "paused")
    await live.share_holders(Instance("live", "host", 1), ["main"], TTL_S, LATER)
    again = (await live.settle([], LATER, ROOM)).claimed
    return paused, live, claimed, again


class TestLateRecords:
    async def test_a_resumed_instances_record_does_not_undo_anothers_delivery(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """An instance paused past its heartbeat records its attempt of a row another instance
        has since delivered: the record is dropped, the row stays delivered, nothing fails."""
        paused, live, claimed, again = await _claimed_again(instance_store, pg_database, 1)
        assert [row.id for row in again] == [row.id for row in claimed]
        await live.settle(_delivered(again), LATER, ROOM)
        await paused.settle(_retry(claimed), LATER, ROOM)
        [row] = await live.deliveries()
        assert (row.state, row.attempts) == ("delivered", 1)

    async def test_a_resumed_instances_record_leaves_anothers_attempt_in_flight(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """A paused instance's late record of a row another instance now has in flight changes
        nothing: that instance records its own attempt as it ends."""
        paused, live, claimed, again = await _claimed_again(instance_store, pg_database, 2)
        await paused.settle(_retry(claimed), LATER, ROOM)
        assert [row.id for row in await live.deliveries(state="delivering")] == [
            row.id for row in again
        ]
        after = (await live.settle(_delivered(again), LATER, ROOM)).claimed
        assert len(after) == 1  # the resource's next event follows the one just delivered
        delivered = await live.deliveries(state="delivered")
        assert [(row.id, row.attempts) for row in delivered] == [(again[0].id, 1)]

    async def test_a_resumed_instances_release_leaves_anothers_claim(
        self, instance_store: Opener, pg_database: PgDatabase
    ) -> None:
        """A paused instance that stops on resuming hands back only its own claims: a row
        another instance has claimed since stays in flight there, claimable by no third."""
        paused, live, claimed, again = await _claimed_again(instance_store, pg_database, 1)
        await paused.release([row.id for row in claimed], LATER)
        third = await instance_store("third")
        assert (await third.settle([], LATER, ROOM)).claimed == []
        assert [row.id for row in await live.deliveries(state="delivering")] == [
            row.id for row in again
        ]
