"""Orders of the sandbox world: checkout from a cart, direct creation, lookup, removal, raw sets.

Owns how an order comes to exist (from a cart with Dr Green's checks, or directly in any
consistent state) and how it is forced or dropped by the control API. Transitions of existing
orders are ``lifecycle.py``'s. It must not know about HTTP or JSON shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from drgreen_poller.sandbox.world.catalogue import Catalogue
from drgreen_poller.sandbox.world.clients import Clients
from drgreen_poller.sandbox.world.commissions import Commissions
from drgreen_poller.sandbox.world.inputs import (
    as_bool,
    as_list,
    as_non_negative,
    as_opt_str,
    as_str,
    as_time,
)
from drgreen_poller.sandbox.world.model import (
    APPROVALS,
    DOCS_PAYMENT_STATUSES,
    ORDER_STATUSES,
    PAID_STATUSES,
    SOURCE_PAYMENT_STATUSES,
    Client,
    Converter,
    InvalidInput,
    LogEntry,
    Order,
    OrderLine,
    ServiceRefusal,
    StateConflict,
    Strain,
    Transaction,
    UnknownEntity,
    apply_patch,
)
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

DEFAULT_DELIVERY_FEE = 6
STATUS_ACTIVITY: Mapping[str, str] = {
    "PROCESSING": "Processing",
    "SHIPPED": "Shipped",
    "DELIVERED": "Delivered",
    "CANCELLED": "Cancelled",
}
ORDER_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "orderStatus": ("order_status", as_str),
    "paymentStatus": ("payment_status", as_str),
    "adminApproval": ("admin_approval", as_str),
    "invoiceNumber": ("invoice_number", as_str),
    "rejectionNote": ("rejection_note", as_opt_str),
    "commissionPaid": ("commission_paid", as_bool),
    "commissionTransactionHash": ("commission_transaction_hash", as_opt_str),
    "verifiedAt": ("verified_at", lambda v, n: None if v is None else as_time(v, n)),
    "rejectedAt": ("rejected_at", lambda v, n: None if v is None else as_time(v, n)),
    "createdAt": ("created_at", as_time),
    "updatedAt": ("updated_at", as_time),
    "nonce": ("nonce", as_opt_str),
    "deliveryFee": ("delivery_fee", as_non_negative),
    "totalAmount": ("total_amount", as_non_negative),
    "agentProfit": ("agent_profit", as_non_negative),
}


class Orders:
    """The order rules, over the world's shared tables, with the parts an order draws on."""

    def __init__(
        self, tables: Tables, catalogue: Catalogue, clients: Clients, commissions: Commissions
    ) -> None:
        self._t = tables
        self._catalogue = catalogue
        self._clients = clients
        self._commissions = commissions

    def get(self, order_id: str) -> Order:
        """The order with that id, whoever holds it.

        Raises:
            UnknownEntity: no such order.
        """
        try:
            return self._t.orders[order_id.lower()]
        except KeyError:
            raise UnknownEntity("order", order_id) from None

    def of(self, holder: HolderRef) -> list[Order]:
        """The holder's orders in creation order."""
        return self._t.holder_orders[self._t.holder(holder).name]

    def add_transaction(
        self, order: Order, method: str, when: datetime, status: str = "COMPLETED"
    ) -> Transaction:
        """Record a payment processor's report on ``order`` (a completed payment by default)."""
        crypto = method == "CRYPTO"
        transaction = Transaction(
            id=self._t.new_id(),
            client_id=order.client_id,
            method=method,
            amount=order.total_amount,
            created_at=when,
            status=status,
            invoice=order.invoice_number,
            description=f"Payment for order {order.invoice_number}",
            destination="0x" + self._t.random_hex(40) if crypto else "sandbox-merchant-account",
        )
        order.transactions.append(transaction)
        return transaction

    def _store_order(
        self, client: Client, lines: list[OrderLine], when: datetime, delivery_fee: float
    ) -> Order:
        total = sum(line.retail_price * line.quantity for line in lines)
        profit = sum((line.retail_price - line.wholesale_price) * line.quantity for line in lines)
        order = Order(
            id=self._t.new_id(),
            holder=client.holder,
            seq=self._t.next_seq(),
            client_id=client.id,
            shipping_id=client.shippings[0].id if client.shippings else None,
            invoice_number=f"DG_{int(when.timestamp() * 1000)}{client.id}",
            agent_profit=round(profit, 6),
            total_amount=round(total, 6),
            created_at=when,
            updated_at=when,
            lines=lines,
            delivery_fee=delivery_fee,
        )
        self._t.orders[order.id] = order
        self._t.holder_orders[client.holder].append(order)
        return order

    # --- POST /dapp/orders ---------------------------------------------------------------------

    def checkout(self, holder: HolderRef, client_id: str) -> Order:
        """Turn the client's cart into an order, as ``POST /dapp/orders`` does (§3.5).

        Raises:
            ServiceRefusal: with the status and message of the first failing precondition.
        """
        client = self._clients.held(holder, client_id)
        if client is None:
            raise ServiceRefusal(400, "Client is not found")
        if not client.is_active:
            raise ServiceRefusal(400, "Client is not active")
        if not client.is_kyc_verified:
            raise ServiceRefusal(409, "Client is not KYC verified")
        if client.admin_approval != "VERIFIED":
            raise ServiceRefusal(409, f"Approval is {client.admin_approval} by admin")
        if not client.cart:
            raise ServiceRefusal(409, "Client does not have any item in the cart")
        country = self._clients.shipping_country(client)
        lines: list[OrderLine] = []
        for strain_id, quantity in client.cart.items():
            strain = self._catalogue.get(strain_id, include_removed=True)
            self._check_orderable(strain, country, quantity)
            lines.append(
                OrderLine(strain.id, quantity, strain.retail_price, strain.wholesale_price)
            )
        when = self._t.now()
        order = self._store_order(client, lines, when, DEFAULT_DELIVERY_FEE)
        for line in lines:
            self._catalogue.take_stock(
                self._t.strains[line.strain_id], country, line.quantity, when
            )
        client.cart.clear()
        return order

    @staticmethod
    def _check_orderable(strain: Strain, country: str, quantity: float) -> None:
        spot = strain.locations.get(country)
        if strain.deleted or not strain.is_available or spot is None or not spot.is_available:
            raise ServiceRefusal(409, f"{strain.name} is not available")
        if not strain.is_active or not spot.is_active:
            raise ServiceRefusal(409, f"{strain.name} is not active")
        if spot.stock_quantity < quantity:
            raise ServiceRefusal(409, f"{strain.name} does not enough quantity")

    # --- direct creation (control API) ---------------------------------------------------------

    def create(
        self,
        holder: HolderRef,
        *,
        client_id: str | None = None,
        items: Mapping[str, float] | None = None,
        created_at: datetime | None = None,
        admin_approval: str = "PENDING",
        payment_status: str = "PENDING",
        order_status: str = "PENDING",
        delivery_fee: float = DEFAULT_DELIVERY_FEE,
    ) -> Order:
        """Create an order directly, in any consistent state, without cart or stock checks.

        Args:
            holder: whose order it is.
            client_id: the holder's client; else the first eligible client, created if needed.
            items: strain id → grams; else 10 g of the first strain (created if needed).
            created_at: backdate the order; its approval and status steps happen at that time.
            admin_approval: PENDING, VERIFIED or REJECTED.
            payment_status: PENDING or a paid value (PAID/COMPLETED accrue the commission), or
                any value of either vocabulary.
            order_status: any orderStatus; other than PENDING needs ``admin_approval`` VERIFIED.
            delivery_fee: the order detail's ``deliveryFee``.
        """
        self._check_initial(admin_approval, payment_status, order_status)
        client = self._client_for_order(holder, client_id)
        lines = self._lines_for(items)
        when = created_at if created_at is not None else self._t.now()
        order = self._store_order(client, lines, when, as_non_negative(delivery_fee, "deliveryFee"))
        if admin_approval == "VERIFIED":
            order.admin_approval, order.verified_at = "VERIFIED", when
            order.logs.append(LogEntry("Approved", when))
        elif admin_approval == "REJECTED":
            order.admin_approval, order.rejected_at = "REJECTED", when
            order.logs.append(LogEntry("Rejected", when))
        if order_status != "PENDING":
            order.order_status = order_status
            order.logs.append(LogEntry(STATUS_ACTIVITY[order_status], when))
        order.payment_status = payment_status
        if payment_status in PAID_STATUSES:
            self.add_transaction(order, "CRYPTO", when)
            self._commissions.accrue_order(holder, order.id, order.agent_profit, when)
        return order

    def create_many(
        self, holder: HolderRef, count: int, *, spacing_s: float = 0, **options: Any
    ) -> list[Order]:
        """Create ``count`` orders like ``create``; each ``spacing_s`` later than the last.

        ``options`` are ``create``'s keyword arguments.
        """
        start = options.pop("created_at", None) or self._t.now()
        step = timedelta(seconds=spacing_s)
        return [self.create(holder, created_at=start + step * i, **options) for i in range(count)]

    @staticmethod
    def _check_initial(admin_approval: str, payment_status: str, order_status: str) -> None:
        if admin_approval not in APPROVALS:
            raise InvalidInput(f"adminApproval must be one of: {', '.join(APPROVALS)}")
        payments = dict.fromkeys([*SOURCE_PAYMENT_STATUSES, *DOCS_PAYMENT_STATUSES])
        if payment_status not in payments:
            raise InvalidInput(f"paymentStatus must be one of: {', '.join(payments)}")
        if order_status not in ORDER_STATUSES:
            raise InvalidInput(f"orderStatus must be one of: {', '.join(ORDER_STATUSES)}")
        if order_status != "PENDING" and admin_approval != "VERIFIED":
            raise InvalidInput(
                "orderStatus other than PENDING needs adminApproval VERIFIED "
                "(PATCH the order to force an inconsistent state)"
            )

    def _client_for_order(self, holder: HolderRef, client_id: str | None) -> Client:
        if client_id is not None:
            client = self._clients.held(holder, client_id)
            if client is None:
                raise UnknownEntity(f"client of holder {self._t.holder(holder).name!r}", client_id)
            return client
        for client in self._clients.of(holder):
            if client.is_kyc_verified and client.admin_approval == "VERIFIED" and client.is_active:
                return client
        return self._clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")

    def _lines_for(self, items: Mapping[str, float] | None) -> list[OrderLine]:
        if not items:
            catalogue = self._catalogue.listed()
            strain = (
                catalogue[0]
                if catalogue
                else self._catalogue.create("Sandbox Kush", locations={"GBR": 1000})
            )
            items = {strain.id: 10}
        lines = []
        for strain_id, quantity in items.items():
            strain = self._catalogue.get(strain_id, include_removed=True)
            amount = as_non_negative(quantity, f"quantity of {strain_id}")
            lines.append(OrderLine(strain.id, amount, strain.retail_price, strain.wholesale_price))
        return lines

    # --- removal and raw sets (control API) ----------------------------------------------------

    def delete(self, order_id: str) -> Order:
        """Remove an order from its holder's lists and from detail, as if Dr Green dropped it.

        Raises:
            UnknownEntity: no such order.
            StateConflict: the order has a commission (which would then point at nothing).
        """
        order = self.get(order_id)
        if self._commissions.of_order(order.id) is not None:
            raise StateConflict(f"order {order.id} has a commission; only unpaid orders vanish")
        del self._t.orders[order.id]
        self._t.holder_orders[order.holder].remove(order)
        return order

    def patch(self, order_id: str, changes: Mapping[str, Any]) -> Order:
        """Force raw field values with no side effects (any status string), bumping ``updatedAt``.

        Raises:
            InvalidInput: an unknown field or a wrong type.
        """
        order = self.get(order_id)
        fields = {k: v for k, v in changes.items() if k != "transactions"}
        raw = changes.get("transactions")
        methods = (
            None
            if raw is None
            else [as_str(m, "transactions") for m in as_list(raw, "transactions")]
        )
        apply_patch(order, ORDER_FIELDS, fields)
        if methods is not None:
            # Raw sets replace the order's completed payments, one per method given.
            order.transactions = []
            for method in methods:
                self.add_transaction(order, method, self._t.now())
        if "updatedAt" not in changes:
            order.updated_at = self._t.now()
        return order
