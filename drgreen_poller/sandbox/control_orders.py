"""The control API's routes for orders and commissions: creation, lifecycle actions, raw sets.

Owns parsing control bodies into the state's order and commission methods; every rule lives in
the state (a forbidden transition is the state's 409).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox.control_io import read_json, state_of
from drgreen_poller.sandbox.control_world import (
    ORDER_KEYS,
    commission_view,
    created_reply,
    order_view,
    parse_items,
)
from drgreen_poller.sandbox.inputs import (
    as_int,
    as_non_negative,
    as_number,
    as_opt_str,
    as_opt_time,
    as_str,
    check_keys,
)
from drgreen_poller.sandbox.model import InvalidInput, Order
from drgreen_poller.sandbox.orders import DEFAULT_DELIVERY_FEE


async def create_orders(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/orders``: one order, or ``count`` of them (201)."""
    body = await read_json(request)
    check_keys(body, ORDER_KEYS, "an order")
    state = state_of(request)
    holder = state.holder(request.match_info["name"])
    count = as_int(body.get("count", 1), "count", minimum=1)
    options: dict[str, Any] = {
        "client_id": as_opt_str(body.get("clientId"), "clientId"),
        "items": None if body.get("items") is None else parse_items(body["items"]),
        "created_at": as_opt_time(body.get("createdAt"), "createdAt"),
        "admin_approval": as_str(body.get("adminApproval", "PENDING"), "adminApproval"),
        "payment_status": as_str(body.get("paymentStatus", "PENDING"), "paymentStatus"),
        "order_status": as_str(body.get("orderStatus", "PENDING"), "orderStatus"),
        "delivery_fee": as_number(body.get("deliveryFee", DEFAULT_DELIVERY_FEE), "deliveryFee"),
    }
    spacing_s = as_non_negative(body.get("spacing_s", 0), "spacing_s")
    orders = state.create_orders(holder, count, spacing_s=spacing_s, **options)
    return created_reply([order_view(state, order) for order in orders], body)


async def list_orders(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/orders``."""
    state = state_of(request)
    orders = state.holder_orders(request.match_info["name"])
    return web.json_response({"orders": [order_view(state, order) for order in orders]})


async def get_order(request: web.Request) -> web.Response:
    """``GET /_sandbox/orders/{id}``: the full stored order."""
    state = state_of(request)
    return web.json_response(order_view(state, state.order(request.match_info["id"])))


async def patch_order(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/orders/{id}``: force raw field values (any status), no side effects."""
    state = state_of(request)
    order = state.patch_order(request.match_info["id"], await read_json(request))
    return web.json_response(order_view(state, order))


async def delete_order(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/orders/{id}``: the order vanishes from the lists and from detail."""
    order = state_of(request).delete_order(request.match_info["id"])
    return web.json_response({"deleted": order.id})


async def order_action(request: web.Request) -> web.Response:
    """``POST /_sandbox/orders/{id}/{action}``: a lifecycle step (409 when the rules forbid it)."""
    state = state_of(request)
    order_id, action = request.match_info["id"], request.match_info["action"]
    body = await read_json(request)
    actions: dict[str, Callable[[], Order]] = {
        "approve": lambda: state.approve_order(order_id),
        "reject": lambda: state.reject_order(order_id, as_opt_str(body.get("note"), "note")),
        "pay": lambda: state.pay_order(order_id, as_str(body.get("method", "CRYPTO"), "method")),
        "unpay": lambda: state.unpay_order(order_id),
        "fail-payment": lambda: state.fail_payment(order_id),
        "refund": lambda: state.refund_order(order_id),
        "payment-status": lambda: state.set_payment_status(
            order_id, as_str(body.get("paymentStatus"), "paymentStatus")
        ),
        "process": lambda: state.process_order(order_id),
        "ship": lambda: state.ship_order(order_id),
        "deliver": lambda: state.deliver_order(order_id),
        "cancel": lambda: state.cancel_order(order_id),
    }
    if action not in actions:
        raise InvalidInput(f"unknown order action {action!r}; actions: {', '.join(actions)}")
    return web.json_response(order_view(state, actions[action]()))


async def accrue_commission(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/commissions`` ``{"amountInDollar", "orderId"?}`` (201)."""
    body = await read_json(request)
    check_keys(body, ("amountInDollar", "orderId", "createdAt"), "a commission")
    state = state_of(request)
    commission = state.accrue_commission(
        request.match_info["name"],
        as_number(body.get("amountInDollar"), "amountInDollar"),
        order_id=as_opt_str(body.get("orderId"), "orderId"),
        created_at=as_opt_time(body.get("createdAt"), "createdAt"),
    )
    return web.json_response(commission_view(state, commission), status=201)


async def list_commissions(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/commissions``."""
    state = state_of(request)
    commissions = state.holder_commissions(request.match_info["name"])
    return web.json_response({"commissions": [commission_view(state, c) for c in commissions]})


async def get_commission(request: web.Request) -> web.Response:
    """``GET /_sandbox/commissions/{id}``."""
    state = state_of(request)
    return web.json_response(commission_view(state, state.commission(request.match_info["id"])))


async def pay_commission(request: web.Request) -> web.Response:
    """``POST /_sandbox/commissions/{id}/pay``: PENDING → PAID."""
    state = state_of(request)
    commission = state.pay_commission(request.match_info["id"])
    return web.json_response(commission_view(state, commission))


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the order and commission routes under ``prefix``."""
    p = prefix
    app.router.add_routes(
        [
            web.post(f"{p}/holders/{{name}}/orders", create_orders),
            web.get(f"{p}/holders/{{name}}/orders", list_orders),
            web.get(f"{p}/orders/{{id}}", get_order),
            web.patch(f"{p}/orders/{{id}}", patch_order),
            web.delete(f"{p}/orders/{{id}}", delete_order),
            web.post(f"{p}/orders/{{id}}/{{action}}", order_action),
            web.post(f"{p}/holders/{{name}}/commissions", accrue_commission),
            web.get(f"{p}/holders/{{name}}/commissions", list_commissions),
            web.get(f"{p}/commissions/{{id}}", get_commission),
            web.post(f"{p}/commissions/{{id}}/pay", pay_commission),
        ]
    )
