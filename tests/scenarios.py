"""Stories that make the poller emit every event type: real tier runs against the sandbox
(``World``), and a holder's key refused then working again. The event contract's tests and the
TypeScript receiver's types check what they produce."""

from __future__ import annotations

import random
from typing import Any

from drgreen_poller.runner import TierRunner
from drgreen_poller.scheduler import Timing
from drgreen_poller.tiers import TIERS, Tier
from tests.conftest import World

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


async def orders_scenario(world: World) -> None:
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


async def clients_scenario(world: World) -> None:
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


async def commissions_scenario(world: World) -> None:
    state, poll = world.state, world.poll
    await poll(Tier.COMMISSIONS)
    commission = state.commissions.accrue("shop", 120.5)
    await poll(Tier.COMMISSIONS)
    state.commissions.pay(commission.id)
    await poll(Tier.COMMISSIONS)
    commission.amount_in_dollar = 100  # Dr Green corrected it: the total falls
    await poll(Tier.COMMISSIONS)


async def strains_scenario(world: World) -> None:
    state, poll = world.state, world.poll
    await poll(Tier.STRAINS)
    strain = state.catalogue.create("Contract Kush", retail_price=12, locations={"GBR": 300})
    await poll(Tier.STRAINS)
    state.catalogue.update(strain.id, {"retailPrice": 13.5})
    state.catalogue.set_location(strain.id, "GBR", {"stockQuantity": 495})
    await poll(Tier.STRAINS)
    state.catalogue.remove(strain.id)
    await poll(Tier.STRAINS)


async def refused_key_scenario(world: World) -> None:
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


async def every_event(world: World) -> list[dict[str, Any]]:
    """Every event type, from real tier runs against the sandbox and a refused key; the
    events logged."""
    for tier in (Tier.ACTIVE_ORDERS, Tier.PENDING_KYC):
        await world.poll(tier)  # the first sync: what exists is taken as it is
    for scenario in (
        orders_scenario,
        clients_scenario,
        commissions_scenario,
        strains_scenario,
        refused_key_scenario,
    ):
        await scenario(world)
    return await world.store.events(limit=0)
