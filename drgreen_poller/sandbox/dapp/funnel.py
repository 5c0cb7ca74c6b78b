"""Handlers of the simulated sales and revenue lists: ``GET /dapp/sales`` (the sales funnel,
one row per lead or order) and ``GET /dapp/revenue`` (sales per strain), in the backend
snapshot's wire shapes.

Owns their query DTOs (``stage`` and ``search``+``searchBy`` for sales; optional dates,
``search`` over strain names and the JSON-array filters for revenue) and item shapes, with
``::INT`` sums rounded as Postgres casts them. It must not compute figures: ``world/reports.py``
does.
"""

from __future__ import annotations

from typing import Any

from drgreen_poller.sandbox.dapp.client_records import client_contact
from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import QueryCheck
from drgreen_poller.sandbox.world.model import iso, num
from drgreen_poller.sandbox.world.reports import SALE_STAGES, Sale, StrainRevenue, Window

Json = dict[str, Any]


def sale_item(sale: Sale) -> Json:
    """An item of ``GET /dapp/sales``."""
    client = sale.client
    return {
        "id": sale.id,
        "createdAt": iso(sale.created_at),
        "updatedAt": iso(sale.updated_at),
        "stage": sale.stage,
        "description": None,
        "orderId": None if sale.order is None else sale.order.id,
        "client": {**client_contact(client), "isActive": client.is_active},
    }


def _sale_search(check: QueryCheck) -> str | None:
    """``search`` applied when ``searchBy=clientName``, which it then requires."""
    search = check.query.get("search")
    if search and "searchBy" not in check.query:
        check.messages.append("searchBy must be one of the following values: clientName")
        check.messages.append("searchBy must be a string")
        return None
    by = check.choice("searchBy", ("clientName",)) if search else None
    return search.lower() if search and by == "clientName" else None


def _named(sale: Sale, search: str) -> bool:
    """Whether the client's first or last name contains ``search`` (lower-case)."""
    client = sale.client
    return search in client.first_name.lower() or search in client.last_name.lower()


def list_sales(call: Call) -> Reply:
    """``GET /dapp/sales``: the funnel by ``createdAt``, filtered by stage and client name."""
    check = QueryCheck(call.query)
    page = check.page()
    stage = check.choice("stage", SALE_STAGES)
    search = _sale_search(check)
    check.done()
    found = call.state.reports.sales(call.owner)
    if stage is not None:
        found = [sale for sale in found if sale.stage == stage]
    if search is not None:
        found = [sale for sale in found if _named(sale, search)]
    found.sort(key=lambda sale: sale.created_at)
    if page.descending:
        found.reverse()
    items = [sale_item(sale) for sale in page.slice(found)]
    return Reply({"sales": items, "pageMetaDto": page.meta(len(found))})


def revenue_item(row: StrainRevenue) -> Json:
    """An item of ``GET /dapp/revenue``."""
    sales = round(row.sales_usd)
    return {
        "strainId": row.strain.id,
        "strainName": row.strain.name,
        "wholeSalePrice": num(row.strain.wholesale_price),
        "retailPrice": num(row.strain.retail_price),
        "totalQuantity": round(row.grams),
        "totalSales": sales,
        "totalRevenue": sales,
    }


def list_revenue(call: Call) -> Reply:
    """``GET /dapp/revenue``: sales per strain of paid, delivered orders, best first (``orderBy``
    is accepted and ignored)."""
    check = QueryCheck(call.query)
    page = check.page()
    start = check.required_date("startDate", required=False)
    end = check.required_date("endDate", required=False)
    client_ids = check.json_list("clientIds")
    countries = check.json_list("countryCodes")
    check.json_list("tokenIds")  # read by the admin route only, but still parsed
    check.done()
    window = None if start is None or end is None else Window.of(start, end)
    wanted = None if client_ids is None else {c.lower() for c in client_ids}
    rows = call.state.reports.strain_revenue(call.owner, window, wanted, countries)
    search = call.query.get("search", "").lower()
    rows = [row for row in rows if search in row.strain.name.lower()]
    items = [revenue_item(row) for row in page.slice(rows)]
    return Reply({"strains": items, "pageMetaDto": page.meta(len(rows))})


HANDLERS: dict[str, Handler] = {
    "GET /dapp/sales": list_sales,
    "GET /dapp/revenue": list_revenue,
}
