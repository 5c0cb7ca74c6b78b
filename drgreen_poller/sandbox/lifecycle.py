"""The order lifecycle of §4.1: admin approval, payment, fulfilment, and raw overrides.

Owns every transition an admin, a payment webhook or a courier makes to an existing order, and
the 409 answers for transitions the rules forbid. It must not create orders nor know about HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drgreen_poller.sandbox.inputs import as_str
from drgreen_poller.sandbox.model import (
    ORDER_STATUS_NEXT,
    PAID_STATUSES,
    TERMINAL_ORDER_STATUSES,
    LogEntry,
    Order,
    StateConflict,
    apply_patch,
)
from drgreen_poller.sandbox.orders import ORDER_FIELDS, STATUS_ACTIVITY, OrderRules


class OrderLifecycle(OrderRules):
    """Transitions of existing orders."""

    def _touch_order(self, order: Order, activity: str | None = None) -> datetime:
        when = self.now()
        order.updated_at = when
        if activity is not None:
            order.logs.append(LogEntry(activity, when))
        return when

    # --- admin approval ------------------------------------------------------------------------

    def approve_order(self, order_id: str) -> Order:
        """Admin approval: VERIFIED, ``verifiedAt`` now, log "Approved" (no precondition)."""
        order = self.order(order_id)
        order.verified_at = self._touch_order(order, "Approved")
        order.admin_approval = "VERIFIED"
        return order

    def reject_order(self, order_id: str, note: str | None = None) -> Order:
        """Admin rejection: REJECTED, ``rejectedAt`` now, ``rejectionNote``."""
        order = self.order(order_id)
        order.rejected_at = self._touch_order(order, "Rejected")
        order.admin_approval = "REJECTED"
        order.rejection_note = note
        return order

    # --- payment -------------------------------------------------------------------------------

    def set_payment_status(self, order_id: str, status: str) -> Order:
        """Write ``paymentStatus`` as a payment webhook would; becoming paid accrues commission.

        Any string is accepted (``ON_HOLD`` included), so clients can be tested against values
        they do not know. A commission is accrued once per order, at its first payment.
        """
        order = self.order(order_id)
        value = as_str(status, "paymentStatus")
        was_paid = order.payment_status in PAID_STATUSES
        order.payment_status = value
        when = self._touch_order(order, "Paid" if value in PAID_STATUSES else None)
        if value in PAID_STATUSES and not was_paid and self.order_commission(order.id) is None:
            self.accrue_commission(
                order.holder, order.agent_profit, order_id=order.id, created_at=when
            )
        return order

    def pay_order(self, order_id: str, method: str = "CRYPTO") -> Order:
        """A completed payment: PAID (COMPLETED in the docs vocabulary) plus a transaction.

        Raises:
            StateConflict: the order is already paid.
        """
        order = self.order(order_id)
        if order.payment_status in PAID_STATUSES:
            raise StateConflict(f"order {order.id} is already {order.payment_status}")
        order.transactions.append(as_str(method, "method"))
        return self.set_payment_status(order.id, self.settings.paid_status)

    def unpay_order(self, order_id: str) -> Order:
        """A later non-paid webhook: ``paymentStatus`` regresses to PENDING."""
        return self.set_payment_status(order_id, "PENDING")

    def fail_payment(self, order_id: str) -> Order:
        """A failed payment: FAILED in the docs vocabulary, PENDING in the source's."""
        failed = "FAILED" if self.settings.payment_vocabulary == "docs" else "PENDING"
        return self.set_payment_status(order_id, failed)

    def refund_order(self, order_id: str) -> Order:
        """A refund: REFUNDED, which exists only in the docs vocabulary.

        Raises:
            StateConflict: the source vocabulary is selected (it has no refund).
        """
        if self.settings.payment_vocabulary != "docs":
            raise StateConflict(
                "REFUNDED exists only in the docs payment vocabulary: set "
                'payment_vocabulary to "docs", or PATCH paymentStatus to force a raw value'
            )
        return self.set_payment_status(order_id, "REFUNDED")

    # --- fulfilment ----------------------------------------------------------------------------

    def _move(self, order_id: str, target: str) -> Order:
        order = self.order(order_id)
        if order.admin_approval != "VERIFIED":
            raise StateConflict(
                f"order {order.id} has adminApproval {order.admin_approval}: orderStatus "
                "changes only apply to VERIFIED orders (approve it first)"
            )
        if order.order_status in TERMINAL_ORDER_STATUSES:
            raise StateConflict(f"order {order.id} is {order.order_status}, which is terminal")
        if target not in ORDER_STATUS_NEXT.get(order.order_status, frozenset()):
            raise StateConflict(f"order {order.id} cannot go from {order.order_status} to {target}")
        self._touch_order(order, STATUS_ACTIVITY[target])
        order.order_status = target
        return order

    def process_order(self, order_id: str) -> Order:
        """Fulfilment starts: PROCESSING."""
        return self._move(order_id, "PROCESSING")

    def ship_order(self, order_id: str) -> Order:
        """Handed to the courier: SHIPPED."""
        return self._move(order_id, "SHIPPED")

    def deliver_order(self, order_id: str) -> Order:
        """Delivered (terminal); the order's commission becomes payable."""
        return self._move(order_id, "DELIVERED")

    def cancel_order(self, order_id: str) -> Order:
        """Cancelled (terminal; a docs-only status)."""
        return self._move(order_id, "CANCELLED")

    def delete_order(self, order_id: str) -> Order:
        """Remove an order from its holder's lists and from detail, as if Dr Green dropped it.

        Raises:
            UnknownEntity: no such order.
            StateConflict: the order has a commission (which would then point at nothing).
        """
        order = self.order(order_id)
        if self.order_commission(order.id) is not None:
            raise StateConflict(f"order {order.id} has a commission; only unpaid orders vanish")
        del self.orders[order.id]
        self._holder_orders[order.holder].remove(order)
        return order

    def patch_order(self, order_id: str, changes: Mapping[str, Any]) -> Order:
        """Force raw field values with no side effects (any status string), bumping ``updatedAt``.

        Raises:
            InvalidInput: an unknown field or a wrong type.
        """
        order = self.order(order_id)
        apply_patch(order, ORDER_FIELDS, changes)
        if "updatedAt" not in changes:
            order.updated_at = self.now()
        return order
