"""The order lifecycle of §4.1: admin approval, payment and fulfilment of existing orders.

Owns the three independent status fields and every transition an admin, a payment webhook or a
courier makes: approval sets ``verifiedAt`` and logs "Approved"; ``orderStatus`` moves forward
only while VERIFIED and stops at DELIVERED/CANCELLED; paying accrues the commission; payment may
regress; forbidden transitions are 409s. It must not create orders nor know about HTTP.
"""

from __future__ import annotations

from datetime import datetime

from drgreen_poller.sandbox.world.commissions import Commissions
from drgreen_poller.sandbox.world.inputs import as_str
from drgreen_poller.sandbox.world.model import (
    ORDER_STATUS_NEXT,
    PAID_STATUSES,
    TERMINAL_ORDER_STATUSES,
    LogEntry,
    Order,
    StateConflict,
)
from drgreen_poller.sandbox.world.orders import STATUS_ACTIVITY, Orders
from drgreen_poller.sandbox.world.settings import SandboxSettings
from drgreen_poller.sandbox.world.tables import Tables


class OrderLifecycle:
    """Transitions of existing orders, over the world's shared tables.

    Payment words follow the settings' vocabulary; a first payment accrues the commission.
    """

    def __init__(
        self,
        tables: Tables,
        orders: Orders,
        commissions: Commissions,
        settings: SandboxSettings,
    ) -> None:
        self._t = tables
        self._orders = orders
        self._commissions = commissions
        self._settings = settings

    def _touch_order(self, order: Order, activity: str | None = None) -> datetime:
        when = self._t.now()
        order.updated_at = when
        if activity is not None:
            order.logs.append(LogEntry(activity, when))
        return when

    # --- admin approval ------------------------------------------------------------------------

    def approve(self, order_id: str) -> Order:
        """Admin approval: VERIFIED, ``verifiedAt`` now, log "Approved" (no precondition)."""
        order = self._orders.get(order_id)
        order.verified_at = self._touch_order(order, "Approved")
        order.admin_approval = "VERIFIED"
        return order

    def reject(self, order_id: str, note: str | None = None) -> Order:
        """Admin rejection: REJECTED, ``rejectedAt`` now, ``rejectionNote``."""
        order = self._orders.get(order_id)
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
        order = self._orders.get(order_id)
        value = as_str(status, "paymentStatus")
        was_paid = order.payment_status in PAID_STATUSES
        order.payment_status = value
        when = self._touch_order(order, "Paid" if value in PAID_STATUSES else None)
        if value in PAID_STATUSES and not was_paid and self._commissions.of_order(order.id) is None:
            self._commissions.accrue_order(order.holder, order.id, order.agent_profit, when)
        return order

    def pay(self, order_id: str, method: str = "CRYPTO") -> Order:
        """A completed payment: PAID (COMPLETED in the docs vocabulary) plus a transaction.

        Raises:
            StateConflict: the order is already paid.
        """
        order = self._orders.get(order_id)
        if order.payment_status in PAID_STATUSES:
            raise StateConflict(f"order {order.id} is already {order.payment_status}")
        self._orders.add_transaction(order, as_str(method, "method"), self._t.now())
        return self.set_payment_status(order.id, self._settings.paid_status)

    def unpay(self, order_id: str) -> Order:
        """A later non-paid webhook: ``paymentStatus`` regresses to PENDING."""
        return self.set_payment_status(order_id, "PENDING")

    def fail_payment(self, order_id: str) -> Order:
        """A failed payment: FAILED in the docs vocabulary, PENDING in the source's."""
        failed = "FAILED" if self._settings.payment_vocabulary == "docs" else "PENDING"
        return self.set_payment_status(order_id, failed)

    def refund(self, order_id: str) -> Order:
        """A refund: REFUNDED, which exists only in the docs vocabulary.

        Raises:
            StateConflict: the source vocabulary is selected (it has no refund).
        """
        if self._settings.payment_vocabulary != "docs":
            raise StateConflict(
                "REFUNDED exists only in the docs payment vocabulary: set "
                'payment_vocabulary to "docs", or PATCH paymentStatus to force a raw value'
            )
        return self.set_payment_status(order_id, "REFUNDED")

    # --- fulfilment ----------------------------------------------------------------------------

    def _move(self, order_id: str, target: str) -> Order:
        order = self._orders.get(order_id)
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

    def process(self, order_id: str) -> Order:
        """Fulfilment starts: PROCESSING."""
        return self._move(order_id, "PROCESSING")

    def ship(self, order_id: str) -> Order:
        """Handed to the courier: SHIPPED."""
        return self._move(order_id, "SHIPPED")

    def deliver(self, order_id: str) -> Order:
        """Delivered (terminal); the order's commission becomes payable."""
        return self._move(order_id, "DELIVERED")

    def cancel(self, order_id: str) -> Order:
        """Cancelled (terminal; a docs-only status)."""
        return self._move(order_id, "CANCELLED")
