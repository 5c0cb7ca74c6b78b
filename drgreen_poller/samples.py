"""Sample events for ``drgreen-poller trigger``: one of each type, as the poller would commit it.

Owns what a sample says: a made-up resource (id ``test_`` + random hex, so it never moves a
real resource's sequence), a record shaped like Dr Green's with the fields the type moved, the
same ``previous`` and extras the change detection gives, and the ``test`` mark. Pure apart from
the random id; it must not store or send anything (``trigger`` does).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from drgreen_poller.changes import Change
from drgreen_poller.contract import known_type
from drgreen_poller.events import Resource, iso_ms
from drgreen_poller.store import Observation

TEST_ID_PREFIX = "test_"
# The field a type moves, and the values it moves from and to.
MOVES: dict[str, tuple[str, Any, Any]] = {
    "order.approved": ("adminApproval", "PENDING", "VERIFIED"),
    "order.rejected": ("adminApproval", "PENDING", "REJECTED"),
    "order.approval_changed": ("adminApproval", "PENDING", "ON_REVIEW"),
    "order.paid": ("paymentStatus", "PENDING", "PAID"),
    "order.payment_failed": ("paymentStatus", "PENDING", "FAILED"),
    "order.refunded": ("paymentStatus", "PAID", "REFUNDED"),
    "order.payment_status_changed": ("paymentStatus", "PAID", "PENDING"),
    "order.processing": ("orderStatus", "PENDING", "PROCESSING"),
    "order.shipped": ("orderStatus", "PROCESSING", "SHIPPED"),
    "order.delivered": ("orderStatus", "SHIPPED", "DELIVERED"),
    "order.cancelled": ("orderStatus", "PENDING", "CANCELLED"),
    "order.status_changed": ("orderStatus", "PROCESSING", "PENDING"),
    "client.kyc.verified": ("isKYCVerified", False, True),
    "client.kyc.verification_changed": ("isKYCVerified", True, False),
    "client.kyc.approved": ("adminApproval", "PENDING", "VERIFIED"),
    "client.kyc.rejected": ("adminApproval", "PENDING", "REJECTED"),
    "client.kyc.approval_changed": ("adminApproval", "PENDING", "ON_REVIEW"),
    "client.activated": ("isActive", False, True),
    "client.deactivated": ("isActive", True, False),
    "commission.accrued": ("totalUsd", 16.09, 28.59),
    "commission.adjusted": ("totalUsd", 28.59, 16.09),
    "commission.paid": ("paidUsd", 3.59, 16.09),
    "strain.updated": ("retailPrice", 10, 12.5),
}
# Fulfilment and payment move on approved orders; an order on its way was paid.
_APPROVED_FIRST = frozenset({"paymentStatus", "orderStatus"})
_PAID_FIRST = frozenset({"order.processing", "order.shipped", "order.delivered"})


def _order(ref: str, event_type: str, stamp: str) -> dict[str, Any]:
    order = {
        "id": ref, "invoiceNumber": f"DG_{ref}", "orderStatus": "PENDING",
        "adminApproval": "PENDING", "paymentStatus": "PENDING", "totalAmount": 65,
        "totalQuantity": 15, "totalPrice": 65, "createdAt": stamp, "updatedAt": stamp,
        "client": {"id": f"{TEST_ID_PREFIX}client", "firstName": "Test", "lastName": "Customer"},
    }  # fmt: skip
    if event_type in MOVES and MOVES[event_type][0] in _APPROVED_FIRST:
        order["adminApproval"] = "VERIFIED"
    if event_type in _PAID_FIRST:
        order["paymentStatus"] = "PAID"
    return order


def _client(ref: str, event_type: str, stamp: str) -> dict[str, Any]:
    complete = event_type == "client.kyc.completed"
    return {
        "id": ref, "firstName": "Test", "lastName": "Customer", "email": "test@example.com",
        "isActive": True, "adminApproval": "VERIFIED" if complete else "PENDING",
        "isKYCVerified": complete, "createdAt": stamp, "updatedAt": stamp,
    }  # fmt: skip


def _commission(ref: str, event_type: str, stamp: str) -> dict[str, Any]:
    return {
        "PENDING": {"amountInDollar": 12.5, "amountInEth": 0.004},
        "PAID": {"amountInDollar": 3.59, "amountInEth": 0.001149},
        "totalInDollar": 16.09, "totalUsd": 16.09, "paidUsd": 3.59,
    }  # fmt: skip


def _strain(ref: str, event_type: str, stamp: str) -> dict[str, Any]:
    return {
        "id": ref, "name": "Test Strain", "type": "Hybrid", "thc": 22.5, "cbd": 0.1,
        "retailPrice": 10, "stockQuantity": 300, "isAvailable": True, "isActive": True,
        "strainLocations": [{"isActive": True, "isAvailable": True, "stockQuantity": 300}],
    }  # fmt: skip


def _holder(ref: str, event_type: str, stamp: str) -> dict[str, Any]:
    return {"name": ref}


_RECORDS = {
    "order": _order, "client": _client, "commission": _commission, "strain": _strain,
    "poller": _holder,
}  # fmt: skip


def _change(event_type: str, obj: dict[str, Any], occurred_at: str | None) -> Change:
    """The change, with what change detection would put in ``previous`` and the extras."""
    extra: dict[str, Any] = {}
    if event_type == "strain.removed":
        gone = {k: obj[k] for k in ("retailPrice", "stockQuantity", "isAvailable", "isActive")}
        return Change(event_type, gone, test=True)
    if event_type == "poller.holder_unauthorized":
        extra = {"status": 401, "message": "Unauthorized", "tier": "active_orders"}
    if event_type not in MOVES:
        return Change(event_type, {}, occurred_at=occurred_at, extra=extra, test=True)
    key, before, after = MOVES[event_type]
    obj[key] = after
    if event_type.startswith("commission."):
        delta = round(after - before, 6)
        extra = {"amounts": {"currency": "USD", "previous": before, "current": after,
                             "delta": delta}}  # fmt: skip
        if key == "paidUsd":
            obj["PAID"]["amountInDollar"] = after
        else:
            obj["totalInDollar"] = after
    if event_type == "strain.updated":
        extra = {"changed": [key]}
    return Change(
        event_type, {key: before}, occurred_at=occurred_at, extra=extra, current={key: after},
        test=True,
    )  # fmt: skip


def sample(event_type: str, *, holder: str, country: str, now: datetime) -> Observation:
    """A test event of ``event_type`` about a new made-up resource, ready to commit.

    Raises:
        ConfigError: an unknown type.
    """
    family = known_type(event_type).split(".", 1)[0]
    ref = TEST_ID_PREFIX + secrets.token_hex(8)
    stamp = iso_ms(now)
    obj = _RECORDS[family](ref, event_type, stamp)
    upstream_time = family in ("order", "client")
    change = _change(event_type, obj, stamp if upstream_time else None)
    kind = "holder" if family == "poller" else family
    resource = Resource(kind, ref, country if kind == "strain" else None)
    return Observation(resource, {"test": True}, tier=None, obj=obj, changes=[change])
