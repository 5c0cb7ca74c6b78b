"""The control API's routes for strains, clients and their carts.

Owns parsing control bodies into calls of the world's ``catalogue``, ``clients`` and ``carts``.
It must not hold lifecycle rules: every change goes through the world's parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox.control.views import (
    client_view,
    created_reply,
    json_reply,
    parse_items,
    read_json,
    strain_view,
    world_of,
)
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.clients import Identity
from drgreen_poller.sandbox.world.inputs import (
    as_bool,
    as_choice,
    as_country_code,
    as_int,
    as_number,
    as_opt_str,
    as_opt_time,
    as_str,
    check_keys,
)
from drgreen_poller.sandbox.world.model import (
    APPROVALS,
    Client,
    InvalidInput,
)

IDENTITY_KEYS = ("firstName", "lastName", "email", "phoneCode", "phoneCountryCode", "contactNumber")
CLIENT_KEYS = (
    *IDENTITY_KEYS, "countryCode", "kyc", "isKYCVerified", "adminApproval", "isActive",
    "createdAt", "medicalRecord", "count",
)  # fmt: skip
Route = Callable[[web.Request], Awaitable[web.Response]]


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
    strain = world_of(request).catalogue.create(
        as_str(body.get("name"), "name"),
        retail_price=as_number(body.get("retailPrice", 10), "retailPrice"),
        wholesale_price=as_number(body.get("wholeSalePrice", 6), "wholeSalePrice"),
        locations=locations,
        fields=fields,
    )
    return json_reply(strain_view(strain), 201)


async def list_strains(request: web.Request) -> web.Response:
    """``GET /_sandbox/strains``: every strain, removed ones included."""
    return json_reply(
        {"strains": [strain_view(s) for s in world_of(request).tables.strains.values()]}
    )


async def get_strain(request: web.Request) -> web.Response:
    """``GET /_sandbox/strains/{id}``."""
    strain = world_of(request).catalogue.get(request.match_info["id"], include_removed=True)
    return json_reply(strain_view(strain))


async def patch_strain(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/strains/{id}``: set any strain fields (price, flags, texts, ...)."""
    strain = world_of(request).catalogue.update(request.match_info["id"], await read_json(request))
    return json_reply(strain_view(strain))


async def patch_location(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/strains/{id}/locations/{countryCode}``: stock and flags there."""
    state = world_of(request)
    code = as_country_code(request.match_info["country"], "countryCode")
    state.catalogue.set_location(request.match_info["id"], code, await read_json(request))
    return json_reply(strain_view(state.catalogue.get(request.match_info["id"])))


async def remove_strain(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/strains/{id}``: out of the catalogue; orders still show it."""
    return json_reply(strain_view(world_of(request).catalogue.remove(request.match_info["id"])))


# --- clients -----------------------------------------------------------------------------------


def _identity(state: World, body: Mapping[str, Any]) -> Identity | None:
    given = {key: as_str(body[key], key) for key in IDENTITY_KEYS if key in body}
    if not given:
        return None
    made = state.clients.generated_identity()
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
    state = world_of(request)
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
    clients = [state.clients.create(holder, identity=identity, **options) for _ in range(count)]
    return created_reply([client_view(state, c) for c in clients], body)


async def list_clients(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/clients``."""
    state = world_of(request)
    clients = state.clients.of(request.match_info["name"])
    return json_reply({"clients": [client_view(state, c) for c in clients]})


async def get_client(request: web.Request) -> web.Response:
    """``GET /_sandbox/clients/{id}``."""
    state = world_of(request)
    return json_reply(client_view(state, state.clients.get(request.match_info["id"])))


async def patch_client(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/clients/{id}``: force raw field values."""
    state = world_of(request)
    client = state.clients.patch(request.match_info["id"], await read_json(request))
    return json_reply(client_view(state, client))


async def client_action(request: web.Request) -> web.Response:
    """``POST /_sandbox/clients/{id}/{action}``: verify-kyc, approve, reject, (de)activate."""
    state = world_of(request)
    client_id, action = request.match_info["id"], request.match_info["action"]
    body = await read_json(request)
    actions: dict[str, Callable[[], Client]] = {
        "verify-kyc": lambda: state.clients.verify_kyc(client_id),
        "approve": lambda: state.clients.approve(client_id),
        "reject": lambda: state.clients.reject(client_id, as_opt_str(body.get("note"), "note")),
        "activate": lambda: state.clients.activate(client_id),
        "deactivate": lambda: state.clients.deactivate(client_id),
    }
    if action not in actions:
        raise InvalidInput(f"unknown client action {action!r}; actions: {', '.join(actions)}")
    return json_reply(client_view(state, actions[action]()))


async def fill_cart(request: web.Request) -> web.Response:
    """``POST /_sandbox/clients/{id}/cart`` ``{"items": [{"strainId", "quantity"}]}``, unchecked."""
    body = await read_json(request)
    check_keys(body, ("items",), "a cart")
    state = world_of(request)
    client = state.carts.fill(request.match_info["id"], parse_items(body.get("items")))
    return json_reply(client_view(state, client))


async def clear_cart(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/clients/{id}/cart``."""
    state = world_of(request)
    client = state.clients.get(request.match_info["id"])
    client.cart.clear()
    return json_reply(client_view(state, client))


def add_routes(app: web.Application) -> None:
    """Register the strain and client routes on the control app."""
    app.router.add_routes(
        [
            web.get("/strains", list_strains),
            web.post("/strains", create_strain),
            web.get("/strains/{id}", get_strain),
            web.patch("/strains/{id}", patch_strain),
            web.delete("/strains/{id}", remove_strain),
            web.patch("/strains/{id}/locations/{country}", patch_location),
            web.post("/holders/{name}/clients", create_clients),
            web.get("/holders/{name}/clients", list_clients),
            web.get("/clients/{id}", get_client),
            web.patch("/clients/{id}", patch_client),
            web.post("/clients/{id}/cart", fill_cart),
            web.delete("/clients/{id}/cart", clear_cart),
            web.post("/clients/{id}/{action}", client_action),
        ]
    )
