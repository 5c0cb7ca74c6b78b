"""The control API's routes for the world's entities: strains, clients, orders, commissions.

Owns parsing control bodies into calls of ``SandboxState`` methods and the control views of
entities (the Dr Green row plus what only the sandbox knows, such as the holder and the cart).
It must not hold lifecycle rules: every change goes through the state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox import client_records, records, strain_records
from drgreen_poller.sandbox.clients import Identity
from drgreen_poller.sandbox.control_io import read_json, state_of
from drgreen_poller.sandbox.inputs import (
    as_bool,
    as_choice,
    as_country_code,
    as_dict,
    as_int,
    as_number,
    as_opt_str,
    as_opt_time,
    as_str,
    check_keys,
)
from drgreen_poller.sandbox.model import (
    APPROVALS,
    Client,
    Commission,
    InvalidInput,
    Order,
    Strain,
    iso,
    num,
)
from drgreen_poller.sandbox.state import SandboxState

IDENTITY_KEYS = ("firstName", "lastName", "email", "phoneCode", "phoneCountryCode", "contactNumber")
CLIENT_KEYS = (
    *IDENTITY_KEYS, "countryCode", "kyc", "isKYCVerified", "adminApproval", "isActive",
    "createdAt", "medicalRecord", "count",
)  # fmt: skip
ORDER_KEYS = (
    "clientId", "items", "createdAt", "adminApproval", "paymentStatus", "orderStatus",
    "deliveryFee", "count", "spacing_s",
)  # fmt: skip
Route = Callable[[web.Request], Awaitable[web.Response]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# --- views -------------------------------------------------------------------------------------


def strain_view(strain: Strain) -> dict[str, Any]:
    """A strain with every location, its timestamps and whether it was removed."""
    view = strain_records.strain_detail(strain, None)
    view.update(createdAt=iso(strain.created_at), updatedAt=iso(strain.updated_at))
    view["removed"] = strain.deleted
    return view


def client_view(state: SandboxState, client: Client) -> dict[str, Any]:
    """A client row plus holder, cart, addresses and activity log."""
    view = client_records.client_row(state, client)
    view.update(
        holder=client.holder,
        cartId=client.cart_id,
        cart=[{"strainId": s, "quantity": num(q)} for s, q in client.cart.items()],
        shippings=[records.shipping(a) for a in client.shippings],
        hasMedicalRecord=client.medical_record is not None,
        clientLogs=[{"activity": e.activity, "createdAt": iso(e.created_at)} for e in client.logs],
    )
    return view


def order_view(state: SandboxState, order: Order) -> dict[str, Any]:
    """The full stored order: the raw row plus lines, transactions, logs and delivery fee."""
    view = records.order_row(state, order)
    view.update(
        holder=order.holder,
        deliveryFee=num(order.delivery_fee),
        transactions=[{"method": method} for method in order.transactions],
        orderLogs=[{"activity": e.activity, "createdAt": iso(e.created_at)} for e in order.logs],
        lines=[
            {
                "strainId": line.strain_id,
                "quantity": num(line.quantity),
                "retailPrice": num(line.retail_price),
                "wholeSalePrice": num(line.wholesale_price),
            }
            for line in order.lines
        ],
    )
    return view


def commission_view(state: SandboxState, commission: Commission) -> dict[str, Any]:
    """A commission list item plus holder, order id and transaction hash."""
    view = records.commission_item(state, commission)
    view.update(
        holder=commission.holder,
        orderId=commission.order_id,
        transactionHash=commission.transaction_hash,
    )
    return view


def created_reply(views: list[dict[str, Any]], body: Mapping[str, Any]) -> web.Response:
    """One view, or ``{"count", "ids"}`` when the body asked for a ``count``."""
    if "count" in body:
        return _json({"count": len(views), "ids": [view["id"] for view in views]}, 201)
    return _json(views[0], 201)


# --- strains -----------------------------------------------------------------------------------


async def create_strain(request: web.Request) -> web.Response:
    """``POST /_sandbox/strains``: name, prices, ``locations`` and any other strain field."""
    body = await read_json(request)
    fields = {
        k: v for k, v in body.items() if k not in ("retailPrice", "wholeSalePrice", "locations")
    }
    fields.pop("name", None)
    locations = body.get("locations", [])
    if not isinstance(locations, list | dict):
        raise InvalidInput(
            "locations must be an array of objects or an object of stock per country"
        )
    strain = state_of(request).create_strain(
        as_str(body.get("name"), "name"),
        retail_price=as_number(body.get("retailPrice", 10), "retailPrice"),
        wholesale_price=as_number(body.get("wholeSalePrice", 6), "wholeSalePrice"),
        locations=locations,
        fields=fields,
    )
    return _json(strain_view(strain), 201)


async def list_strains(request: web.Request) -> web.Response:
    """``GET /_sandbox/strains``: every strain, removed ones included."""
    return _json({"strains": [strain_view(s) for s in state_of(request).strains.values()]})


async def get_strain(request: web.Request) -> web.Response:
    """``GET /_sandbox/strains/{id}``."""
    strain = state_of(request).strain(request.match_info["id"], include_removed=True)
    return _json(strain_view(strain))


async def patch_strain(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/strains/{id}``: set any strain fields (price, flags, texts, ...)."""
    strain = state_of(request).update_strain(request.match_info["id"], await read_json(request))
    return _json(strain_view(strain))


async def patch_location(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/strains/{id}/locations/{countryCode}``: stock and flags there."""
    state = state_of(request)
    code = as_country_code(request.match_info["country"], "countryCode")
    state.set_strain_location(request.match_info["id"], code, await read_json(request))
    return _json(strain_view(state.strain(request.match_info["id"])))


async def remove_strain(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/strains/{id}``: out of the catalogue; orders still show it."""
    return _json(strain_view(state_of(request).remove_strain(request.match_info["id"])))


# --- clients -----------------------------------------------------------------------------------


def _identity(state: SandboxState, body: Mapping[str, Any]) -> Identity | None:
    given = {key: as_str(body[key], key) for key in IDENTITY_KEYS if key in body}
    if not given:
        return None
    made = state.generated_identity()
    return Identity(
        given.get("firstName", made.first_name),
        given.get("lastName", made.last_name),
        given.get("email", made.email),
        given.get("contactNumber", made.contact_number),
        given.get("phoneCode", made.phone_code),
        given.get("phoneCountryCode", made.phone_country_code),
    )


async def create_clients(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/clients``: one client, or ``count`` of them (201)."""
    body = await read_json(request)
    check_keys(body, CLIENT_KEYS, "a client")
    state = state_of(request)
    holder = state.holder(request.match_info["name"])
    count = as_int(body.get("count", 1), "count", minimum=1)
    identity = _identity(state, body)
    if identity is not None and count > 1:
        raise InvalidInput("names, email and phone cannot be given together with count > 1")
    kyc = body.get("kyc", body.get("isKYCVerified", False))
    options: dict[str, Any] = {
        "country_code": as_country_code(body.get("countryCode", "GBR"), "countryCode"),
        "kyc_verified": as_bool(kyc, "kyc"),
        "admin_approval": as_choice(
            body.get("adminApproval", "PENDING"), "adminApproval", APPROVALS
        ),
        "is_active": None
        if body.get("isActive") is None
        else as_bool(body["isActive"], "isActive"),
        "created_at": as_opt_time(body.get("createdAt"), "createdAt"),
        "medical_record": as_bool(body.get("medicalRecord", True), "medicalRecord"),
    }
    clients = [state.create_client(holder, identity=identity, **options) for _ in range(count)]
    return created_reply([client_view(state, c) for c in clients], body)


async def list_clients(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/clients``."""
    state = state_of(request)
    clients = state.holder_clients(request.match_info["name"])
    return _json({"clients": [client_view(state, c) for c in clients]})


async def get_client(request: web.Request) -> web.Response:
    """``GET /_sandbox/clients/{id}``."""
    state = state_of(request)
    return _json(client_view(state, state.client(request.match_info["id"])))


async def patch_client(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/clients/{id}``: force raw field values."""
    state = state_of(request)
    client = state.patch_client(request.match_info["id"], await read_json(request))
    return _json(client_view(state, client))


async def client_action(request: web.Request) -> web.Response:
    """``POST /_sandbox/clients/{id}/{action}``: verify-kyc, approve, reject, (de)activate."""
    state = state_of(request)
    client_id, action = request.match_info["id"], request.match_info["action"]
    body = await read_json(request)
    actions: dict[str, Callable[[], Client]] = {
        "verify-kyc": lambda: state.verify_client_kyc(client_id),
        "approve": lambda: state.approve_client(client_id),
        "reject": lambda: state.reject_client(client_id, as_opt_str(body.get("note"), "note")),
        "activate": lambda: state.activate_client(client_id),
        "deactivate": lambda: state.deactivate_client(client_id),
    }
    if action not in actions:
        raise InvalidInput(f"unknown client action {action!r}; actions: {', '.join(actions)}")
    return _json(client_view(state, actions[action]()))


async def fill_cart(request: web.Request) -> web.Response:
    """``POST /_sandbox/clients/{id}/cart`` ``{"items": [{"strainId", "quantity"}]}``, unchecked."""
    body = await read_json(request)
    check_keys(body, ("items",), "a cart")
    state = state_of(request)
    client = state.fill_cart(request.match_info["id"], parse_items(body.get("items")))
    return _json(client_view(state, client))


async def clear_cart(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/clients/{id}/cart``."""
    state = state_of(request)
    client = state.client(request.match_info["id"])
    client.cart.clear()
    return _json(client_view(state, client))


def parse_items(raw: Any) -> dict[str, float]:
    """``[{"strainId", "quantity"}]`` or ``{strainId: quantity}`` as a mapping."""
    if isinstance(raw, dict):
        return {as_str(k, "strainId"): as_number(v, f"quantity of {k}") for k, v in raw.items()}
    if not isinstance(raw, list) or not raw:
        raise InvalidInput('items must be a non-empty array of {"strainId", "quantity"}')
    items: dict[str, float] = {}
    for i, entry in enumerate(raw):
        item = as_dict(entry, f"items[{i}]")
        strain_id = as_str(item.get("strainId"), f"items[{i}].strainId")
        items[strain_id] = items.get(strain_id, 0) + as_number(
            item.get("quantity"), f"items[{i}].quantity"
        )
    return items


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the strain and client routes under ``prefix``."""
    p = prefix
    app.router.add_routes(
        [
            web.get(f"{p}/strains", list_strains),
            web.post(f"{p}/strains", create_strain),
            web.get(f"{p}/strains/{{id}}", get_strain),
            web.patch(f"{p}/strains/{{id}}", patch_strain),
            web.delete(f"{p}/strains/{{id}}", remove_strain),
            web.patch(f"{p}/strains/{{id}}/locations/{{country}}", patch_location),
            web.post(f"{p}/holders/{{name}}/clients", create_clients),
            web.get(f"{p}/holders/{{name}}/clients", list_clients),
            web.get(f"{p}/clients/{{id}}", get_client),
            web.patch(f"{p}/clients/{{id}}", patch_client),
            web.post(f"{p}/clients/{{id}}/cart", fill_cart),
            web.delete(f"{p}/clients/{{id}}/cart", clear_cart),
            web.post(f"{p}/clients/{{id}}/{{action}}", client_action),
        ]
    )
