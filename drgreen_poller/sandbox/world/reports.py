"""Figures read from the world, as the backend's dashboard queries compute them: pure reads.

Owns the date windows and chart scales of the chart routes (``DATE_TRUNC`` by day, ISO week,
month or year; a window from the start date's midnight to the midnight after the end date,
both included), the approval breakdowns in percent, the sales funnel (derived from clients and
orders: the world stores no sales), revenue (today's retail price × quantity, as the backend's
joins read it) in total and per strain, a client's payment transactions and the commission
managers with their totals. It must not change anything nor know wire shapes
(``dapp/insights.py`` does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from drgreen_poller.sandbox.world.commissions import Commissions
from drgreen_poller.sandbox.world.model import (
    PAID_STATUSES,
    Client,
    Manager,
    Order,
    Strain,
    Transaction,
)
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

SCALES = ("DAY", "WEEK", "MONTH", "YEAR")
SALE_STAGES = ("ONGOING", "LEADS", "CLOSED")
SALE_NAMESPACE = uuid.UUID("5a1e5a1e-0000-4000-8000-000000000000")
# The breakdown's CASE: an approval outside these has no name (SQL NULL).
APPROVAL_NAMES = {"PENDING": "Pending", "VERIFIED": "Verified", "REJECTED": "Rejected"}
Point = tuple[datetime, float]


def _midnight(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """A chart's createdAt window: ``first`` ≤ t ≤ ``last`` (midnights, both included)."""

    first: datetime
    last: datetime
    scale: str

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Window:
        """The window of a ``startDate``/``endDate`` query, with the scale its length picks."""
        days = abs((_midnight(end) - _midnight(start)).days)
        scale = (
            "DAY" if days <= 30 else "WEEK" if days <= 90 else "MONTH" if days <= 730 else "YEAR"
        )
        return cls(_midnight(start), _midnight(end) + timedelta(days=1), scale)

    def holds(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in the window."""
        return self.first <= moment <= self.last

    def bucket(self, moment: datetime) -> datetime:
        """``DATE_TRUNC(scale, moment)``: the day, the ISO week's Monday, the month or year."""
        day = _midnight(moment)
        if self.scale == "DAY":
            return day
        if self.scale == "WEEK":
            return day - timedelta(days=day.weekday())
        return day.replace(day=1) if self.scale == "MONTH" else day.replace(month=1, day=1)

    def series(self, points: Iterable[Point]) -> list[Point]:
        """Sums per non-empty bucket of the points in the window, oldest bucket first."""
        sums: dict[datetime, float] = {}
        for moment, value in points:
            if self.holds(moment):
                key = self.bucket(moment)
                sums[key] = sums.get(key, 0) + value
        return sorted(sums.items())


def approval_shares(approvals: Sequence[str]) -> list[tuple[str | None, float]]:
    """Percent of rows per approval (Pending, Verified, Rejected), rounded half up to 0.01."""
    counts: dict[str | None, int] = {}
    for approval in approvals:
        name = APPROVAL_NAMES.get(approval)
        counts[name] = counts.get(name, 0) + 1
    order = [*APPROVAL_NAMES.values(), None]
    shares = []
    for name in sorted(counts, key=order.index):
        percent = Decimal(counts[name] * 100) / Decimal(len(approvals))
        shares.append((name, float(percent.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))))
    return shares


@dataclass(frozen=True, slots=True)
class StrainRevenue:
    """What one strain sold in paid, delivered orders."""

    strain: Strain
    grams: float

    @property
    def sales_usd(self) -> float:
        """Grams at today's retail price."""
        return self.strain.retail_price * self.grams


@dataclass(frozen=True, slots=True)
class Sale:
    """A step of the sales funnel: a client's lead, then one sale per order."""

    id: str
    client: Client
    order: Order | None
    stage: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ManagerRow:
    """A manager of a holder's NFT with what its commissions on the NFT's orders add up to."""

    manager: Manager
    commissions: int
    paid_usd: float
    pending_usd: float

    @property
    def active(self) -> bool:
        """Whether the manager is associated with the NFT (else it counts as inactive)."""
        return self.manager.associated


class Reports:
    """Read-only figures over the world's shared tables."""

    def __init__(self, tables: Tables, commissions: Commissions) -> None:
        self._t = tables
        self._commissions = commissions

    def _clients(self, holder: HolderRef) -> list[Client]:
        return self._t.holder_clients[self._t.holder(holder).name]

    def _orders(self, holder: HolderRef) -> list[Order]:
        return self._t.holder_orders[self._t.holder(holder).name]

    def client_rows(
        self, holder: HolderRef, window: Window, countries: Collection[str] | None
    ) -> list[Client]:
        """Clients created in the window; with ``countries``, once per address in one of them
        (the backend joins the addresses)."""
        rows = []
        for client in self._clients(holder):
            if not window.holds(client.created_at):
                continue
            if countries is None:
                rows.append(client)
            else:
                rows.extend(client for a in client.shippings if a.country_code in countries)
        return rows

    def order_rows(
        self, holder: HolderRef, window: Window, client_ids: Collection[str] | None
    ) -> list[Order]:
        """Orders created in the window, of the given clients only when ``client_ids`` is set."""
        return [
            order
            for order in self._orders(holder)
            if window.holds(order.created_at)
            and (client_ids is None or order.client_id in client_ids)
        ]

    def counts(self, rows: Iterable[Client | Order], window: Window) -> list[Point]:
        """Rows created per bucket of the window."""
        return window.series((row.created_at, 1) for row in rows)

    def profit(self, holder: HolderRef, window: Window) -> list[Point]:
        """The orders' ``agentProfit`` per bucket (every order, whatever its state)."""
        return window.series((o.created_at, o.agent_profit) for o in self._orders(holder))

    def revenue(
        self,
        holder: HolderRef,
        window: Window,
        client_ids: Collection[str] | None,
        countries: Collection[str] | None,
    ) -> list[Point]:
        """Sales of paid, delivered orders per bucket; with ``countries``, once per matching
        address of the order's client (the backend joins the addresses)."""
        points = []
        for order in self._settled_orders(holder, client_ids):
            copies = self._copies(order, countries, always_joined=False)
            points.extend([(order.created_at, self.sales_usd(order))] * copies)
        return window.series(points)

    def sales_usd(self, order: Order) -> float:
        """Σ today's retail price × quantity over the order's lines (what revenue joins read)."""
        strains = self._t.strains
        return sum(strains[line.strain_id].retail_price * line.quantity for line in order.lines)

    @staticmethod
    def _settled(order: Order) -> bool:
        return order.payment_status in PAID_STATUSES and order.order_status == "DELIVERED"

    def _settled_orders(self, holder: HolderRef, client_ids: Collection[str] | None) -> list[Order]:
        """Paid, delivered orders, of the given clients only when ``client_ids`` is set."""
        return [
            order
            for order in self._orders(holder)
            if self._settled(order) and (client_ids is None or order.client_id in client_ids)
        ]

    def _copies(
        self, order: Order, countries: Collection[str] | None, *, always_joined: bool
    ) -> int:
        """How many rows the order makes once its client's addresses are joined: one per
        address (in ``countries`` when given; at least one for a left join without filter)."""
        addresses = self._t.clients[order.client_id].shippings
        if countries is not None:
            return sum(1 for a in addresses if a.country_code in countries)
        return max(1, len(addresses)) if always_joined else 1

    def strain_revenue(
        self,
        holder: HolderRef,
        window: Window | None,
        client_ids: Collection[str] | None,
        countries: Collection[str] | None,
    ) -> list[StrainRevenue]:
        """Grams and sales per strain over paid, delivered orders, best selling first; each
        order counts once per address of its client (in ``countries`` when given), as the
        backend's join of the addresses does."""
        grams: dict[str, float] = {}
        for order in self._settled_orders(holder, client_ids):
            copies = self._copies(order, countries, always_joined=True)
            if window is not None and not window.holds(order.created_at):
                continue
            for line in order.lines:
                grams[line.strain_id] = grams.get(line.strain_id, 0) + line.quantity * copies
        grams = {strain_id: qty for strain_id, qty in grams.items() if qty}
        rows = [StrainRevenue(self._t.strains[sid], qty) for sid, qty in grams.items()]
        rows.sort(key=lambda row: (-row.sales_usd, row.strain.seq))
        return rows

    def sales_totals(self, holder: HolderRef) -> tuple[int, int]:
        """Sales of paid orders and of paid, delivered ones, each rounded to a whole number."""
        orders = self._orders(holder)
        paid = sum(self.sales_usd(o) for o in orders if o.payment_status in PAID_STATUSES)
        settled = sum(self.sales_usd(o) for o in orders if self._settled(o))
        return round(paid), round(settled)

    def sales(self, holder: HolderRef) -> list[Sale]:
        """The sales funnel: a LEADS sale per client, taken over by its first order; one sale
        per later order; ONGOING while the order is open, CLOSED once it is delivered. Ids are
        derived from the client or order, so they are the same on every read."""
        first: dict[str, Order] = {}
        for order in self._orders(holder):
            first.setdefault(order.client_id, order)
        found = [
            self._sale(f"lead:{c.id}", c, first.get(c.id), c.created_at)
            for c in self._clients(holder)
        ]
        for order in self._orders(holder):
            if first[order.client_id] is not order:
                client = self._t.clients[order.client_id]
                found.append(self._sale(f"order:{order.id}", client, order, order.created_at))
        return found

    @staticmethod
    def _sale(key: str, client: Client, order: Order | None, created: datetime) -> Sale:
        sale_id = str(uuid.uuid5(SALE_NAMESPACE, key))
        if order is None:
            return Sale(sale_id, client, None, "LEADS", created, created)
        delivered = [e.created_at for e in order.logs if e.activity == "Delivered"]
        stage = "CLOSED" if order.order_status == "DELIVERED" else "ONGOING"
        updated = delivered[-1] if delivered and stage == "CLOSED" else order.created_at
        return Sale(sale_id, client, order, stage, created, updated)

    def sale_stages(self, holder: HolderRef) -> dict[str, int]:
        """How many sales are at each stage."""
        stages = dict.fromkeys(SALE_STAGES, 0)
        for sale in self.sales(holder):
            stages[sale.stage] += 1
        return stages

    def client_count(self, holder: HolderRef) -> int:
        """How many clients the holder has."""
        return len(self._clients(holder))

    def transactions(
        self, client_id: str, tests: Sequence[Callable[[Transaction], bool]]
    ) -> list[Transaction]:
        """A client's transactions passing every test, newest first (any holder's client: the
        backend does not scope this route by NFT)."""
        found = [
            t
            for order in self._t.orders.values()
            for t in order.transactions
            if t.client_id == client_id.lower() and all(test(t) for test in tests)
        ]
        found.sort(key=lambda t: t.created_at, reverse=True)
        return found

    def managers(self, holder: HolderRef) -> list[ManagerRow]:
        """The NFT's managers: associated ones, and dissociated ones that earned commissions on
        its orders, each with its PAID and PENDING totals, in creation order."""
        owner = self._t.holder(holder)
        rows = []
        for manager in self._t.holder_managers[owner.name]:
            mine = [c for c in self._commissions.of(owner) if c.user_id == manager.id]
            if not mine and not manager.associated:
                continue
            paid = sum(c.amount_in_dollar for c in mine if c.payment_status == "PAID")
            pending = sum(c.amount_in_dollar for c in mine if c.payment_status == "PENDING")
            rows.append(ManagerRow(manager, len(mine), paid, pending))
        return rows
