"""Change detection: previous snapshot + newly fetched record → the events it implies. Pure.

Owns the lifecycle knowledge of design §3.6: which field moves mean which event, the order of
several events revealed by one poll (``inferred`` on steps not seen), unknown enum values as
``*_changed`` events, and the rule that a field a response lacks is never a change. It does no
I/O, reads no clock and assigns no ids or sequence numbers (the store does, transactionally).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drgreen_poller.models import Client, CommissionSummary, Order, Strain

Snapshot = dict[str, Any]

PAID_STATUSES = frozenset({"PAID", "COMPLETED"})
# orderStatus in lifecycle order; CANCELLED stands apart (docs only, no source path).
ORDER_STATUS_RANK = {"PENDING": 0, "PROCESSING": 1, "SHIPPED": 2, "DELIVERED": 3}
ORDER_TERMINAL_STATUSES = frozenset({"DELIVERED", "CANCELLED"})
# What Dr Green creates: the baseline a first-seen record is compared with.
ORDER_BASELINE: Snapshot = {
    "orderStatus": "PENDING",
    "adminApproval": "PENDING",
    "paymentStatus": "PENDING",
}
CLIENT_BASELINE: Snapshot = {
    "isKYCVerified": False,
    "adminApproval": "PENDING",
    "isActive": False,
    "kycCompleted": False,
}
STRAIN_FIELDS = ("retailPrice", "stockQuantity", "isAvailable", "isActive")
# Amounts in USD are compared at this precision (sub-cent float noise is not a change).
USD_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Change:
    """One event to emit, before the store gives it an id and a sequence number."""

    type: str
    previous: Mapping[str, Any]
    inferred: bool = False
    occurred_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Detection:
    """What one record implies: the events in order, and the snapshot to store."""

    changes: list[Change]
    snapshot: Snapshot


def _merge(previous: Snapshot, observed: Mapping[str, Any]) -> Snapshot:
    """The new snapshot: observed fields replace old ones; a field not observed keeps its value."""
    merged = dict(previous)
    merged.update({k: v for k, v in observed.items() if v is not None})
    return merged


# --- orders ------------------------------------------------------------------------------------


def _approval_changes(old: Snapshot, new: Snapshot, occurred_at: str | None) -> list[Change]:
    before, after = old.get("adminApproval"), new.get("adminApproval")
    if after == before:
        return []
    previous = {"adminApproval": before}
    kind = {"VERIFIED": "order.approved", "REJECTED": "order.rejected"}.get(
        after or "", "order.approval_changed"
    )
    return [Change(kind, previous, occurred_at=occurred_at)]


def _payment_changes(old: Snapshot, new: Snapshot, occurred_at: str | None) -> list[Change]:
    before, after = old.get("paymentStatus"), new.get("paymentStatus")
    if after == before:
        return []
    previous = {"paymentStatus": before}
    if after in PAID_STATUSES and before not in PAID_STATUSES:
        kind = "order.paid"
    elif after == "FAILED":
        kind = "order.payment_failed"
    elif after == "REFUNDED":
        kind = "order.refunded"
    else:
        kind = "order.payment_status_changed"
    return [Change(kind, previous, occurred_at=occurred_at)]


def _status_changes(old: Snapshot, new: Snapshot, occurred_at: str | None) -> list[Change]:
    before, after = old.get("orderStatus"), new.get("orderStatus")
    if after == before:
        return []
    previous = {"orderStatus": before}
    rank_before = ORDER_STATUS_RANK.get(before or "", -1)
    rank_after = ORDER_STATUS_RANK.get(after or "", -1)
    if after == "CANCELLED":
        return [Change("order.cancelled", previous, occurred_at=occurred_at)]
    if rank_after < 1 or 0 <= rank_after <= rank_before:  # back to PENDING, unknown, regression
        return [Change("order.status_changed", previous, occurred_at=occurred_at)]
    changes = []
    # Shipping is implied by a delivery only when the step before is known to precede it.
    if after == "DELIVERED" and 0 <= rank_before < ORDER_STATUS_RANK["SHIPPED"]:
        # A delivered order was shipped, even if no poll ever saw it SHIPPED.
        changes.append(Change("order.shipped", previous, inferred=True))
    kind = {"PROCESSING": "order.processing", "SHIPPED": "order.shipped"}.get(
        after or "", "order.delivered"
    )
    changes.append(Change(kind, previous, occurred_at=occurred_at))
    return changes


def _implied_approval(old: Snapshot, observed: Mapping[str, Any], new: Snapshot) -> Snapshot:
    """Fulfilment moves only on approved orders: a status move with approval unseen implies it."""
    if (
        observed.get("adminApproval") is None
        and old.get("adminApproval") == "PENDING"
        and ORDER_STATUS_RANK.get(new.get("orderStatus") or "", 0) > 0
        and new.get("orderStatus") != old.get("orderStatus")
    ):
        return {**new, "adminApproval": "VERIFIED"}
    return new


def detect_order(previous: Snapshot | None, order: Order) -> Detection:
    """Events for an order given its snapshot (``None``: first seen, compared with creation).

    Events come in lifecycle order: approval, payment, fulfilment.
    """
    old = dict(ORDER_BASELINE) if previous is None else previous
    observed = {
        "orderStatus": order.order_status,
        "adminApproval": order.admin_approval,
        "paymentStatus": order.payment_status,
    }
    new = _implied_approval(old, observed, _merge(old, observed))
    changes = []
    if previous is None:
        changes.append(Change("order.created", {}, occurred_at=order.created_at))
    approval = _approval_changes(old, new, order.raw.get("verifiedAt") or order.updated_at)
    if approval and observed["adminApproval"] is None:
        approval = [Change(c.type, c.previous, inferred=True) for c in approval]
    changes += approval
    changes += _payment_changes(old, new, order.updated_at)
    changes += _status_changes(old, new, order.updated_at)
    return Detection(changes, new)


def order_is_terminal(snapshot: Mapping[str, Any], terminal_statuses: frozenset[str]) -> bool:
    """Whether an order has left the active set: rejected, or a terminal ``orderStatus``."""
    return (
        snapshot.get("adminApproval") == "REJECTED"
        or snapshot.get("orderStatus") in terminal_statuses
    )


# --- clients -----------------------------------------------------------------------------------


def detect_client(previous: Snapshot | None, client: Client) -> Detection:
    """Events for a client: KYC verified, approval, completion (both gates), activation."""
    old = dict(CLIENT_BASELINE) if previous is None else previous
    observed = {
        "isKYCVerified": client.is_kyc_verified,
        "adminApproval": client.admin_approval,
        "isActive": client.is_active,
    }
    new = _merge(old, observed)
    changes = (
        [Change("client.created", {}, occurred_at=client.created_at)] if previous is None else []
    )
    if new["isKYCVerified"] != old["isKYCVerified"]:
        kind = "client.kyc.verified" if new["isKYCVerified"] else "client.kyc.verification_changed"
        changes.append(
            Change(kind, {"isKYCVerified": old["isKYCVerified"]}, occurred_at=client.updated_at)
        )
    if new["adminApproval"] != old["adminApproval"]:
        kind = {"VERIFIED": "client.kyc.approved", "REJECTED": "client.kyc.rejected"}.get(
            new["adminApproval"], "client.kyc.approval_changed"
        )
        when = client.verified_at if kind == "client.kyc.approved" else client.updated_at
        changes.append(
            Change(
                kind, {"adminApproval": old["adminApproval"]}, occurred_at=when or client.updated_at
            )
        )
    if (
        not old.get("kycCompleted")
        and new["isKYCVerified"] is True
        and new["adminApproval"] == "VERIFIED"
    ):
        new["kycCompleted"] = True
        changes.append(Change("client.kyc.completed", {}, occurred_at=client.updated_at))
    if new["isActive"] != old["isActive"]:
        kind = "client.activated" if new["isActive"] else "client.deactivated"
        changes.append(Change(kind, {"isActive": old["isActive"]}, occurred_at=client.updated_at))
    return Detection(changes, new)


def client_is_terminal(snapshot: Mapping[str, Any]) -> bool:
    """KYC-complete (both gates) or rejected: nothing more to wait for."""
    return bool(snapshot.get("kycCompleted")) or snapshot.get("adminApproval") == "REJECTED"


# --- commissions -------------------------------------------------------------------------------


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, USD_DECIMALS)


def detect_commissions(previous: Snapshot | None, summary: CommissionSummary) -> Detection:
    """``commission.accrued`` when the USD total rises, ``commission.paid`` when PAID rises.

    The first observation only records a baseline. A fall of the total (an adjustment on Dr
    Green's side) is ``commission.adjusted``. ETH amounts are ignored: they drift with the price.
    """
    observed = {"totalUsd": _usd(summary.total_usd), "paidUsd": _usd(summary.paid_usd)}
    if previous is None:
        return Detection([], _merge({}, observed))
    new = _merge(previous, observed)
    changes = []
    for key, rise, fall in (
        ("totalUsd", "commission.accrued", "commission.adjusted"),
        ("paidUsd", "commission.paid", None),
    ):
        before, after = previous.get(key), new.get(key)
        if before is None or after is None or after == before or (after < before and fall is None):
            continue
        amounts = {
            "currency": "USD",
            "previous": before,
            "current": after,
            "delta": round(after - before, USD_DECIMALS),
        }
        kind = rise if after > before else str(fall)
        changes.append(Change(kind, {key: before}, extra={"amounts": amounts}))
    return Detection(changes, new)


# --- strains -----------------------------------------------------------------------------------


def detect_strain(previous: Snapshot | None, strain: Strain) -> Detection:
    """``strain.created`` when new in a country's catalogue, ``strain.updated`` on a change."""
    observed = {
        "retailPrice": strain.retail_price,
        "stockQuantity": strain.stock_quantity,
        "isAvailable": strain.is_available,
        "isActive": strain.is_active,
    }
    if previous is None:
        return Detection([Change("strain.created", {})], _merge({}, observed))
    new = _merge(previous, observed)
    changed = [k for k in STRAIN_FIELDS if new.get(k) != previous.get(k)]
    if not changed:
        return Detection([], new)
    before = {k: previous.get(k) for k in changed}
    return Detection([Change("strain.updated", before, extra={"changed": changed})], new)


def strain_removed(previous: Snapshot) -> Change:
    """``strain.removed``: a complete sweep of a country's catalogue no longer lists it."""
    return Change("strain.removed", {k: previous.get(k) for k in STRAIN_FIELDS})
