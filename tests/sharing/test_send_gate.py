"""Tests of the delivery worker's gate where instances share a PostgreSQL database, in process on
a fake clock: it sends no row it claimed before its instance's heartbeat could have lapsed, and
hands such rows back. Real ``run`` processes are tests/test_ha.py and tests/reliability/."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.events import Resource
from drgreen_poller.service import Service
from drgreen_poller.sharing import HolderSharing
from drgreen_poller.store import (
    AttemptRecord,
    DeliveryState,
    DueDelivery,
    Observation,
    Settled,
    SinkRoute,
    Store,
)
from drgreen_poller.store.leases import Instance
from tests.conftest import PgDatabase, pg_store_config
from tests.fakes import GatedSink
from tests.sharing.values import NOW
from tests.waiting import eventually, until_sleeping


def _order(n: int) -> Observation:
    resource = Resource("order", f"00000000-0000-4000-8000-{n:012d}")
    return Observation(resource, {}, None, changes=[Change("order.approved", {})])


async def _two_owed(service: Service, sharing: HolderSharing) -> GatedSink:
    """The lease taken, two events of two orders owed to sink ``all``, which holds each attempt
    until released, and the worker down to one slot."""
    await sharing.round()
    store, worker = service.runtime.store, service.worker
    store.sinks = (SinkRoute("all", ("*",)),)
    await store.commit_events("shop", [_order(1), _order(2)], now=NOW)
    sink = GatedSink("all")
    worker.sinks = {"all": sink}
    worker.config = replace(worker.config, concurrency=1)
    return sink


async def _two_claimed(
    service: Service, sharing: HolderSharing
) -> tuple[GatedSink, asyncio.Task[int]]:
    """Two events of two orders claimed by this instance's worker (one slot): the first being
    sent (held in the sink until released), the second queued behind it."""
    sink = await _two_owed(service, sharing)
    sending = asyncio.create_task(service.worker.run_once())
    await eventually(lambda: sink.waiting == 1, what="the first attempt under way", task=sending)
    return sink, sending


def _fall_silent(database: PgDatabase, instance: str) -> None:
    """``instance``'s heartbeat, as the others see it after a pause past the time to live."""
    with database.server.connect(database.name) as conn:
        conn.execute(
            "UPDATE instances SET heartbeat_at = heartbeat_at - interval '1 hour' WHERE id = %s",
            (instance,),
        )


def _delivered(rows: list[DueDelivery]) -> list[AttemptRecord]:
    return [
        AttemptRecord(row.id, 1, NOW, 1.0, True, 204, None, None, DeliveryState.DELIVERED)
        for row in rows
    ]


class TestSendGate:
    async def test_a_paused_instance_sends_no_row_another_took_meanwhile(
        self,
        shared_service: tuple[Service, HolderSharing, FakeClock],
        pg_database: PgDatabase,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An instance paused past its heartbeat, whose queued row another instance reclaimed
        and delivered meanwhile, does not send that row on resuming, even once its next round
        has renewed the heartbeat: the claim was made before the lapse. The other instance's
        record stands."""
        service, sharing, clock = shared_service
        sink, sending = await _two_claimed(service, sharing)
        me = sharing.instance.id
        clock.advance(2.0)  # SIGSTOP past the time to live ...
        _fall_silent(pg_database, me)
        other = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        try:
            other.instance, other.instance_ttl_s = "other", 2.0
            done = await other.share_holders(Instance("other", "host", 1), ["shop"], 2.0, NOW)
            assert done.reclaimed == 2
            taken = (await other.settle([], NOW, {"all": 5})).claimed
            await other.settle(_delivered(taken), NOW, {})
            await sharing.round()  # ... SIGCONT: the lease round comes first
            sink.release()
            sink.release()  # (a second attempt would not wait)
            await sending
            assert len(sink.started) == 1  # the attempt already under way at the pause
            rows = await other.deliveries()
            assert [(row.state, row.attempts) for row in rows] == [("delivered", 1)] * 2
        finally:
            await other.close()
        assert "deliveries_handed_back" in capsys.readouterr().out

    async def test_the_running_worker_starts_no_queued_row_once_the_gate_closed(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """In the running loop, the row an ending attempt would start next is not sent once
        the gate has closed: it goes back to pending at once, and out after the next round."""
        service, sharing, clock = shared_service
        store, worker = service.runtime.store, service.worker
        sink = await _two_owed(service, sharing)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop, 1.0))
        await eventually(lambda: sink.waiting == 1, what="the first attempt", task=running)
        clock.advance(2.0)  # the process stopped while the attempt was under way
        sink.gated = False
        sink.release()

        async def handed_back() -> bool:
            return sorted(row.state for row in await store.deliveries()) == [
                "delivered", "pending",
            ]  # fmt: skip

        await eventually(handed_back, what="the queued row pending again", task=running)
        assert len(sink.started) == 1
        await sharing.round()
        await eventually(lambda: len(sink.started) == 2, what="the row sent", task=running)
        stop.set()
        await running

    async def test_a_closed_gate_hands_queued_rows_back_until_a_round(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """Past the sure part of the lease, a queued row is not sent: it goes back to pending,
        nothing is claimed while the gate stays closed, and the row goes out after the next
        round has renewed the heartbeat."""
        service, sharing, clock = shared_service
        sink, sending = await _two_claimed(service, sharing)
        store, worker = service.runtime.store, service.worker
        clock.advance(2.0)
        sink.release()
        sink.release()
        await sending
        assert len(sink.started) == 1
        states = sorted(row.state for row in await store.deliveries())
        assert states == ["delivered", "pending"]
        sink.gated = False
        assert await worker.run_once() == 0  # no claim while the gate is closed
        await sharing.round()
        assert await worker.run_once() == 1
        assert len(sink.started) == 2
        assert len(set(sink.started)) == 2

    async def test_a_claim_the_gate_closed_on_is_handed_back(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """Rows whose claim was under way when the gate closed (the instance paused inside it)
        are not sent but handed back, pending as they were."""
        service, sharing, clock = shared_service
        await sharing.round()
        store = service.runtime.store
        store.sinks = (SinkRoute("all", ("*",)),)
        await store.commit_events("shop", [_order(1), _order(2)], now=NOW)
        sink = GatedSink("all", gated=False)
        worker = service.worker
        worker.sinks = {"all": sink}
        worker.store = _PausingStore(store, clock)
        assert await worker.run_once() == 0
        assert sink.started == []
        assert [row.state for row in await store.deliveries()] == ["pending", "pending"]

    async def test_the_loop_claims_again_once_a_round_renewed(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """The running worker claims nothing while the gate is closed, and the round that
        reopens it wakes the worker at once (no wait for its next check): the row goes out."""
        service, sharing, clock = shared_service
        await sharing.round()
        store, worker = service.runtime.store, service.worker
        store.sinks = (SinkRoute("all", ("*",)),)
        await store.commit_events("shop", [_order(1)], now=NOW)
        sink = GatedSink("all", gated=False)
        worker.sinks = {"all": sink}
        clock.advance(2.0)  # resumed from a pause: the gate is closed until the next round
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop, 1.0))
        await until_sleeping(clock, running)
        assert sink.started == []
        await sharing.round()
        await eventually(lambda: len(sink.started) == 1, what="the row sent", task=running)
        stop.set()
        await running


class _PausingStore:
    """The store, but the first claim returns only after the clock jumped past the gate (the
    process stopped between the claim's commit and its rows' start)."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store, self.clock = store, clock
        self.release = store.release
        self.reset_delivering, self.unrouted, self.prune = (
            store.reset_delivering, store.unrouted, store.prune,
        )  # fmt: skip

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled:
        settled = await self.store.settle(records, now, rooms)
        if settled.claimed:
            self.clock.advance(2.0)
        return settled
