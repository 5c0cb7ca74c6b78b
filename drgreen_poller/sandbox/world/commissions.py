"""Commissions of the sandbox world: accrual when an order is paid, payment, ETH conversion.

Owns commission rows, their PENDING → PAID step and the cached ETH rate. It must not decide when
an order counts as paid (the order lifecycle calls ``accrue``) nor know about HTTP.
"""

from __future__ import annotations

from datetime import datetime

from drgreen_poller.sandbox.world.inputs import as_number
from drgreen_poller.sandbox.world.model import (
    Commission,
    InvalidInput,
    StateConflict,
    UnknownEntity,
)
from drgreen_poller.sandbox.world.tables import HolderRef, Tables


class Commissions:
    """The commission rules, over the world's shared tables."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def get(self, commission_id: str) -> Commission:
        """The commission with that id.

        Raises:
            UnknownEntity: no such commission.
        """
        try:
            return self._t.commissions[commission_id.lower()]
        except KeyError:
            raise UnknownEntity("commission", commission_id) from None

    def accrue(
        self,
        holder: HolderRef,
        amount_usd: float,
        *,
        order_id: str | None = None,
        created_at: datetime | None = None,
        user_id: str | None = None,
    ) -> Commission:
        """Add a PENDING commission of ``amount_usd`` on the holder's NFT (optionally for an
        order), owed to the holder or, with ``user_id``, to one of its managers.

        Raises:
            InvalidInput: the amount is not a number ≥ 0.
            UnknownEntity: the holder or the order does not exist.
        """
        owner = self._t.holder(holder)
        amount = as_number(amount_usd, "amountInDollar")
        if amount < 0:
            raise InvalidInput("amountInDollar must not be negative")
        if order_id is not None and order_id.lower() not in self._t.orders:
            raise UnknownEntity("order", order_id)
        when = created_at if created_at is not None else self._t.now()
        commission = Commission(
            id=self._t.new_id(),
            holder=owner.name,
            seq=self._t.next_seq(),
            user_id=user_id or owner.user_id,
            order_id=None if order_id is None else order_id.lower(),
            amount_in_dollar=round(amount, 6),
            created_at=when,
            updated_at=when,
        )
        self._t.commissions[commission.id] = commission
        self._t.holder_commissions[owner.name].append(commission)
        if commission.order_id is not None:
            self._t.order_commissions[commission.order_id] = commission
        return commission

    def accrue_order(
        self, holder: HolderRef, order_id: str, profit_usd: float, when: datetime
    ) -> Commission:
        """Share a paid order's profit: each sharing manager gets its percent, the holder the
        rest (accrued last: it is the commission ``of_order`` returns)."""
        rest = profit_usd
        for manager in self._t.holder_managers[self._t.holder(holder).name]:
            if manager.associated and manager.is_active:
                share = profit_usd * manager.commission_percent / 100
                self.accrue(holder, share, order_id=order_id, created_at=when, user_id=manager.id)
                rest -= share
        return self.accrue(holder, rest, order_id=order_id, created_at=when)

    def of_order(self, order_id: str) -> Commission | None:
        """The commission accrued for an order, if any."""
        return self._t.order_commissions.get(order_id.lower())

    def pay(self, commission_id: str) -> Commission:
        """Pay a PENDING commission out to the holder (with a made-up transaction hash).

        Raises:
            StateConflict: it is already PAID.
        """
        commission = self.get(commission_id)
        if commission.payment_status == "PAID":
            raise StateConflict(f"commission {commission.id} is already PAID")
        when = self._t.now()
        commission.payment_status = "PAID"
        commission.transaction_hash = "0x" + self._t.random_hex(64)
        commission.updated_at = when
        order = None if commission.order_id is None else self._t.orders.get(commission.order_id)
        if order is not None:
            order.commission_paid = True
            order.commission_transaction_hash = commission.transaction_hash
            order.updated_at = when
        return commission

    def totals(self, holder: HolderRef) -> dict[str, float]:
        """USD owed per commission status for the holder's NFT (PENDING and PAID)."""
        totals = {"PENDING": 0.0, "PAID": 0.0}
        for commission in self.of(holder):
            if commission.payment_status in totals:
                totals[commission.payment_status] += commission.amount_in_dollar
        return totals

    def of(self, holder: HolderRef) -> list[Commission]:
        """The holder's commissions in creation order."""
        return self._t.holder_commissions[self._t.holder(holder).name]

    @property
    def eth_per_usd(self) -> float:
        """The cached ETH price, in ETH per USD."""
        return self._t.eth_per_usd

    def set_eth_rate(self, eth_per_usd: float) -> None:
        """Set the cached ETH price, in ETH per USD, used for ``amountInEth``."""
        rate = as_number(eth_per_usd, "ethPerUsd")
        if rate <= 0:
            raise InvalidInput("ethPerUsd must be greater than 0")
        self._t.eth_per_usd = rate

    def usd_to_eth(self, amount_usd: float) -> float:
        """``amount_usd`` in ETH at the cached rate, rounded to 6 decimal places."""
        return round(amount_usd * self._t.eth_per_usd, 6)
