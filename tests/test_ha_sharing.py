"""Tests of the lease loop of a daemon sharing its PostgreSQL database, in process on a fake
clock (the database's clock is real): rounds start and stop holders, come back just after another
instance's lease or heartbeat expires, and the delivery worker sends no row it claimed before its
instance's heartbeat could have lapsed. Real ``run`` processes are tests/test_ha.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.errors import LeaseLost
from drgreen_poller.events import Resource
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.service import Service, apply_config, build_service, open_runtime
from drgreen_poller.sharing import EXPIRY_MARGIN_S, HolderSharing, next_round_in
from drgreen_poller.store import (
    AttemptRecord,
    DeliveryState,
    DueDelivery,
    Observation,
    Settled,
    SinkRoute,
    Store,
)
from drgreen_poller.store.leases import Fence, Instance
from drgreen_poller.tiers import Tier
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.fakes import ClockScheduler, GatedSink
from tests.waiting import eventually, until_sleeping

TTL = "2s"
LONG_TTL_S = 30.0  # its lease rounds come every 10 s, unless an expiry comes sooner
DEAD_TTL_S = 3.0  # the lease a dead instance left
LATE_S = 0.05  # how late after the expiry the round may come
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
_ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")


@pytest.fixture
def clock() -> SystemClock:
    """The sandbox's clock is real (the daemon's parts take their own fake one)."""
    return SystemClock()


@pytest.fixture
async def shared_service(
    tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
) -> AsyncIterator[tuple[Service, HolderSharing, FakeClock]]:
    """A daemon's parts on a shared PostgreSQL database, on a fake clock (nothing started)."""
    (tmp_path / "pg.password").write_text(pg_database.password + "\n")
    extra = (
        f'[store]\nurl = "{pg_database.url}"\npassword_file = "pg.password"\nlease_ttl = "{TTL}"\n'
    )
    config = load_config(write_config(tmp_path, box.base_url, shop, extra=extra), {})
    clock = FakeClock()
    async with open_runtime(config, clock, shared=True) as runtime:
        assert runtime.instance is not None
        assert isinstance(runtime.store.fence, Fence)
        service = build_service(runtime, make_scheduler=functools.partial(ClockScheduler, clock))
        assert runtime.pollers == {}  # none before a lease is taken
        sharing = HolderSharing(service, runtime.instance, runtime.store.fence, 2.0)
        yield service, sharing, clock


class TestNextRound:
    @pytest.mark.parametrize(
        ("next_expiry_s", "expected_s"),
        [(None, 10.0), (25.0, 10.0), (4.0, 4.0 + EXPIRY_MARGIN_S), (0.0, EXPIRY_MARGIN_S)],
    )
    def test_the_next_round_follows_the_next_expiry(
        self, next_expiry_s: float | None, expected_s: float
    ) -> None:
        """The loop waits a third of the TTL, or until just after another instance's lease or
        heartbeat expires when that comes sooner."""
        assert next_round_in(30.0, next_expiry_s) == pytest.approx(expected_s)


class TestSharingService:
    async def test_a_round_starts_the_holders_taken(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A round's leases become the runner's holders, scheduled, and their requests pass
        the gate until the renewal is too old to be sure of."""
        service, sharing, clock = shared_service
        done = await sharing.round()
        assert list(done.held) == ["shop"]
        assert list(service.runner.pollers) == ["shop"]
        assert service.scheduler.next_run("shop", Tier.ACTIVE_ORDERS) is not None
        sharing.gate("shop")  # sure of the lease: the request may leave
        clock.advance(2.0)
        with pytest.raises(LeaseLost):
            sharing.gate("shop")

    async def test_a_lost_lease_stops_the_holder_and_counts(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A refusal stops polling the holder at once (unscheduled) and is counted."""
        service, sharing, _ = shared_service
        await sharing.round()
        service.runner.on_lease_lost("shop")
        assert service.runner.pollers == {}
        assert service.scheduler.next_run("shop", Tier.ACTIVE_ORDERS) is None
        assert service.metrics.fencing_refusals._value.get() == 1
        with pytest.raises(LeaseLost):
            sharing.gate("shop")
        assert list((await sharing.round()).held) == ["shop"]  # still its: taken up again
        assert list(service.runner.pollers) == ["shop"]

    async def test_a_reload_removing_a_holder_hands_its_lease_back(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A holder a reload removes stops, and its lease is free for another instance at once;
        one it adds waits for the next round."""
        service, sharing, _ = shared_service
        await sharing.round()
        renamed = replace(service.config.holders[0], name="other")
        await apply_config(service, replace(service.config, holders=(renamed,)))
        assert service.runner.pollers == {}
        rows = await service.runtime.store.instances(2.0)
        assert [row.holders for row in rows] == [()]
        assert list((await sharing.round()).held) == ["other"]

    @pytest.mark.timeout(20)
    async def test_a_dead_instances_lease_is_taken_at_its_expiry(
        self, shared_service: tuple[Service, HolderSharing, FakeClock], pg_database: PgDatabase
    ) -> None:
        """After a round that saw another instance's lease expire soon, the loop's next round
        comes right after that expiry (a few ms), not a third of the time to live later, and
        takes the holder over: a dead instance's holders move within the TTL of its death."""
        service, _, clock = shared_service
        runtime = service.runtime
        assert runtime.instance is not None
        assert isinstance(runtime.store.fence, Fence)
        sharing = HolderSharing(service, runtime.instance, runtime.store.fence, LONG_TTL_S)
        dead = await Store.open(pg_store_config(pg_database), sinks=[])
        try:
            await dead.share_holders(Instance("dead", "host", 1), ["shop"], DEAD_TTL_S, NOW)
            assert (await sharing.round()).held == {}  # the dead one's lease has not expired yet
            assert sharing.next_round_s <= DEAD_TTL_S + EXPIRY_MARGIN_S
            looping = asyncio.create_task(sharing.run())
            await until_sleeping(clock, looping)

            async def expired() -> bool:  # the database's clock is real: wait for it to pass
                rows = await dead._fetch("SELECT expires_at < clock_timestamp() FROM leases")
                return bool(rows[0][0])

            await eventually(expired, what="the dead instance's lease expired", task=looping)
            clock.advance(DEAD_TTL_S + LATE_S)  # far short of the usual round (LONG_TTL_S / 3)
            await eventually(lambda: "shop" in service.runner.pollers, task=looping)
            assert service.metrics.lease_takeovers._value.get() == 1
            looping.cancel()
            await asyncio.gather(looping, return_exceptions=True)
        finally:
            await dead.close()

    async def test_a_gone_instances_deliveries_wake_the_worker(
        self,
        shared_service: tuple[Service, HolderSharing, FakeClock],
        pg_database: PgDatabase,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Rows in flight on an instance gone silent are returned at a round, which says so
        in one warning and wakes the delivery worker."""
        service, sharing, _ = shared_service
        store = service.runtime.store
        await sharing.round()  # the lease of "shop": its commit passes the fence
        store.sinks = (SinkRoute("all", ("*",)),)
        change = Observation(_ORDER, {}, None, changes=[Change("order.approved", {})])
        await store.commit_events("shop", [change], now=NOW)
        await store.register_instance(Instance("gone", "host", 1))
        store.instance = "gone"
        assert len((await store.settle([], NOW, {"all": 5})).claimed) == 1
        store.instance = sharing.instance.id
        with pg_database.server.connect(pg_database.name) as conn:
            conn.execute("UPDATE instances SET heartbeat_at = heartbeat_at - interval '1 hour'"
                         " WHERE id = 'gone'")  # fmt: skip
        assert (await sharing.round()).reclaimed == 1
        assert "deliveries_reclaimed" in capsys.readouterr().out
        assert (await store.settle([], NOW, {"all": 5})).claimed  # pending again


def _order(n: int) -> Observation:
    resource = Resource("order", f"00000000-0000-4000-8000-{n:012d}")
    return Observation(resource, {}, None, changes=[Change("order.approved", {})])


async def _two_claimed(
    service: Service, sharing: HolderSharing
) -> tuple[GatedSink, asyncio.Task[int]]:
    """Two events of two orders claimed by this instance's worker (one slot): the first being
    sent (held in the sink until released), the second queued behind it."""
    await sharing.round()
    store, worker = service.runtime.store, service.worker
    store.sinks = (SinkRoute("all", ("*",)),)
    await store.commit_events("shop", [_order(1), _order(2)], now=NOW)
    sink = GatedSink("all")
    worker.sinks = {"all": sink}
    worker.config = replace(worker.config, concurrency=1)
    sending = asyncio.create_task(worker.run_once())
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
        await sharing.round()
        store, worker = service.runtime.store, service.worker
        store.sinks = (SinkRoute("all", ("*",)),)
        await store.commit_events("shop", [_order(1), _order(2)], now=NOW)
        sink = GatedSink("all")
        worker.sinks = {"all": sink}
        worker.config = replace(worker.config, concurrency=1)
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
