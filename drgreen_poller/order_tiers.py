"""The order tiers (design §3.3, §3.4): ``active_orders`` and ``stale_orders``.

Owns which orders each tier reads (one newest-first sweep of the list for the active tier, which
also discovers new orders; one sweep per status filter for the stale tier), the order-detail
fallback for a tracked order no sweep reached, and which tier an order belongs to once seen. It
writes nothing and never retries; an upstream error other than a 403/404 for one order
propagates to the poller.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from drgreen_poller.changes import Snapshot, detect_order, order_is_terminal
from drgreen_poller.errors import UpstreamNotFound, UpstreamUnauthorized
from drgreen_poller.events import Resource
from drgreen_poller.models import Order
from drgreen_poller.store import Entity, Observation
from drgreen_poller.sweeps import TRACKED_MARK, TierRead, leaving, observation, previous, sweep
from drgreen_poller.tiers import Tier

log = structlog.get_logger(__name__)

# orderStatus values the list endpoint's ``status`` filter accepts (anything else is a 400).
FILTERABLE_STATUSES = frozenset({"PENDING", "PROCESSING", "SHIPPED", "DELIVERED"})
# Dr Green's "authenticated, but not this holder's resource" (docs 04-errors).
FORBIDDEN = 403


async def observe_active_orders(run: TierRead) -> list[Observation]:
    """Sweep the order list newest first until every active order is seen; new ones too."""
    tracked = {
        e.resource.id: e
        for e in await run.store.entities(run.holder, kind="order", tier=Tier.ACTIVE_ORDERS)
    }
    pages = run.api.order_pages(take=run.settings.take)
    seen, stored = await sweep(run, pages, "order", tracked, discover=True, full=run.first_sync)
    observations = [
        o
        for order in seen.values()
        if (
            o := _order_observation(
                run, order, stored.get(order.id), silent=run.seeding and order.id not in stored
            )
        )
    ]
    missing = [tracked[i] for i in tracked if i not in seen]
    return observations + await _fallbacks(run, missing)


async def observe_stale_orders(run: TierRead) -> list[Observation]:
    """One filtered sweep per status the stale orders were last seen in; detail for the rest."""
    tracked = await run.store.entities(run.holder, kind="order", tier=Tier.STALE_ORDERS)
    by_status: dict[str, dict[str, Entity]] = {}
    missing: list[Entity] = []
    for entity in tracked:
        status = str(entity.snapshot.get("orderStatus") or "PENDING")
        if status in FILTERABLE_STATUSES:
            by_status.setdefault(status, {})[entity.resource.id] = entity
        else:
            missing.append(entity)  # Dr Green refuses a filter on a value it does not know
    observations: list[Observation] = []
    for status, entities in sorted(by_status.items()):
        pages = run.api.order_pages(take=run.settings.take, status=status)
        seen, _ = await sweep(run, pages, "order", entities, discover=False, full=False)
        for order_id, entity in entities.items():
            if order_id in seen:
                if o := _order_observation(run, seen[order_id], entity, silent=False):
                    observations.append(o)
            else:
                missing.append(entity)  # left its status bucket: ask for it directly
    return observations + await _fallbacks(run, missing)


async def _fallbacks(run: TierRead, missing: list[Entity]) -> list[Observation]:
    """Order detail for tracked orders a sweep did not reach (detail lacks adminApproval).

    An order detail cannot show leaves the active set: gone (404, ``orderDetails: null``) or
    not this holder's (403, after this run's list call was accepted, so the key is fine).
    """
    observations = []
    for entity in missing[: run.settings.max_detail_fallbacks]:
        try:
            order = await run.api.order(entity.resource.id)
        except (UpstreamNotFound, UpstreamUnauthorized) as exc:
            if isinstance(exc, UpstreamUnauthorized) and exc.status != FORBIDDEN:
                raise
            event = "order_vanished" if isinstance(exc, UpstreamNotFound) else "order_not_ours"
            log.warning(event, holder=run.holder, order_id=entity.resource.id)
            observations.append(leaving(entity))
            continue
        if o := _order_observation(run, order, entity, silent=False):
            observations.append(o)
    return observations


def _order_observation(
    run: TierRead, order: Order, stored: Entity | None, *, silent: bool
) -> Observation | None:
    created_at = order.created_at or (stored.created_at if stored else None)
    # Nothing detect_order could find (the common case) and the tier stays: nothing to store.
    if (
        stored is not None
        and _order_unchanged(stored.snapshot, order)
        and _order_tier(run, stored.snapshot, created_at) == stored.tier
    ):
        return None
    detection = detect_order(previous(stored), order)
    tier = _order_tier(run, detection.snapshot, created_at)
    return observation(
        Resource("order", order.id), detection, stored, tier, order.raw, created_at,
        silent=silent,
    )  # fmt: skip


def _order_tier(run: TierRead, snapshot: Snapshot, created_at: str | None) -> str | None:
    """The tier an order in this state belongs to; None once it is terminal."""
    if order_is_terminal(snapshot, run.settings.order_terminal_statuses):
        return None
    if snapshot.get("orderStatus") == "SHIPPED":
        return Tier.STALE_ORDERS  # kept, slowly, until delivered
    created = _parse_time(created_at)
    stale = created is not None and created < run.stale_cutoff
    return Tier.STALE_ORDERS if stale else Tier.ACTIVE_ORDERS


def _order_unchanged(snapshot: Snapshot, order: Order) -> bool:
    """Whether ``order`` shows nothing new against its stored snapshot: every status field it
    carries equals the stored one (a field it lacks is no change). ``detect_order`` would then
    find no event and return the same snapshot."""
    if TRACKED_MARK in snapshot:
        return False
    status, approval, payment = order.order_status, order.admin_approval, order.payment_status
    return (
        (status is None or snapshot.get("orderStatus") == status)
        and (approval is None or snapshot.get("adminApproval") == approval)
        and (payment is None or snapshot.get("paymentStatus") == payment)
    )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else None
