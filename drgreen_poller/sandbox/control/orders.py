"""The control API's routes for orders, commissions and commission managers: creation,
lifecycle actions, raw sets.

Owns parsing control bodies into calls of the world's ``orders``, ``lifecycle``,
``commissions`` and ``managers``. It must not hold rules: they live in the world (a forbidden
transition is the world's 409).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox.control.views import (
    commission_view,
    created_reply,
    order_view,
    parse_items,
    read_json,
    world_of,
)
from drgreen_poller.sandbox.world.inputs import (
    as_int,
    as_non_negative,
    as_number,
    as_opt_str,
    as_opt_time,
    as_str,
    check_keys,
)
from drgreen_poller.sandbox.world.model import InvalidInput, Manager, Order, iso, num
from drgreen_poller.sandbox.world.orders import DEFAULT_DELIVERY_FEE

ORDER_KEYS = (
    "clientId", "items", "createdAt", "adminApproval", "paymentStatus", "orderStatus",
    "deliveryFee", "count", "spacing_s",
)  # fmt: skip


async def create_orders(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/orders``: one order, or ``count`` of them (201)."""
    body = await read_json(request)
    check_keys(body, ORDER_KEYS, "an order")
    state = world_of(request)
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
    orders = state.orders.create_many(holder, count, spacing_s=spacing_s, **options)
    return created_reply([order_view(state, order) for order in orders], body)


async def list_orders(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/orders``."""
    state = world_of(request)
    orders = state.orders.of(request.match_info["name"])
    return web.json_response({"orders": [order_view(state, order) for order in orders]})


async def get_order(request: web.Request) -> web.Response:
    """``GET /_sandbox/orders/{id}``: the full stored order."""
    state = world_of(request)
    return web.json_response(order_view(state, state.orders.get(request.match_info["id"])))


async def patch_order(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/orders/{id}``: force raw field values (any status), no side effects."""
    state = world_of(request)
    order = state.orders.patch(request.match_info["id"], await read_json(request))
    return web.json_response(order_view(state, order))


async def delete_order(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/orders/{id}``: the order vanishes from the lists and from detail."""
    order = world_of(request).orders.delete(request.match_info["id"])
    return web.json_response({"deleted": order.id})


async def order_action(request: web.Request) -> web.Response:
    """``POST /_sandbox/orders/{id}/{action}``: a lifecycle step (409 when the rules forbid it)."""
    state = world_of(request)
    order_id, action = request.match_info["id"], request.match_info["action"]
    body = await read_json(request)
    actions: dict[str, Callable[[], Order]] = {
        "approve": lambda: state.lifecycle.approve(order_id),
        "reject": lambda: state.lifecycle.reject(order_id, as_opt_str(body.get("note"), "note")),
        "pay": lambda: state.lifecycle.pay(
            order_id, as_str(body.get("method", "CRYPTO"), "method")
        ),
        "unpay": lambda: state.lifecycle.unpay(order_id),
        "fail-payment": lambda: state.lifecycle.fail_payment(order_id),
        "refund": lambda: state.lifecycle.refund(order_id),
        "payment-status": lambda: state.lifecycle.set_payment_status(
            order_id, as_str(body.get("paymentStatus"), "paymentStatus")
        ),
        "process": lambda: state.lifecycle.process(order_id),
        "ship": lambda: state.lifecycle.ship(order_id),
        "deliver": lambda: state.lifecycle.deliver(order_id),
        "cancel": lambda: state.lifecycle.cancel(order_id),
    }
    if action not in actions:
        raise InvalidInput(f"unknown order action {action!r}; actions: {', '.join(actions)}")
    return web.json_response(order_view(state, actions[action]()))


async def accrue_commission(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/commissions`` ``{"amountInDollar", "orderId"?}`` (201)."""
    body = await read_json(request)
    check_keys(body, ("amountInDollar", "orderId", "createdAt"), "a commission")
    state = world_of(request)
    commission = state.commissions.accrue(
        request.match_info["name"],
        as_number(body.get("amountInDollar"), "amountInDollar"),
        order_id=as_opt_str(body.get("orderId"), "orderId"),
        created_at=as_opt_time(body.get("createdAt"), "createdAt"),
    )
    return web.json_response(commission_view(state, commission), status=201)


async def list_commissions(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/commissions``."""
    state = world_of(request)
    commissions = state.commissions.of(request.match_info["name"])
    return web.json_response({"commissions": [commission_view(state, c) for c in commissions]})


async def get_commission(request: web.Request) -> web.Response:
    """``GET /_sandbox/commissions/{id}``."""
    state = world_of(request)
    return web.json_response(
        commission_view(state, state.commissions.get(request.match_info["id"]))
    )


async def pay_commission(request: web.Request) -> web.Response:
    """``POST /_sandbox/commissions/{id}/pay``: PENDING → PAID."""
    state = world_of(request)
    commission = state.commissions.pay(request.match_info["id"])
    return web.json_response(commission_view(state, commission))


def manager_view(manager: Manager) -> dict[str, Any]:
    """A commission manager as stored."""
    return {
        "id": manager.id,
        "holder": manager.holder,
        "fullName": manager.full_name,
        "username": manager.username,
        "email": manager.email,
        "walletAddress": manager.wallet_address,
        "commissionPercent": num(manager.commission_percent),
        "associated": manager.associated,
        "createdAt": iso(manager.created_at),
        "updatedAt": iso(manager.updated_at),
    }


async def add_manager(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/managers`` ``{"fullName", "commissionPercent"}`` (201)."""
    body = await read_json(request)
    check_keys(body, ("fullName", "commissionPercent"), "a manager")
    manager = world_of(request).managers.add(
        request.match_info["name"],
        as_str(body.get("fullName"), "fullName"),
        as_number(body.get("commissionPercent"), "commissionPercent"),
    )
    return web.json_response(manager_view(manager), status=201)


async def list_managers(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/managers``."""
    managers = world_of(request).managers.of(request.match_info["name"])
    return web.json_response({"managers": [manager_view(m) for m in managers]})


async def dissociate_manager(request: web.Request) -> web.Response:
    """``POST /_sandbox/managers/{id}/dissociate``: no share in later payments."""
    manager = world_of(request).managers.dissociate(request.match_info["id"])
    return web.json_response(manager_view(manager))


def add_routes(app: web.Application) -> None:
    """Register the order and commission routes on the control app."""
    app.router.add_routes(
        [
            web.post("/holders/{name}/orders", create_orders),
            web.get("/holders/{name}/orders", list_orders),
            web.get("/orders/{id}", get_order),
            web.patch("/orders/{id}", patch_order),
            web.delete("/orders/{id}", delete_order),
            web.post("/orders/{id}/{action}", order_action),
            web.post("/holders/{name}/commissions", accrue_commission),
            web.get("/holders/{name}/commissions", list_commissions),
            web.get("/commissions/{id}", get_commission),
            web.post("/commissions/{id}/pay", pay_commission),
            web.post("/holders/{name}/managers", add_manager),
            web.get("/holders/{name}/managers", list_managers),
            web.post("/managers/{id}/dissociate", dissociate_manager),
        ]
    )
