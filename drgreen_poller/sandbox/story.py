"""The demo's automatic story: customers sign up and order, admins approve, orders ship.

Owns choosing the next plausible step for one holder's world (a pure function of the state and a
seeded generator) and running steps on the injected clock at a chosen speed. Every change goes
through the public methods of the world's parts, exactly as a test would make it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from drgreen_poller.clock import Clock
from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.world.model import (
    PAID_STATUSES,
    HolderInfo,
    InvalidInput,
    ServiceRefusal,
)

STEP_INTERVAL_S = 5.0
Step = Callable[[SandboxState, HolderInfo, random.Random], str | None]


def _sign_up(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    country = rng.choice(("GBR", "GBR", "GBR", "PRT", "ZAF"))
    client = state.clients.create(holder, country_code=country)
    return f"client {client.id} signed up ({country})"


def _pass_kyc(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    waiting = [c for c in state.clients.of(holder) if not c.is_kyc_verified]
    if not waiting:
        return None
    client = state.clients.verify_kyc(rng.choice(waiting).id)
    return f"client {client.id} passed KYC"


def _review_client(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    waiting = [
        c for c in state.clients.of(holder)
        if c.is_kyc_verified and c.admin_approval == "PENDING"
    ]  # fmt: skip
    if not waiting:
        return None
    client = rng.choice(waiting)
    if rng.random() < 0.1:
        state.clients.reject(client.id, "documents could not be verified")
        return f"client {client.id} rejected"
    state.clients.approve(client.id)
    return f"client {client.id} approved"


def _place_order(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    eligible = [
        c for c in state.clients.of(holder)
        if c.is_kyc_verified and c.admin_approval == "VERIFIED" and c.is_active
    ]  # fmt: skip
    if not eligible:
        return None
    client = rng.choice(eligible)
    country = state.clients.shipping_country(client)
    orderable = [s for s in state.catalogue.listed() if state.catalogue.orderable_at(s, country)]
    if not orderable:
        return None
    strain = rng.choice(orderable)
    try:
        state.carts.add(holder, client.cart_id, [(strain.id, float(rng.choice((2, 5, 10))))])
        order = state.orders.checkout(holder, client.id)
    except ServiceRefusal:
        client.cart.clear()
        return None
    return f"order {order.id} placed by client {client.id}"


def _review_order(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    waiting = [o for o in state.orders.of(holder) if o.admin_approval == "PENDING"]
    if not waiting:
        return None
    order = rng.choice(waiting)
    if rng.random() < 0.1:
        state.lifecycle.reject(order.id, "prescription could not be confirmed")
        return f"order {order.id} rejected"
    state.lifecycle.approve(order.id)
    return f"order {order.id} approved"


def _pay(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    unpaid = [
        o for o in state.orders.of(holder)
        if o.admin_approval == "VERIFIED" and o.payment_status not in PAID_STATUSES
    ]  # fmt: skip
    if not unpaid:
        return None
    order = state.lifecycle.pay(rng.choice(unpaid).id)
    return f"order {order.id} paid"


def _fulfil(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    moving = [
        o for o in state.orders.of(holder)
        if o.payment_status in PAID_STATUSES and o.admin_approval == "VERIFIED"
        and o.order_status in ("PENDING", "PROCESSING", "SHIPPED")
    ]  # fmt: skip
    if not moving:
        return None
    order = rng.choice(moving)
    following = {"PENDING": "PROCESSING", "PROCESSING": "SHIPPED", "SHIPPED": "DELIVERED"}
    target = following[order.order_status]
    if target == "PROCESSING" and rng.random() < 0.5:
        target = "SHIPPED"  # steps may be skipped
    moves = {"PROCESSING": state.lifecycle.process, "SHIPPED": state.lifecycle.ship}
    moves["DELIVERED"] = state.lifecycle.deliver
    moves[target](order.id)
    return f"order {order.id} {target.lower()}"


def _pay_commission(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    payable = [
        c for c in state.commissions.of(holder)
        if c.payment_status == "PENDING" and c.order_id is not None
        and state.tables.orders[c.order_id].order_status == "DELIVERED"
    ]  # fmt: skip
    if not payable:
        return None
    commission = state.commissions.pay(rng.choice(payable).id)
    return f"commission {commission.id} paid"


def _adjust_catalogue(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str | None:
    strains = state.catalogue.listed()
    if not strains:
        return None
    strain = rng.choice(strains)
    price = round(strain.retail_price * rng.choice((0.9, 1.1)), 2)
    state.catalogue.update(strain.id, {"retailPrice": max(price, strain.wholesale_price)})
    return f"strain {strain.id} repriced to {price}"


# (step, weight): later lifecycle steps are likelier, so stories move forward.
STEPS: tuple[tuple[Step, int], ...] = (
    (_sign_up, 2),
    (_pass_kyc, 3),
    (_review_client, 3),
    (_place_order, 4),
    (_review_order, 4),
    (_pay, 4),
    (_fulfil, 5),
    (_pay_commission, 1),
    (_adjust_catalogue, 1),
)


def story_step(state: SandboxState, holder: HolderInfo, rng: random.Random) -> str:
    """Make one plausible change to the holder's world and say what it was.

    Steps that have nothing to act on are skipped; signing a customer up always works.
    """
    steps = [step for step, _ in STEPS]
    weights = [weight for _, weight in STEPS]
    for step in rng.choices(steps, weights=weights, k=len(steps)):
        done = step(state, holder, rng)  # steps only pick moves the rules allow
        if done is not None:
            return done
    return str(_sign_up(state, holder, rng))


async def run_story(
    state: SandboxState,
    holder: HolderInfo,
    *,
    speed: float = 1.0,
    clock: Clock | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """Run ``story_step`` every ``STEP_INTERVAL_S / speed`` seconds until cancelled.

    Args:
        state: the world.
        holder: whose customers and orders the story is about.
        speed: how many times faster than one step per ``STEP_INTERVAL_S``.
        clock: what to sleep on (the state's clock by default).
        seed: the story's random seed.
        on_step: called with each step's description.
    """
    if speed <= 0:
        raise InvalidInput("speed must be greater than 0")
    rng = random.Random(seed)
    sleeper = clock if clock is not None else state.clock
    while True:
        await sleeper.sleep(STEP_INTERVAL_S / speed)
        description = story_step(state, holder, rng)
        if on_step is not None:
            on_step(description)
