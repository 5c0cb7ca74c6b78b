"""Tests of the lease loop of a daemon sharing its PostgreSQL database, in process on a fake
clock (the database's clock is real): rounds start and stop holders, hand a lease back only once
its holder is stopped, and come back just after another instance's lease or heartbeat expires.
Real ``run`` processes are tests/test_ha.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.errors import LeaseLost
from drgreen_poller.service import Service, apply_config
from drgreen_poller.sharing import EXPIRY_MARGIN_S, HolderSharing, next_round_in
from drgreen_poller.store import (
    Observation,
    SinkRoute,
    Store,
)
from drgreen_poller.store.leases import Fence, Instance
from drgreen_poller.tiers import Tier
from tests.conftest import PgDatabase, pg_store_config
from tests.sharing.values import DEAD_TTL_S, LATE_S, LONG_TTL_S, NOW, ORDER
from tests.waiting import eventually, until_sleeping


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

    async def test_a_holder_beyond_the_share_stops_before_its_lease_is_free(
        self,
        shared_service: tuple[Service, HolderSharing, FakeClock],
        pg_database: PgDatabase,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A round that finds a second live instance stops polling the holder beyond this
        one's share first, and only then frees its lease: no moment when the other instance
        could take it while a request of this one's is still under way."""
        service, sharing, _ = shared_service
        store = service.runtime.store
        await sharing.round()
        second = replace(service.config.holders[0], name="shop2")
        await apply_config(
            service, replace(service.config, holders=(*service.config.holders, second))
        )
        assert sorted((await sharing.round()).held) == ["shop", "shop2"]
        other = await Store.open(pg_store_config(pg_database), sinks=[])
        freed: list[tuple[tuple[str, ...], list[str]]] = []
        release = store.release_leases

        async def recorded(instance: str, holders: Sequence[str]) -> None:
            freed.append((tuple(holders), sorted(service.runner.pollers)))
            await release(instance, holders)

        monkeypatch.setattr(store, "release_leases", recorded)
        try:
            names = ["shop", "shop2"]
            assert (
                await other.share_holders(Instance("other", "h", 2), names, 2.0, NOW)
            ).held == {}
            done = await sharing.round()
            assert (done.released, freed) == (("shop2",), [(("shop2",), ["shop"])])
            taken = await other.share_holders(Instance("other", "h", 2), names, 2.0, NOW)
            assert list(taken.held) == ["shop2"]
        finally:
            await other.close()

    async def test_a_lease_taken_meanwhile_is_lost_not_released(
        self,
        shared_service: tuple[Service, HolderSharing, FakeClock],
        pg_database: PgDatabase,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A round that finds a holder's lease taken by another instance (this one could not
        renew it in time) stops polling it and says it was lost, not handed back."""
        service, sharing, _ = shared_service
        await sharing.round()
        with pg_database.server.connect(pg_database.name) as conn:
            conn.execute("UPDATE leases SET expires_at = clock_timestamp() - interval '1 s'")
        other = await Store.open(pg_store_config(pg_database), sinks=[])
        try:
            taken = await other.share_holders(Instance("other", "h", 2), ["shop"], 60.0, NOW)
            assert list(taken.held) == ["shop"]
            capsys.readouterr()
            await sharing.round()
        finally:
            await other.close()
        logged = capsys.readouterr().out
        assert service.runner.pollers == {}
        assert ("lease_lost" in logged, "lease_released" in logged) == (True, False)

    @pytest.mark.timeout(20)
    async def test_a_dead_instances_lease_is_taken_at_its_expiry(
        self, shared_service: tuple[Service, HolderSharing, FakeClock], pg_database: PgDatabase
    ) -> None:
        """After a round that saw another instance's lease expire soon, the loop's next round
        comes right after that expiry (a few ms), not a third of the time to live later, and
        takes the holder over: a dead instance's holders move within the TTL of its death."""
        service, _, clock = shared_service
        async with _beside_a_dead_instance(service, pg_database) as (sharing, dead):
            assert (await sharing.round()).held == {}  # the dead one's lease has not expired yet
            assert sharing.next_round_s <= DEAD_TTL_S + EXPIRY_MARGIN_S
            looping = asyncio.create_task(sharing.run())
            await _taken_over_at_the_expiry(service, clock, dead, looping)
        assert service.metrics.lease_takeovers._value.get() == 1

    @pytest.mark.timeout(20)
    async def test_the_loop_follows_the_expiry_its_first_round_saw(
        self, shared_service: tuple[Service, HolderSharing, FakeClock], pg_database: PgDatabase
    ) -> None:
        """Started before the daemon's first round (as the daemon starts it), the loop still
        comes back just after the expiry that round saw, not a third of the TTL later: an
        instance started late in a dead one's lease takes its holders at the expiry."""
        service, _, clock = shared_service
        async with _beside_a_dead_instance(service, pg_database) as (sharing, dead):
            looping = asyncio.create_task(sharing.run())  # the daemon's order: loop, then round
            assert (await sharing.round()).held == {}
            await _taken_over_at_the_expiry(service, clock, dead, looping)

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
        change = Observation(ORDER, {}, None, changes=[Change("order.approved", {})])
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


@asynccontextmanager
async def _beside_a_dead_instance(
    service: Service, pg_database: PgDatabase
) -> AsyncIterator[tuple[HolderSharing, Store]]:
    """A lease loop of ``service`` with a long time to live, and another instance's connection
    that has just taken the lease of "shop" for ``DEAD_TTL_S`` and then died (it never renews)."""
    runtime = service.runtime
    assert runtime.instance is not None
    assert isinstance(runtime.store.fence, Fence)
    sharing = HolderSharing(service, runtime.instance, runtime.store.fence, LONG_TTL_S)
    dead = await Store.open(pg_store_config(pg_database), sinks=[])
    try:
        await dead.share_holders(Instance("dead", "host", 1), ["shop"], DEAD_TTL_S, NOW)
        yield sharing, dead
    finally:
        await dead.close()


async def _taken_over_at_the_expiry(
    service: Service, clock: FakeClock, dead: Store, looping: asyncio.Task[None]
) -> None:
    """Once the loop sleeps and the dead instance's lease has expired (on the database's real
    clock), advancing the fake clock by far less than a usual round's wait (``LONG_TTL_S / 3``)
    brings the round that takes "shop" over; the loop is stopped after."""
    await until_sleeping(clock, looping)

    async def expired() -> bool:
        rows = await dead._fetch("SELECT expires_at < clock_timestamp() FROM leases")
        return bool(rows[0][0])

    await eventually(expired, what="the dead instance's lease expired", task=looping)
    clock.advance(DEAD_TTL_S + LATE_S)
    await eventually(lambda: "shop" in service.runner.pollers, task=looping)
    looping.cancel()
    await asyncio.gather(looping, return_exceptions=True)
