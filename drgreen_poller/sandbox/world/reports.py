"""Figures read from the world, as the backend's dashboard queries compute them: pure reads.

Owns the date windows and chart scales of the chart routes (``DATE_TRUNC`` by day, ISO week,
month or year; a window from the start date's midnight to the midnight after the end date,
both included), the approval breakdowns in percent, the sales funnel derived from clients and
orders, the revenue totals (today's retail price × quantity, as the backend's joins read it),
a client's payment transactions and the commission managers with their totals. It must not change
anything nor know wire shapes (``dapp/insights.py`` does).
"""

from __future__ import annotations

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
    Transaction,
)
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

SCALES = ("DAY", "WEEK", "MONTH", "YEAR")
SALE_STAGES = ("ONGOING", "LEADS", "CLOSED")
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
        for order in self._orders(holder):
            if not self._settled(order) or (
                client_ids is not None and order.client_id not in client_ids
            ):
                continue
            copies = 1
            if countries is not None:
                client = self._t.clients[order.client_id]
                copies = sum(1 for a in client.shippings if a.country_code in countries)
            points.extend([(order.created_at, self.sales_usd(order))] * copies)
        return window.series(points)

    def sales_usd(self, order: Order) -> float:
        """Σ today's retail price × quantity over the order's lines (what revenue joins read)."""
        strains = self._t.strains
        return sum(strains[line.strain_id].retail_price * line.quantity for line in order.lines)

    @staticmethod
    def _settled(order: Order) -> bool:
        return order.payment_status in PAID_STATUSES and order.order_status == "DELIVERED"

    def sales_totals(self, holder: HolderRef) -> tuple[int, int]:
        """Sales of paid orders and of paid, delivered ones, each rounded to a whole number."""
        orders = self._orders(holder)
        paid = sum(self.sales_usd(o) for o in orders if o.payment_status in PAID_STATUSES)
        settled = sum(self.sales_usd(o) for o in orders if self._settled(o))
        return round(paid), round(settled)

    def sale_stages(self, holder: HolderRef) -> dict[str, int]:
        """The sales funnel: a LEADS sale per client without orders (the first order takes it
        over), an ONGOING sale per order, CLOSED once the order is delivered."""
        stages = dict.fromkeys(SALE_STAGES, 0)
        ordering = {order.client_id for order in self._orders(holder)}
        stages["LEADS"] = sum(1 for c in self._clients(holder) if c.id not in ordering)
        for order in self._orders(holder):
            stages["CLOSED" if order.order_status == "DELIVERED" else "ONGOING"] += 1
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
