"""Commissions of the sandbox world: accrual when an order is paid, payment, ETH conversion.

Owns commission rows and their PENDING → PAID step. It must not decide when an order counts as
paid (the order rules call ``accrue_commission``) nor know about HTTP.
"""

from __future__ import annotations

from datetime import datetime

from drgreen_poller.sandbox.carts import CartRules
from drgreen_poller.sandbox.inputs import as_number
from drgreen_poller.sandbox.model import (
    Commission,
    InvalidInput,
    StateConflict,
    UnknownEntity,
)
from drgreen_poller.sandbox.world import HolderRef


class CommissionRules(CartRules):
    """Commission rules; extended by the order rules."""

    def commission(self, commission_id: str) -> Commission:
        """The commission with that id.

        Raises:
            UnknownEntity: no such commission.
        """
        try:
            return self.commissions[commission_id.lower()]
        except KeyError:
            raise UnknownEntity("commission", commission_id) from None

    def accrue_commission(
        self,
        holder: HolderRef,
        amount_usd: float,
        *,
        order_id: str | None = None,
        created_at: datetime | None = None,
    ) -> Commission:
        """Add a PENDING commission of ``amount_usd`` for the holder (optionally for an order).

        Raises:
            InvalidInput: the amount is not a number ≥ 0.
            UnknownEntity: the holder or the order does not exist.
        """
        owner = self.holder(holder)
        amount = as_number(amount_usd, "amountInDollar")
        if amount < 0:
            raise InvalidInput("amountInDollar must not be negative")
        if order_id is not None and order_id.lower() not in self.orders:
            raise UnknownEntity("order", order_id)
        when = created_at if created_at is not None else self.now()
        commission = Commission(
            id=self.new_id(),
            holder=owner.name,
            seq=self.next_seq(),
            user_id=owner.user_id,
            order_id=None if order_id is None else order_id.lower(),
            amount_in_dollar=round(amount, 6),
            created_at=when,
            updated_at=when,
        )
        self.commissions[commission.id] = commission
        self._holder_commissions[owner.name].append(commission)
        if commission.order_id is not None:
            self._order_commissions[commission.order_id] = commission
        return commission

    def order_commission(self, order_id: str) -> Commission | None:
        """The commission accrued for an order, if any."""
        return self._order_commissions.get(order_id.lower())

    def pay_commission(self, commission_id: str) -> Commission:
        """Pay a PENDING commission out to the holder (with a made-up transaction hash).

        Raises:
            StateConflict: it is already PAID.
        """
        commission = self.commission(commission_id)
        if commission.payment_status == "PAID":
            raise StateConflict(f"commission {commission.id} is already PAID")
        when = self.now()
        commission.payment_status = "PAID"
        commission.transaction_hash = "0x" + self.random_hex(64)
        commission.updated_at = when
        order = None if commission.order_id is None else self.orders.get(commission.order_id)
        if order is not None:
            order.commission_paid = True
            order.commission_transaction_hash = commission.transaction_hash
            order.updated_at = when
        return commission

    def commission_totals(self, holder: HolderRef) -> dict[str, float]:
        """USD owed per commission status for the holder's NFT (PENDING and PAID)."""
        totals = {"PENDING": 0.0, "PAID": 0.0}
        for commission in self.holder_commissions(holder):
            if commission.payment_status in totals:
                totals[commission.payment_status] += commission.amount_in_dollar
        return totals

    def usd_to_eth(self, amount_usd: float) -> float:
        """``amount_usd`` in ETH at the cached rate, rounded to 6 decimal places."""
        return round(amount_usd * self.eth_per_usd, 6)
