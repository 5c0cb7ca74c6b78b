"""Handlers of the simulated dashboard routes: charts, breakdowns, analytics, sales, revenue and
commission managers, in the backend snapshot's wire shapes.

Owns the query DTOs of those routes (``startDate``/``endDate`` required, ``clientIds`` and
``countryCodes`` as JSON arrays, ``filterBy``, ``agentStatus``), the chart point
``{name, value, date}`` (weekday, ``WEEK n``, month name or year as its name) and the summary
objects. It must not compute figures: ``world/reports.py`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import QueryCheck
from drgreen_poller.sandbox.world.model import Manager, iso, num
from drgreen_poller.sandbox.world.reports import ManagerRow, Point, Window, approval_shares

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
ANALYTICS = ("Client", "Order", "Profit")
AGENT_STATUSES = ("Active", "InActive")
Json = dict[str, object]


def chart(points: Sequence[Point], window: Window) -> list[Json]:
    """Chart points as the backend names them (``getDayFromDate``)."""
    out: list[Json] = []
    for index, (bucket, value) in enumerate(points):
        name: str | int
        if window.scale == "DAY":
            name = WEEKDAYS[bucket.weekday()]
        elif window.scale == "WEEK":
            name = f"WEEK {index + 1}"
        elif window.scale == "MONTH":
            name = MONTHS[bucket.month - 1]
        else:
            name = bucket.year
        out.append({"name": name, "value": num(value), "date": iso(bucket)})
    return out


def _window(check: QueryCheck, *, iso_only: bool = False) -> Window | None:
    """The required ``startDate``/``endDate`` of a chart query."""
    start = check.required_date("startDate", iso_only=iso_only)
    end = check.required_date("endDate", iso_only=iso_only)
    return None if start is None or end is None else Window.of(start, end)


def _chart_query(call: Call, list_name: str) -> tuple[Window, set[str] | None]:
    check = QueryCheck(call.query)
    window = _window(check)
    wanted = check.json_list(list_name)
    check.done()
    assert window is not None  # done() raised unless both dates parsed
    return window, None if wanted is None else {
        v.lower() if list_name == "clientIds" else v for v in wanted
    }


def orders_chart(call: Call) -> Reply:
    """``GET /dapp/orders/chart-data``: orders created per day, week, month or year."""
    window, client_ids = _chart_query(call, "clientIds")
    rows = call.state.reports.order_rows(call.owner, window, client_ids)
    return Reply(chart(call.state.reports.counts(rows, window), window))


def orders_breakdown(call: Call) -> Reply:
    """``GET /dapp/orders/status-breakdown``: percent of the window's orders per approval."""
    window, client_ids = _chart_query(call, "clientIds")
    rows = call.state.reports.order_rows(call.owner, window, client_ids)
    shares = approval_shares([order.admin_approval for order in rows])
    return Reply([{"name": name, "value": value} for name, value in shares])


def clients_chart(call: Call) -> Reply:
    """``GET /dapp/clients/chart-data``: clients created per day, week, month or year."""
    window, countries = _chart_query(call, "countryCodes")
    rows = call.state.reports.client_rows(call.owner, window, countries)
    return Reply(chart(call.state.reports.counts(rows, window), window))


def clients_breakdown(call: Call) -> Reply:
    """``GET /dapp/clients/status-breakdown``: percent of the window's clients per approval."""
    window, countries = _chart_query(call, "countryCodes")
    rows = call.state.reports.client_rows(call.owner, window, countries)
    shares = approval_shares([client.admin_approval for client in rows])
    return Reply([{"name": name, "value": value} for name, value in shares])


def analytics(call: Call) -> Reply:
    """``GET /dapp/dashboard/analytics``: new clients, new orders or profit over time."""
    check = QueryCheck(call.query)
    window = _window(check, iso_only=True)
    what = check.required_choice("filterBy", ANALYTICS)
    check.done()
    assert window is not None
    reports = call.state.reports
    if what == "Profit":
        return Reply(chart(reports.profit(call.owner, window), window))
    rows = (
        reports.client_rows(call.owner, window, None)
        if what == "Client"
        else reports.order_rows(call.owner, window, None)
    )
    return Reply(chart(reports.counts(rows, window), window))


def revenue_chart(call: Call) -> Reply:
    """``GET /dapp/revenue/chart-data``: sales of paid, delivered orders over time."""
    check = QueryCheck(call.query)
    window = _window(check)
    client_ids = check.json_list("clientIds")
    countries = check.json_list("countryCodes")
    check.json_list("tokenIds")  # read by the admin route only, but still parsed
    check.done()
    assert window is not None
    wanted = None if client_ids is None else {c.lower() for c in client_ids}
    points = call.state.reports.revenue(call.owner, window, wanted, countries)
    return Reply(chart(points, window))


def revenue_summary(call: Call) -> Reply:
    """``GET /dapp/revenue/summary``: sales of paid orders, and of paid delivered ones."""
    sales, profit = call.state.reports.sales_totals(call.owner)
    return Reply({"summary": {"totalSales": sales, "totalProfit": profit}})


def sales_summary(call: Call) -> Reply:
    """``GET /dapp/sales/summary``: the sales funnel by stage; ``totalCount`` counts clients."""
    reports = call.state.reports
    count = reports.client_count(call.owner)
    return Reply(
        {"summary": {**reports.sale_stages(call.owner), "totalCount": count}, "count": count}
    )


def _with_status(rows: list[ManagerRow], status: str | None) -> list[ManagerRow]:
    """Active (associated) or InActive managers; every manager for any other value."""
    if status in AGENT_STATUSES:
        return [row for row in rows if row.active == (status == "Active")]
    return rows


def managers_summary(call: Call) -> Reply:
    """``GET /dapp/commissions/managers/summary[?agentStatus=]``: an unknown ``agentStatus``
    is not validated (a bare ``@Query`` parameter) and counts every manager."""
    rows = call.state.reports.managers(call.owner)
    chosen = _with_status(rows, call.query.get("agentStatus"))
    paid = sum(row.paid_usd for row in chosen)
    pending = sum(row.pending_usd for row in chosen)
    sales, _ = call.state.reports.sales_totals(call.owner)
    summary = {
        "totalAgents": len(chosen),
        "activeAgents": sum(1 for row in rows if row.active),
        "inActiveAgents": sum(1 for row in rows if not row.active),
        "totalSales": sales,
        "totalCommission": num(paid + pending),
        "totalPaidCommission": num(paid),
        "totalPendingCommission": num(pending),
    }
    return Reply({"summary": summary})


def manager_item(row: ManagerRow) -> Json:
    """An item of ``GET /dapp/commissions/managers``."""
    manager = row.manager
    return {
        "id": manager.id,
        "fullName": manager.full_name,
        "username": manager.username,
        "email": manager.email,
        "phoneCode": manager.phone_code,
        "phoneNumber": manager.phone_number,
        "isActive": manager.is_active,
        "createdAt": iso(manager.created_at),
        "updatedAt": iso(manager.updated_at),
        "walletAddress": manager.wallet_address,
        "commissionPercent": num(manager.commission_percent),
        "totalPendingCommission": num(row.pending_usd),
        "totalPaidCommission": num(row.paid_usd),
    }


def _matches(manager: Manager, search: str) -> bool:
    fields = (manager.full_name, manager.username, manager.email, manager.wallet_address)
    return any(search in field.lower() for field in fields)


def managers(call: Call) -> Reply:
    """``GET /dapp/commissions/managers``: the NFT's managers with their commission totals.

    As the backend's raw query joins through the commissions' orders, only managers with a
    commission on the NFT are listed, while ``itemCount`` also counts associated ones without.
    """
    check = QueryCheck(call.query)
    page = check.page()
    status = check.choice("agentStatus", AGENT_STATUSES)
    check.done()
    rows = _with_status(call.state.reports.managers(call.owner), status)
    search = call.query.get("search", "").lower()
    rows = [row for row in rows if _matches(row.manager, search)]
    earning = [row for row in rows if row.commissions]
    earning.sort(key=lambda row: row.manager.created_at)
    if page.descending:
        earning.reverse()  # ties in creation order, newest first
    items = [manager_item(row) for row in page.slice(earning)]
    return Reply({"managers": items, "pageMetaDto": page.meta(len(rows))})


HANDLERS: dict[str, Handler] = {
    "GET /dapp/orders/chart-data": orders_chart,
    "GET /dapp/orders/status-breakdown": orders_breakdown,
    "GET /dapp/clients/chart-data": clients_chart,
    "GET /dapp/clients/status-breakdown": clients_breakdown,
    "GET /dapp/dashboard/analytics": analytics,
    "GET /dapp/revenue/chart-data": revenue_chart,
    "GET /dapp/revenue/summary": revenue_summary,
    "GET /dapp/sales/summary": sales_summary,
    "GET /dapp/commissions/managers/summary": managers_summary,
    "GET /dapp/commissions/managers": managers,
}
