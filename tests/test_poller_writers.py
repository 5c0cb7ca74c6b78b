"""Tier runs beside other writers of the state: a lost commit redone, a concurrent poller, the
CLI writing between two sweeps; each transition is committed once, under one id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.errors import ConcurrentUpdate
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.tiers import Tier
from tests.cli_run import run_cli
from tests.conftest import World, write_config


class TestCrashSafety:
    async def test_repeated_poll_after_a_lost_commit_has_the_same_ids(
        self, make_world: Callable[..., Any]
    ) -> None:
        """A poll whose commit was lost (a crash) is redone with exactly the same event ids."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        world.state.lifecycle.pay(order.id)
        lost = await world.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0, dry_run=True)
        redone = await world.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert [e["id"] for e in lost.events] == [e["id"] for e in redone.events]
        assert [e["type"] for e in redone.events] == ["order.approved", "order.paid"]
        assert await world.poll(Tier.ACTIVE_ORDERS) == []


class TestConcurrentWriters:
    async def test_a_stale_detection_is_refused(self, make_world: Callable[..., Any]) -> None:
        """Two writers seeing one change: the second commit is refused, nothing twice."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        other = await world.poller.observe(Tier.ACTIVE_ORDERS, first_sync=False)  # writer 2 reads
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.approved"]  # writer 1 commits
        with pytest.raises(ConcurrentUpdate, match="polled again"):
            await world.store.commit_poll(
                "shop", Tier.ACTIVE_ORDERS, other, now=world.clock.now(), next_due_at=0
            )
        assert await world.types() == ["order.approved"]
        assert await world.poll(Tier.ACTIVE_ORDERS) == []


class _WrittenUnder(Store):
    """A state another connection commits to (as a running daemon does) while each of the
    first ``collisions`` previews is under way, after the tier was read."""

    collisions = 0
    path = Path()

    async def preview(
        self, holder: str, observations: Any, *, now: datetime
    ) -> list[dict[str, Any]]:
        if self.collisions:
            self.collisions -= 1
            other = await Store.open(self.path, sinks=[SinkRoute("all", ("*",))])
            try:  # a client's event: nothing the orders' preview depends on
                client = Resource("client", f"c-{self.collisions}")
                seen = Observation(client, {}, None, changes=[Change("client.created", {})])
                await other.commit_events(holder, [seen], now=now)
            finally:
                await other.close()
        return await super().preview(holder, observations, now=now)


class TestOutOfBandWrites:
    @pytest.mark.timeout(30)
    async def test_an_order_the_cli_tracks_between_sweeps_is_swept_for(
        self, make_world: Callable[..., Any], tmp_path: Path
    ) -> None:
        """An order ``drgreen-poller track`` adds while the poller runs is looked for by the
        next sweep (here: it does not exist, so it leaves the tier)."""
        world: World = await make_world()
        world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)  # the tier is read (and kept)
        gone = "00000000-0000-4000-8000-0000000000bb"
        config = write_config(tmp_path, world.box.base_url, world.holder)
        code, out, err = await run_cli("-c", str(config), "track", "order", gone, timeout_s=30)
        assert code == 0, err
        assert "will be watched" in out
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        active = await world.store.entities("shop", tier=Tier.ACTIVE_ORDERS)
        assert gone not in {e.resource.id for e in active}

    async def test_a_change_another_connection_committed_is_not_detected_twice(
        self, make_world: Callable[..., Any], tmp_path: Path
    ) -> None:
        """A transition another connection committed between two sweeps is what the next sweep
        compares with: no second event, no refused commit."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        other = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("all", ("*",))])
        try:
            poller = HolderPoller("shop", (), world.api, other, world.clock, PollSettings())
            result = await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        finally:
            await other.close()
        assert [e["type"] for e in result.events] == ["order.approved"]
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        assert await world.types() == ["order.approved"]

    async def test_a_dry_run_after_another_connections_commit_shows_no_stale_event(
        self, make_world: Callable[..., Any], tmp_path: Path
    ) -> None:
        """A dry run after another connection committed a transition previews what a commit
        would write now: nothing."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.approved"]
        world.state.lifecycle.pay(order.id)
        other = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("all", ("*",))])
        try:
            poller = HolderPoller("shop", (), world.api, other, world.clock, PollSettings())
            await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        finally:
            await other.close()
        preview = await world.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0, dry_run=True)
        assert preview.events == []

    async def test_a_dry_run_beside_a_daemon_writing_at_its_start_still_previews(
        self, make_world: Callable[..., Any], tmp_path: Path
    ) -> None:
        """A dry run whose first two previews find that another connection committed meanwhile
        (a daemon's tier runs, one after another at its start) reads again and previews: it
        does not fail on the second."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        state = await _WrittenUnder.open(tmp_path / "state.db", sinks=[SinkRoute("all", ("*",))])
        state.path = tmp_path / "state.db"
        try:
            poller = HolderPoller("shop", (), world.api, state, world.clock, PollSettings())
            await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)  # the tier is read, kept
            world.state.lifecycle.approve(order.id)
            state.collisions = 2
            preview = await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0, dry_run=True)
        finally:
            await state.close()
        assert state.collisions == 0
        assert [e["type"] for e in preview.events] == ["order.approved"]
