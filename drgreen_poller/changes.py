"""Change detection: previous snapshot + newly fetched record → the events it implies. Pure.

Owns the lifecycle knowledge of design §3.6: which field moves mean which event, the order of
several events revealed by one poll (``inferred`` on steps not seen), unknown enum values as
``*_changed`` events, and the rule that a field a response lacks is never a change. It does no
I/O, reads no clock and assigns no ids or sequence numbers (the store does, transactionally).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
# stockQuantity is the stock of the strain's country (the resource is per country).
STRAIN_FIELDS = ("retailPrice", "stockQuantity", "isAvailable", "isActive")
# The summary's USD totals, as events show them in data.object beside Dr Green's fields.
COMMISSION_FIELDS = ("totalUsd", "paidUsd")
# Amounts in USD are compared at this precision (sub-cent float noise is not a change).
USD_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Change:
    """One event to emit, before the store gives it a sequence number and so an id.

    ``previous`` holds the fields the event moved from and ``current`` the values it moved
    to (same keys); the event id is derived from ``current``, so it names the transition.
    """

    type: str
    previous: Mapping[str, Any]
    inferred: bool = False
    occurred_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    current: Mapping[str, Any] = field(default_factory=dict)
    # A sample sent by ``drgreen-poller trigger``: the envelope says ``"test": true``.
    test: bool = False


def _step(kind: str, key: str, before: Any, after: Any, *, occurred_at: str | None) -> Change:
    """A change of one field from ``before`` to ``after``."""
    return Change(kind, {key: before}, occurred_at=occurred_at, current={key: after})


@dataclass(frozen=True, slots=True)
class Detection:
    """What one record implies: the events in order, and the snapshot to store.

    ``shown`` holds the snapshot's values as events show them in ``data.object`` (normalized
    names and types), so every key of an event's ``data.previous`` is a field of
    ``data.object`` with the same meaning and JSON type.
    """

    changes: list[Change]
    snapshot: Snapshot
    shown: Snapshot = field(default_factory=dict)


def _shown(snapshot: Snapshot, keys: Iterable[str]) -> Snapshot:
    """The snapshot's known values of ``keys``, as ``data.object`` shows them."""
    return {k: snapshot[k] for k in keys if snapshot.get(k) is not None}


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
    kind = {"VERIFIED": "order.approved", "REJECTED": "order.rejected"}.get(
        after or "", "order.approval_changed"
    )
    return [_step(kind, "adminApproval", before, after, occurred_at=occurred_at)]


def _payment_changes(old: Snapshot, new: Snapshot, occurred_at: str | None) -> list[Change]:
    before, after = old.get("paymentStatus"), new.get("paymentStatus")
    if after == before:
        return []
    if after in PAID_STATUSES and before not in PAID_STATUSES:
        kind = "order.paid"
    elif after == "FAILED":
        kind = "order.payment_failed"
    elif after == "REFUNDED":
        kind = "order.refunded"
    else:
        kind = "order.payment_status_changed"
    return [_step(kind, "paymentStatus", before, after, occurred_at=occurred_at)]


def _status_changes(old: Snapshot, new: Snapshot, occurred_at: str | None) -> list[Change]:
    before, after = old.get("orderStatus"), new.get("orderStatus")
    if after == before:
        return []
    rank_before = ORDER_STATUS_RANK.get(before or "", -1)
    rank_after = ORDER_STATUS_RANK.get(after or "", -1)
    if after == "CANCELLED":
        return [_step("order.cancelled", "orderStatus", before, after, occurred_at=occurred_at)]
    if rank_after < 1 or 0 <= rank_after <= rank_before:  # back to PENDING, unknown, regression
        return [
            _step("order.status_changed", "orderStatus", before, after, occurred_at=occurred_at)
        ]
    changes = []
    # Shipping is implied by a delivery only when the step before is known to precede it.
    if after == "DELIVERED" and 0 <= rank_before < ORDER_STATUS_RANK["SHIPPED"]:
        # A delivered order was shipped, even if no poll ever saw it SHIPPED: the inferred
        # step moved to SHIPPED; the delivery then moved from SHIPPED.
        shipped = _step("order.shipped", "orderStatus", before, "SHIPPED", occurred_at=None)
        changes.append(replace(shipped, inferred=True))
        before = "SHIPPED"
    kind = {"PROCESSING": "order.processing", "SHIPPED": "order.shipped"}.get(
        after or "", "order.delivered"
    )
    changes.append(_step(kind, "orderStatus", before, after, occurred_at=occurred_at))
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
        approval = [replace(c, inferred=True, occurred_at=None) for c in approval]
    changes += approval
    changes += _payment_changes(old, new, order.updated_at)
    changes += _status_changes(old, new, order.updated_at)
    return Detection(changes, new, _shown(new, ORDER_BASELINE))


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
            _step(kind, "isKYCVerified", old["isKYCVerified"], new["isKYCVerified"],
                  occurred_at=client.updated_at)
        )  # fmt: skip
    if new["adminApproval"] != old["adminApproval"]:
        kind = {"VERIFIED": "client.kyc.approved", "REJECTED": "client.kyc.rejected"}.get(
            new["adminApproval"], "client.kyc.approval_changed"
        )
        when = client.verified_at if kind == "client.kyc.approved" else client.updated_at
        changes.append(
            _step(kind, "adminApproval", old["adminApproval"], new["adminApproval"],
                  occurred_at=when or client.updated_at)
        )  # fmt: skip
    if (
        not old.get("kycCompleted")
        and new["isKYCVerified"] is True
        and new["adminApproval"] == "VERIFIED"
    ):
        new["kycCompleted"] = True
        changes.append(Change("client.kyc.completed", {}, occurred_at=client.updated_at))
    if new["isActive"] != old["isActive"]:
        kind = "client.activated" if new["isActive"] else "client.deactivated"
        changes.append(
            _step(kind, "isActive", old["isActive"], new["isActive"], occurred_at=client.updated_at)
        )
    return Detection(changes, new, _shown(new, ("isKYCVerified", "adminApproval", "isActive")))


def client_is_terminal(snapshot: Mapping[str, Any]) -> bool:
    """KYC-complete (both gates) or rejected: nothing more to wait for."""
    return bool(snapshot.get("kycCompleted")) or snapshot.get("adminApproval") == "REJECTED"


# --- commissions -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A number as JSON shows it plainly: integral values as integers (495, not 495.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _usd(value: float | None) -> float | int | None:
    return None if value is None else _plain(round(value, USD_DECIMALS))


def detect_commissions(previous: Snapshot | None, summary: CommissionSummary) -> Detection:
    """``commission.accrued`` when the USD total rises, ``commission.paid`` when PAID rises.

    The first observation only records a baseline. A fall of the total (an adjustment on Dr
    Green's side) is ``commission.adjusted``. ETH amounts are ignored: they drift with the price.
    """
    observed = {"totalUsd": _usd(summary.total_usd), "paidUsd": _usd(summary.paid_usd)}
    if previous is None:
        new = _merge({}, observed)
        return Detection([], new, _shown(new, COMMISSION_FIELDS))
    new = _merge({k: _plain(v) for k, v in previous.items()}, observed)
    changes = []
    for key, rise, fall in (
        ("totalUsd", "commission.accrued", "commission.adjusted"),
        ("paidUsd", "commission.paid", None),
    ):
        before, after = _plain(previous.get(key)), new.get(key)
        if before is None or after is None or after == before or (after < before and fall is None):
            continue
        amounts = {
            "currency": "USD",
            "previous": before,
            "current": after,
            "delta": _plain(round(after - before, USD_DECIMALS)),
        }
        kind = rise if after > before else str(fall)
        changes.append(
            Change(kind, {key: before}, extra={"amounts": amounts}, current={key: after})
        )
    return Detection(changes, new, _shown(new, COMMISSION_FIELDS))


# --- strains -----------------------------------------------------------------------------------


def detect_strain(previous: Snapshot | None, strain: Strain) -> Detection:
    """``strain.created`` when new in a country's catalogue, ``strain.updated`` on a change."""
    observed = {
        "retailPrice": _plain(strain.retail_price),
        "stockQuantity": _plain(strain.stock_quantity),
        "isAvailable": strain.is_available,
        "isActive": strain.is_active,
    }
    if previous is None:
        new = _merge({}, observed)
        return Detection([Change("strain.created", {})], new, _shown(new, STRAIN_FIELDS))
    old = {k: _plain(v) for k, v in previous.items()}
    new = _merge(old, observed)
    changed = [k for k in STRAIN_FIELDS if new.get(k) != old.get(k)]
    before = {k: old.get(k) for k in changed}
    after = {k: new.get(k) for k in changed}
    changes = (
        [Change("strain.updated", before, extra={"changed": changed}, current=after)]
        if changed
        else []
    )
    return Detection(changes, new, _shown(new, STRAIN_FIELDS))


def strain_removed(previous: Snapshot) -> Change:
    """``strain.removed``: a complete sweep of a country's catalogue no longer lists it."""
    return Change("strain.removed", {k: _plain(previous.get(k)) for k in STRAIN_FIELDS})
