"""Tier runs against the sandbox: lifecycles become exactly the expected events, cheaply."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from drgreen_poller.demo import NEW_CUSTOMER
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.store import Observation
from drgreen_poller.sweeps import TRACKED_MARK
from drgreen_poller.tiers import TIERS, Tier
from tests.conftest import World


class TestLifecycles:
    async def test_customer_and_order_through_their_lifecycles(
        self, make_world: Callable[..., Any]
    ) -> None:
        """KYC and create→approve→pay→ship→deliver give exactly the expected events, in order."""
        world: World = await make_world()
        assert await world.poll(Tier.PENDING_KYC) == []
        assert await world.poll(Tier.ACTIVE_ORDERS) == []

        client_id = await world.api.create_client(NEW_CUSTOMER)
        assert await world.poll(Tier.PENDING_KYC) == ["client.created"]
        world.state.clients.verify_kyc(client_id)
        assert await world.poll(Tier.PENDING_KYC) == ["client.kyc.verified"]
        world.state.clients.approve(client_id)
        assert await world.poll(Tier.PENDING_KYC) == [
            "client.kyc.approved",
            "client.kyc.completed",
            "client.activated",
        ]
        assert await world.store.entities("shop", tier=Tier.PENDING_KYC) == []

        strain = world.state.catalogue.listed()[0] if world.state.catalogue.listed() else None
        if strain is None:
            strain = world.state.catalogue.create("Blue Dream", locations={"GBR": 100})
        await world.api.add_to_cart(world.state.clients.get(client_id).cart_id, [(strain.id, 2)])
        order = await world.api.create_order(client_id)
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.created"]
        for step, expected in (
            (world.state.lifecycle.approve, "order.approved"),
            (world.state.lifecycle.pay, "order.paid"),
            (world.state.lifecycle.ship, "order.shipped"),
        ):
            step(order.id)
            assert await world.poll(Tier.ACTIVE_ORDERS) == [expected]
        [shipped] = await world.store.entities("shop", kind="order")
        assert shipped.tier == Tier.STALE_ORDERS  # kept, slowly, until delivered
        world.state.lifecycle.deliver(order.id)
        assert await world.poll(Tier.STALE_ORDERS) == ["order.delivered"]
        [done] = await world.store.entities("shop", kind="order")
        assert done.tier is None
        events = await world.store.events(patterns=["order.*"], limit=0)
        first = events[0]["sequence"]
        assert [e["sequence"] - first for e in events] == [0, 1, 2, 3, 4]
        assert len({e["id"] for e in events}) == 5

    async def test_rejected_order_leaves_the_active_set(
        self, make_world: Callable[..., Any]
    ) -> None:
        """A rejected order emits order.rejected once and is no longer polled."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.orders.create("shop")
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.created"]
        world.state.lifecycle.reject(order.id, "no prescription")
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.rejected"]
        tracked = {
            e.resource.id for e in await world.store.entities("shop", tier=Tier.ACTIVE_ORDERS)
        }
        assert order.id not in tracked
        assert await world.poll(Tier.ACTIVE_ORDERS) == []

    async def test_terminal_statuses_are_configurable(self, make_world: Callable[..., Any]) -> None:
        """With SHIPPED configured as terminal, a shipped order stops being polled."""
        world: World = await make_world(terminal=frozenset({"SHIPPED", "DELIVERED"}))
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        world.state.lifecycle.ship(order.id)
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.approved", "order.shipped"]
        [entity] = await world.store.entities("shop", kind="order")
        assert entity.tier is None

    async def test_jump_and_flip_flop(self, make_world: Callable[..., Any]) -> None:
        """An order seen pending then delivered gets every step; payment flip-flops are kept."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        world.state.lifecycle.pay(order.id)
        world.state.lifecycle.unpay(order.id)
        world.state.lifecycle.pay(order.id)
        world.state.lifecycle.deliver(order.id)
        events = await world.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert [(e["type"], e["inferred"]) for e in events.events] == [
            ("order.approved", False),
            ("order.paid", False),
            ("order.shipped", True),
            ("order.delivered", False),
        ]

    async def test_unknown_payment_value(self, make_world: Callable[..., Any]) -> None:
        """An enum value Dr Green never documented becomes a *_changed event, never a crash."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.orders.patch(order.id, {"paymentStatus": "ON_HOLD"})
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.payment_status_changed"]


class TestFirstSync:
    async def test_seed_emits_nothing_for_500_existing_orders(
        self, make_world: Callable[..., Any]
    ) -> None:
        """First start on a store with 500 orders records them all and emits nothing."""
        world: World = await make_world()
        world.state.orders.create_many("shop", 500, spacing_s=60)
        for _ in range(40):
            world.state.clients.create("shop")
        for tier in TIERS:
            assert await world.poll(tier) == []
        assert len(await world.store.entities("shop", kind="order")) == 500
        assert await world.poll(Tier.ACTIVE_ORDERS) == []  # and the next run is quiet too

    async def test_emit_sends_created_for_everything(self, make_world: Callable[..., Any]) -> None:
        """first_sync = "emit" announces every existing order and client."""
        world: World = await make_world(first_sync="emit")
        world.state.orders.create_many("shop", 3)
        world.state.clients.create("shop")
        assert (await world.poll(Tier.ACTIVE_ORDERS)).count("order.created") == 3
        assert "client.created" in await world.poll(Tier.PENDING_KYC)

    async def test_a_new_poller_reads_the_seed_from_the_state(
        self, make_world: Callable[..., Any]
    ) -> None:
        """A poller started later (a restart) finds the seed recorded and reports new orders."""
        world: World = await make_world()
        world.state.orders.create_many("shop", 3)
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.orders.create("shop")
        later = HolderPoller("shop", (), world.api, world.store, world.clock, PollSettings())
        result = await later.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert (result.first_sync, [e["type"] for e in result.events]) == (False, ["order.created"])


class TestCost:
    async def test_thousand_active_orders_within_the_budget(
        self, make_world: Callable[..., Any]
    ) -> None:
        """1,000 active orders stay fresh with ~11 requests a minute (budget: 60)."""
        world: World = await make_world()
        world.state.orders.create_many("shop", 1000, spacing_s=1)
        world.state.orders.create_many("shop", 2000, spacing_s=1, order_status="DELIVERED",
                                  admin_approval="VERIFIED", payment_status="PAID")  # fmt: skip
        await world.poll(Tier.ACTIVE_ORDERS)
        first_active = world.state.orders.of("shop")[0]
        world.state.lifecycle.approve(first_active.id)  # the oldest active order changes
        world.state.traffic.reset_request_counts()
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.approved"]
        counts = world.state.traffic.request_counts("shop")
        assert counts["total"] <= 60
        assert counts["by_endpoint"] == {"GET /dapp/orders": counts["total"]}
        assert len(await world.store.entities("shop", tier=Tier.ACTIVE_ORDERS)) == 1000


class TestStaleTier:
    async def test_old_orders_are_swept_by_status(self, make_world: Callable[..., Any]) -> None:
        """Orders older than stale_after live in the stale tier, swept with a status filter."""
        world: World = await make_world()
        old = world.clock.now() - timedelta(days=10)
        order = world.state.orders.create("shop", created_at=old)
        world.state.orders.create_many("shop", 30)
        await world.poll(Tier.ACTIVE_ORDERS)
        [entity] = [
            e for e in await world.store.entities("shop", kind="order") if e.resource.id == order.id
        ]
        assert entity.tier == Tier.STALE_ORDERS
        world.state.lifecycle.approve(order.id)
        world.state.traffic.reset_request_counts()
        assert await world.poll(Tier.STALE_ORDERS) == ["order.approved"]
        log = world.state.traffic.request_counts("shop")["log"]
        assert [entry["endpoint"] for entry in log] == ["GET /dapp/orders"]

    async def test_order_leaving_its_bucket_is_fetched_by_id(
        self, make_world: Callable[..., Any]
    ) -> None:
        """A stale order whose status changed is read from detail, its approval inferred."""
        world: World = await make_world()
        order = world.state.orders.create("shop", created_at=world.clock.now() - timedelta(days=9))
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.lifecycle.approve(order.id)
        world.state.lifecycle.ship(order.id)
        types = await world.poller.poll_tier(Tier.STALE_ORDERS, next_due_at=0)
        assert [(e["type"], e["inferred"]) for e in types.events] == [
            ("order.approved", True),
            ("order.shipped", False),
        ]
        endpoints = [e["endpoint"] for e in world.state.traffic.request_counts("shop")["log"]]
        assert "GET /dapp/orders/{orderId}" in endpoints


class TestUnchangedOrders:
    async def test_an_unchanged_order_moves_to_the_stale_tier_as_it_ages(
        self, make_world: Callable[..., Any]
    ) -> None:
        """An order nothing happened to moves to the stale tier once older than stale_after."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        world.clock.advance(8 * 86400)
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        [entity] = await world.store.entities("shop", kind="order")
        assert (entity.resource.id, entity.tier) == (order.id, Tier.STALE_ORDERS)

    async def test_each_moved_field_is_found_once(self, make_world: Callable[..., Any]) -> None:
        """A move of any one status field is an event in the next run, and no event after it."""
        world: World = await make_world()
        order = world.state.orders.create("shop")
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.orders.patch(order.id, {"paymentStatus": "ON_HOLD"})
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.payment_status_changed"]
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        world.state.orders.patch(order.id, {"adminApproval": "VERIFIED"})
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.approved"]
        world.state.orders.patch(order.id, {"orderStatus": "PROCESSING"})
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.processing"]
        assert await world.poll(Tier.ACTIVE_ORDERS) == []

    async def test_a_seeded_tier_stays_seeded(self, make_world: Callable[..., Any]) -> None:
        """After its first sync a tier's new orders are events, run after run."""
        world: World = await make_world()
        world.state.orders.create_many("shop", 3)
        assert await world.poll(Tier.ACTIVE_ORDERS) == []
        world.state.orders.create("shop")
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.created"]
        world.state.orders.create("shop")
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.created"]


class TestCommissionsAndStrains:
    async def test_commission_accrual(self, make_world: Callable[..., Any]) -> None:
        """The first summary is a baseline; a rise in USD is commission.accrued."""
        world: World = await make_world()
        assert await world.poll(Tier.COMMISSIONS) == []
        world.state.commissions.accrue("shop", 4.5)
        world.state.commissions.set_eth_rate(0.001)  # ETH drift alone is not an event
        assert await world.poll(Tier.COMMISSIONS) == ["commission.accrued"]
        [event] = await world.store.events(patterns=["commission.*"])
        assert event["data"]["amounts"]["delta"] == 4.5

    async def test_catalogue_changes(self, make_world: Callable[..., Any]) -> None:
        """Strains appearing, changing price and disappearing are events per country."""
        world: World = await make_world(countries=("GBR",))
        kept = world.state.catalogue.create("Blue Dream", locations={"GBR": 100})
        gone = world.state.catalogue.create("Northern Lights", locations={"GBR": 50})
        assert await world.poll(Tier.STRAINS) == []
        world.state.catalogue.create("Durban Poison", locations={"GBR": 10})
        world.state.catalogue.update(kept.id, {"retailPrice": 14})
        world.state.catalogue.remove(gone.id)
        assert sorted(await world.poll(Tier.STRAINS)) == [
            "strain.created",
            "strain.removed",
            "strain.updated",
        ]


class TestTracking:
    async def test_tracked_order_gets_its_created_event(
        self, make_world: Callable[..., Any]
    ) -> None:
        """An order tracked by id before discovery is announced as created when first seen."""
        world: World = await make_world()
        await world.poll(Tier.ACTIVE_ORDERS)
        order = world.state.orders.create("shop")
        marker = Observation(Resource("order", order.id), {TRACKED_MARK: True}, Tier.ACTIVE_ORDERS)
        await world.store.commit_events("shop", [marker], now=world.clock.now())
        assert await world.poll(Tier.ACTIVE_ORDERS) == ["order.created"]


class TestReviewRegressions:
    async def test_unknown_status_in_the_stale_tier(self, make_world: Callable[..., Any]) -> None:
        """A stale order with an undocumented orderStatus is read by id, not with a 400 filter."""
        world: World = await make_world()
        old = world.clock.now() - timedelta(days=9)
        odd = world.state.orders.create("shop", created_at=old, admin_approval="VERIFIED")
        plain = world.state.orders.create("shop", created_at=old)
        await world.poll(Tier.ACTIVE_ORDERS)
        world.state.orders.patch(odd.id, {"orderStatus": "ON_HOLD"})
        assert await world.poll(Tier.STALE_ORDERS) == ["order.status_changed"]
        world.state.orders.patch(odd.id, {"orderStatus": "DELIVERED"})
        world.state.lifecycle.approve(plain.id)
        assert sorted(await world.poll(Tier.STALE_ORDERS)) == ["order.approved", "order.delivered"]

    async def test_unlisted_pending_client_leaves_the_tier(
        self, make_world: Callable[..., Any]
    ) -> None:
        """A tracked client no page lists (a wrong id) leaves the tier after one full sweep."""
        world: World = await make_world()
        await world.poll(Tier.PENDING_KYC)
        ghost = Resource("client", "00000000-0000-4000-8000-0000000000aa")
        marker = Observation(ghost, {TRACKED_MARK: True}, Tier.PENDING_KYC)
        await world.store.commit_events("shop", [marker], now=world.clock.now())
        assert await world.poll(Tier.PENDING_KYC) == []
        assert await world.store.entities("shop", tier=Tier.PENDING_KYC) == []
