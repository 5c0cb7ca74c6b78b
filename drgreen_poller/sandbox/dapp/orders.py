"""Handlers of the simulated order endpoints (drgreen-api.md §3.1–3.5).

Owns the order list filters and sort keys, the recent heartbeat, the approval summary, order
detail (``null`` or 404 for unknown ids, per the settings) and checkout. It must not change
orders except through the world's ``orders.checkout``.
"""

from __future__ import annotations

from collections.abc import Callable

from drgreen_poller.sandbox.dapp import records
from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import (
    QueryCheck,
    approval_list,
    is_uuid,
    matching,
    ordered,
    require_uuid,
)
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import APPROVALS, ORDER_STATUSES, Order

OrderTest = Callable[[Order], bool]


def client_name_matches(state: World, client_id: str, search: str) -> bool:
    """Whether the client's first/last/full name or email contains ``search`` (lower-case)."""
    client = state.tables.clients[client_id]
    full = f"{client.first_name} {client.last_name}".lower()
    return search in full or search in client.email.lower()


def order_tests(call: Call, check: QueryCheck) -> tuple[list[OrderTest], str | None]:
    status = check.choice("status", ORDER_STATUSES)
    payment = check.choice("paymentStatus", call.state.settings.payment_statuses)
    approval = check.choice("adminApproval", APPROVALS)
    window = check.window()
    client_ids = check.json_list("clientIds")
    search = check.search()
    tests: list[OrderTest] = []
    if status is not None:
        tests.append(lambda o: o.order_status == status)
    if payment is not None:
        tests.append(lambda o: o.payment_status == payment)
    if approval is not None:
        tests.append(lambda o: o.admin_approval == approval)
    if window is not None:
        start, end = window
        tests.append(lambda o: start <= o.created_at < end)
    if client_ids is not None:
        wanted = {client_id.lower() for client_id in client_ids}
        tests.append(lambda o: o.client_id in wanted)
    if search is not None:
        tests.append(lambda o: client_name_matches(call.state, o.client_id, search))
    return tests, approval


def list_orders(call: Call) -> Reply:
    """``GET /dapp/orders``."""
    check = QueryCheck(call.query)
    page = check.page()
    tests, approval = order_tests(call, check)
    check.done()
    found = matching(call.state.orders.of(call.owner), tests)
    return Reply(
        approval_list(
            "orders",
            page,
            found,
            approval,
            lambda o, note, logs: records.order_list_item(
                call.state, o, with_note=note, with_logs=logs
            ),
        )
    )


def recent_orders(call: Call) -> Reply:
    """``GET /dapp/orders/recent``: newest first always; ``orderBy`` is accepted and ignored."""
    check = QueryCheck(call.query)
    page = check.page()
    check.done()
    found = ordered(call.state.orders.of(call.owner), "created_at", True)
    items = [records.order_recent_item(call.state, o) for o in page.slice(found)]
    return Reply({"recentOrders": items, "pageMetaDto": page.meta(len(found))})


def order_summary(call: Call) -> Reply:
    """``GET /dapp/orders/summary``: counts by ``adminApproval``."""
    orders = call.state.orders.of(call.owner)
    summary: dict[str, int] = dict.fromkeys(APPROVALS, 0)
    for order in orders:
        if order.admin_approval in summary:
            summary[order.admin_approval] += 1
    return Reply({"summary": {**summary, "totalCount": len(orders)}})


def _detail_or_missing(call: Call, order: Order | None) -> Reply:
    if order is None:
        if call.state.settings.unknown_order == "404":
            raise ApiError(404, "Order not found")
        return Reply({"orderDetails": None})
    return Reply({"orderDetails": records.order_detail(call.state, order)})


def order_detail(call: Call) -> Reply:
    """``GET /dapp/orders/{orderId}`` (like the snapshot, it does not re-check the NFT)."""
    require_uuid(call.params, "orderId")
    return _detail_or_missing(call, call.state.tables.orders.get(call.params["orderId"].lower()))


def client_order_detail(call: Call) -> Reply:
    """``GET /dapp/clients/{clientId}/orders/{orderId}``: order detail scoped by client."""
    require_uuid(call.params, "clientId", "orderId")
    client = call.state.clients.held(call.owner, call.params["clientId"])
    order = call.state.tables.orders.get(call.params["orderId"].lower())
    if client is None or order is None or order.client_id != client.id:
        order = None
    return _detail_or_missing(call, order)


def create_order(call: Call) -> Reply:
    """``POST /dapp/orders``: the client's cart becomes an order (201, the raw row)."""
    body = call.body if isinstance(call.body, dict) else {}
    client_id = body.get("clientId")
    if not isinstance(client_id, str) or not is_uuid(client_id):
        raise ApiError(400, "clientId must be a UUID", validation=True)
    order = call.state.orders.checkout(call.owner, client_id)
    return Reply(records.order_row(call.state, order), 201)


HANDLERS: dict[str, Handler] = {
    "GET /dapp/orders": list_orders,
    "GET /dapp/orders/recent": recent_orders,
    "GET /dapp/orders/summary": order_summary,
    "GET /dapp/orders/{orderId}": order_detail,
    "POST /dapp/orders": create_order,
    "GET /dapp/clients/{clientId}/orders/{orderId}": client_order_detail,
}
