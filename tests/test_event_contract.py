"""The event contract: the schemas under ``schemas/``, and what ``data.previous`` means.

Every event type comes out of real tier runs against the sandbox (and a refused key), and each
event must match its schemas (``contract.problems``); the schema files must be exactly the
types the code can emit, shipped in the package as they are in the repository. A receiver diffs
``previous`` against ``object``: each key of ``previous`` must be a field of ``object`` with
the same meaning and the same JSON type, and the value must have moved.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.contract import EVENT_TYPES
from drgreen_poller.events import Resource, envelope, iso_ms
from drgreen_poller.runner import TierRunner
from drgreen_poller.scheduler import Timing
from drgreen_poller.tiers import TIERS, Tier
from tests.conftest import World
from tests.contract_check import problems

EVERY_TYPE = {
    "order.created", "order.approved", "order.rejected", "order.approval_changed",
    "order.paid", "order.payment_failed", "order.refunded", "order.payment_status_changed",
    "order.processing", "order.shipped", "order.delivered", "order.cancelled",
    "order.status_changed",
    "client.created", "client.kyc.verified", "client.kyc.verification_changed",
    "client.kyc.approved", "client.kyc.rejected", "client.kyc.approval_changed",
    "client.kyc.completed", "client.activated", "client.deactivated",
    "commission.accrued", "commission.paid", "commission.adjusted",
    "strain.created", "strain.updated", "strain.removed",
}  # fmt: skip
# Operational events carry no previous state; checked from their envelope below.
HOLDER_TYPES = ("poller.holder_unauthorized", "poller.holder_recovered")


async def _orders(world: World) -> None:
    state, poll = world.state, world.poll
    orders = [state.orders.create("shop").id for _ in range(6)]
    await poll(Tier.ACTIVE_ORDERS)
    walked, rejected, odd, refunded, regressed, skipped = orders
    for step in ("approve", "pay", "process", "ship", "deliver"):
        getattr(state.lifecycle, step)(walked)
        await poll(Tier.ACTIVE_ORDERS)
    state.lifecycle.reject(rejected)
    state.orders.patch(odd, {"adminApproval": "ON_REVIEW"})
    state.lifecycle.approve(refunded)
    state.lifecycle.approve(regressed)
    state.lifecycle.approve(skipped)
    await poll(Tier.ACTIVE_ORDERS)
    for status in ("FAILED", "REFUNDED", "ON_HOLD"):
        state.lifecycle.set_payment_status(refunded, status)
        await poll(Tier.ACTIVE_ORDERS)
    state.lifecycle.cancel(refunded)
    state.lifecycle.process(regressed)
    state.lifecycle.pay(skipped)
    await poll(Tier.ACTIVE_ORDERS)
    state.orders.patch(regressed, {"orderStatus": "PENDING"})
    state.orders.patch(skipped, {"orderStatus": "DELIVERED"})  # never seen SHIPPED
    await poll(Tier.ACTIVE_ORDERS)


async def _clients(world: World) -> None:
    state, poll = world.state, world.poll
    completed, rejected, odd = (state.clients.create("shop").id for _ in range(3))
    await poll(Tier.PENDING_KYC)
    state.clients.verify_kyc(completed)
    state.clients.reject(rejected)
    state.clients.patch(odd, {"adminApproval": "ON_REVIEW", "isKYCVerified": True})
    await poll(Tier.PENDING_KYC)
    state.clients.approve(completed)
    state.clients.patch(odd, {"isKYCVerified": False})
    state.clients.activate(odd)
    await poll(Tier.PENDING_KYC)
    state.clients.deactivate(odd)
    await poll(Tier.PENDING_KYC)


async def _commissions(world: World) -> None:
    state, poll = world.state, world.poll
    await poll(Tier.COMMISSIONS)
    commission = state.commissions.accrue("shop", 120.5)
    await poll(Tier.COMMISSIONS)
    state.commissions.pay(commission.id)
    await poll(Tier.COMMISSIONS)
    commission.amount_in_dollar = 100  # Dr Green corrected it: the total falls
    await poll(Tier.COMMISSIONS)


async def _strains(world: World) -> None:
    state, poll = world.state, world.poll
    await poll(Tier.STRAINS)
    strain = state.catalogue.create("Contract Kush", retail_price=12, locations={"GBR": 300})
    await poll(Tier.STRAINS)
    state.catalogue.update(strain.id, {"retailPrice": 13.5})
    state.catalogue.set_location(strain.id, "GBR", {"stockQuantity": 495})
    await poll(Tier.STRAINS)
    state.catalogue.remove(strain.id)
    await poll(Tier.STRAINS)


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _contract_breaks(event: dict[str, Any]) -> list[str]:
    """What in ``event`` breaks the contract (empty when it holds)."""
    obj, previous = event["data"]["object"], event["data"]["previous"]
    problems = []
    for key, before in previous.items():
        if not isinstance(obj, dict) or key not in obj:
            problems.append(f"{event['type']}: previous.{key} is not a field of object")
        elif _json_type(before) != _json_type(obj[key]):
            problems.append(
                f"{event['type']}: previous.{key} is {_json_type(before)} {before!r}, "
                f"object.{key} is {_json_type(obj[key])} {obj[key]!r}"
            )
    return problems


async def _refused_key(world: World) -> None:
    """The holder's key refused, then working again: the two operational events."""
    runner = TierRunner(
        {"shop": world.poller}, world.store, world.clock,
        dict.fromkeys(TIERS, Timing(interval_s=60, jitter=0, backoff_base_s=5, backoff_max_s=60)),
        random.Random(7), unauthorized_retry_s=300,
    )  # fmt: skip
    world.state.revoke_holder_key("shop")
    await runner.run("shop", Tier.ACTIVE_ORDERS)
    world.state.restore_holder_key("shop")
    world.clock.advance(3600)
    await runner.run("shop", Tier.ACTIVE_ORDERS)


async def _every_type(world: World) -> list[dict[str, Any]]:
    """Every event type, from real tier runs against the sandbox; the events logged."""
    for tier in (Tier.ACTIVE_ORDERS, Tier.PENDING_KYC):
        await world.poll(tier)  # the first sync: what exists is taken as it is
    for scenario in (_orders, _clients, _commissions, _strains, _refused_key):
        await scenario(world)
    return await world.store.events(limit=0)


class TestPreviousMatchesObject:
    @pytest.mark.timeout(30)
    async def test_every_event_type(self, make_world: Callable[..., Any]) -> None:
        """For every event type, each key of previous is a field of object of the same type."""
        events = await _every_type(await make_world(first_sync="seed"))
        assert {e["type"] for e in events} == EVERY_TYPE | set(HOLDER_TYPES)
        assert [p for e in events for p in _contract_breaks(e)] == []

    async def test_strain_stock_is_the_countrys(self, make_world: Callable[..., Any]) -> None:
        """A strain's stock in previous and object is its country's stock, as an integer."""
        world: World = await make_world()
        await world.poll(Tier.STRAINS)
        strain = world.state.catalogue.create("Kush", locations={"GBR": 300, "ZAF": 588})
        await world.poll(Tier.STRAINS)
        world.state.catalogue.set_location(strain.id, "GBR", {"stockQuantity": 495})
        await world.poll(Tier.STRAINS)
        [updated] = await world.store.events(patterns=["strain.updated"])
        assert updated["data"]["previous"] == {"stockQuantity": 300}
        assert updated["data"]["object"]["stockQuantity"] == 495

    def test_holder_events_carry_no_previous(self) -> None:
        """Operational events have an empty previous, so they cannot mislead a diff."""
        for kind in HOLDER_TYPES:
            event = envelope(
                holder="main",
                resource=Resource("holder", "main"),
                sequence=1,
                change=Change(kind, {}),
                observed_at=FakeClock().now(),
                obj={"name": "main"},
            )
            assert _contract_breaks(event) == []
            assert event["data"]["previous"] == {}


class TestIsoMs:
    @pytest.mark.parametrize(
        ("moment", "text"),
        [
            (datetime(2026, 11, 23, 10, 0, 3, 512999, tzinfo=UTC), "2026-11-23T10:00:03.512Z"),
            (datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC), "2026-11-23T10:00:03.000Z"),
            (
                datetime(2026, 11, 23, 11, 0, 3, 7000, tzinfo=timezone(timedelta(hours=1))),
                "2026-11-23T10:00:03.007Z",
            ),
        ],
    )
    def test_utc_with_milliseconds(self, moment: datetime, text: str) -> None:
        """Timestamps read as Dr Green writes them: UTC, milliseconds cut (not rounded), Z."""
        assert iso_ms(moment) == text


class TestEventsMatchTheirSchemas:
    @pytest.mark.timeout(30)
    async def test_every_type_from_real_tier_runs(self, make_world: Callable[..., Any]) -> None:
        """Every type the code emits, from real tier runs, matches the envelope and data schemas."""
        events = await _every_type(await make_world(first_sync="seed"))
        assert {e["type"] for e in events} == set(EVENT_TYPES)
        assert [p for e in events for p in problems(e)] == []

    async def test_first_sync_emit_matches(self, make_world: Callable[..., Any]) -> None:
        """The *.created events of first_sync = "emit" match their schemas too."""
        world: World = await make_world(first_sync="emit")
        world.state.orders.create("shop")
        world.state.clients.create("shop")
        world.state.catalogue.create("Emit Kush", locations={"GBR": 10})
        for tier in (Tier.ACTIVE_ORDERS, Tier.PENDING_KYC, Tier.STRAINS, Tier.COMMISSIONS):
            await world.poll(tier)
        events = await world.store.events(limit=0)
        assert {"order.created", "client.created", "strain.created"} <= {e["type"] for e in events}
        assert [p for e in events for p in problems(e)] == []
