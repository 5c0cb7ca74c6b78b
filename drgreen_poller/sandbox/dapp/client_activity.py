"""Handlers of the simulated routes about one client: the store's edit, its orders and its
payment transactions, in the backend snapshot's wire shapes.

Owns ``PATCH /dapp/clients/{clientId}`` (the updated row with its medical record),
``GET /dapp/client/{clientId}/orders`` (singular ``client``; ``status`` the only filter applied,
``totalPrice`` the sum of the lines' unit prices, as the service computes it) and
``GET /dapp/client/{clientId}/transactions`` (not paged, newest first, not scoped by NFT; the
interceptor still adds a ``pageMetaDto`` from the raw query). It must not change clients except
through the world's ``profiles``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from drgreen_poller.sandbox.dapp import client_records
from drgreen_poller.sandbox.dapp.client_edit_dto import parse_client_edit
from drgreen_poller.sandbox.dapp.orders import order_tests
from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import (
    DEFAULT_TAKE,
    QueryCheck,
    js_number,
    matching,
    ordered,
    require_uuid,
)
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import (
    TRANSACTION_METHODS,
    TRANSACTION_STATUSES,
    Order,
    Transaction,
    iso,
    num,
)

Json = dict[str, Any]


def edit_client(call: Call) -> Reply:
    """``PATCH /dapp/clients/{clientId}``: the edited client row, medical record included."""
    require_uuid(call.params, "clientId")
    change = parse_client_edit(call.body)
    client = call.state.profiles.edit(call.owner, call.params["clientId"], change)
    row = client_records.client_row(call.state, client)
    row["medicalRecord"] = client_records.medical_record(client.medical_record)
    return Reply(row)


def client_order_item(state: World, order: Order) -> Json:
    """An item of ``GET /dapp/client/{clientId}/orders``."""
    strains = state.tables.strains
    return {
        "id": order.id,
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
        "paymentStatus": order.payment_status,
        "orderStatus": order.order_status,
        "invoiceNumber": order.invoice_number,
        "totalAmount": num(order.total_amount),
        "totalOrdered": len(order.lines),
        "totalQuantity": num(sum(line.quantity for line in order.lines)),
        "totalPrice": num(sum(strains[line.strain_id].retail_price for line in order.lines)),
    }


def client_orders(call: Call) -> Reply:
    """``GET /dapp/client/{clientId}/orders``: the client's orders by ``createdAt``; an
    unknown client or another holder's has none."""
    require_uuid(call.params, "clientId")
    check = QueryCheck(call.query)
    page = check.page()
    order_tests(call, check)  # the whole GetAllOrderDto is validated, only status is applied
    status = call.query.get("status")
    check.done()
    client_id = call.params["clientId"].lower()
    tests: list[Callable[[Order], bool]] = [lambda o: o.client_id == client_id]
    if status is not None:
        tests.append(lambda o: o.order_status == status)
    found = ordered(
        matching(call.state.orders.of(call.owner), tests), "created_at", page.descending
    )
    items = [client_order_item(call.state, order) for order in page.slice(found)]
    return Reply({"orders": items, "pageMetaDto": page.meta(len(found))})


def transaction_item(transaction: Transaction) -> Json:
    """An item of ``GET /dapp/client/{clientId}/transactions``."""
    return {
        "id": transaction.id,
        "description": transaction.description,
        "method": transaction.method,
        "amount": num(transaction.amount),
        "invoice": transaction.invoice,
        "status": transaction.status,
        "destination": transaction.destination,
        "createdAt": iso(transaction.created_at),
    }


def raw_page_meta(query: Mapping[str, str], item_count: int) -> Json:
    """The interceptor's ``pageMetaDto`` for a route whose DTO has no paging: the raw ``page``
    and ``take`` (1 and 10 when absent), coerced as JavaScript does; NaN becomes ``null``."""
    raw_page, raw_take = query.get("page"), query.get("take")
    page = 1.0 if raw_page is None else js_number(raw_page)
    take = float(DEFAULT_TAKE) if raw_take is None else js_number(raw_take)
    count = math.ceil(item_count / take) if take and math.isfinite(item_count / take) else None
    return {
        "page": raw_page if raw_page is not None else 1,
        "take": raw_take if raw_take is not None else DEFAULT_TAKE,
        "itemCount": item_count,
        "pageCount": count,
        "hasPreviousPage": page > 1,
        "hasNextPage": count is not None and page < count,
    }


def client_transactions(call: Call) -> Reply:
    """``GET /dapp/client/{clientId}/transactions[?status=&method=]``."""
    require_uuid(call.params, "clientId")
    check = QueryCheck(call.query)
    status = check.choice("status", TRANSACTION_STATUSES)
    method = check.choice("method", TRANSACTION_METHODS)
    check.done()
    tests: list[Callable[[Transaction], bool]] = []
    if status is not None:
        tests.append(lambda t: t.status == status)
    if method is not None:
        tests.append(lambda t: t.method == method)
    found = call.state.reports.transactions(call.params["clientId"], tests)
    items = [transaction_item(t) for t in found]
    return Reply({"transactions": items, "pageMetaDto": raw_page_meta(call.query, len(found))})


HANDLERS: dict[str, Handler] = {
    "PATCH /dapp/clients/{clientId}": edit_client,
    "GET /dapp/client/{clientId}/orders": client_orders,
    "GET /dapp/client/{clientId}/transactions": client_transactions,
}
