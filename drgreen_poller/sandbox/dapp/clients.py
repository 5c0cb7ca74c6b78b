"""Handlers of the simulated client and cart endpoints (drgreen-api.md §3.5–3.8).

Owns the client list filters and sort keys, the approval summary, the verified-client list,
client detail (500 "Client not found" like the snapshot), client creation and the cart calls.
It must not change clients except through the state's rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drgreen_poller.sandbox.dapp import client_records
from drgreen_poller.sandbox.dapp.client_dto import parse_new_client
from drgreen_poller.sandbox.dapp.orders import client_name_matches
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
from drgreen_poller.sandbox.world.model import APPROVALS, Client, Shipping, country_name

ClientTest = Callable[[Client], bool]
KYC_LINK_BASE = "https://kyc.sandbox.local/verify/"


def _client_tests(call: Call, check: QueryCheck) -> tuple[list[ClientTest], str | None]:
    approval = check.choice("adminApproval", APPROVALS)
    verified = check.choice("isVerified", ("true", "false"))
    status = check.choice("status", ("Active", "InActive"))
    window = check.window()
    countries = check.json_list("countryCodes")
    search = check.search()
    tests: list[ClientTest] = []
    if approval is not None:
        tests.append(lambda c: c.admin_approval == approval)
    if verified is not None:
        tests.append(lambda c: c.is_kyc_verified == (verified == "true"))
    if status is not None:
        tests.append(lambda c: c.is_active == (status == "Active"))
    if window is not None:
        start, end = window
        tests.append(lambda c: start <= c.created_at < end)
    if countries is not None:
        wanted = set(countries)
        tests.append(lambda c: any(a.country_code in wanted for a in c.shippings))
    if search is not None:
        tests.append(lambda c: client_name_matches(call.state, c.id, search))
    return tests, approval


def list_clients(call: Call) -> Reply:
    """``GET /dapp/clients``."""
    check = QueryCheck(call.query)
    page = check.page()
    tests, approval = _client_tests(call, check)
    check.done()
    found = matching(call.state.clients.of(call.owner), tests)
    return Reply(
        approval_list(
            "clients",
            page,
            found,
            approval,
            lambda c, note, logs: client_records.client_list_item(
                call.state, c, with_note=note, with_logs=logs
            ),
        )
    )


def client_summary(call: Call) -> Reply:
    """``GET /dapp/clients/summary``: counts by ``adminApproval``."""
    clients = call.state.clients.of(call.owner)
    summary: dict[str, int] = dict.fromkeys(APPROVALS, 0)
    for client in clients:
        if client.admin_approval in summary:
            summary[client.admin_approval] += 1
    return Reply({"summary": {**summary, "totalCount": len(clients)}})


def verified_clients(call: Call) -> Reply:
    """``GET /dapp/clients/list``: VERIFIED clients only, unpaginated, by first name."""
    clients = [c for c in call.state.clients.of(call.owner) if c.admin_approval == "VERIFIED"]
    clients.sort(key=lambda c: (c.first_name, c.seq))
    return Reply({"clients": [client_records.client_brief(c) for c in clients]})


def client_detail(call: Call) -> Reply:
    """``GET /dapp/clients/{clientId}``, medical record included (as the real server does)."""
    require_uuid(call.params, "clientId")
    client = call.state.clients.held(call.owner, call.params["clientId"])
    if client is None:
        raise ApiError(500, "Client not found")
    return Reply(client_records.client_detail(call.state, client))


def create_client(call: Call) -> Reply:
    """``POST /dapp/clients``: a PENDING client and a KYC link (201)."""
    dto = parse_new_client(call.body)
    state = call.state
    when = state.now()
    address = dto.shipping
    shipping = Shipping(
        state.tables.new_id(),
        address["address1"],
        address["city"],
        address["state"],
        address["country"] or country_name(address["countryCode"]),
        address["countryCode"],
        address["postalCode"],
        when,
        address["address2"],
        address["landmark"],
    )
    client = state.clients.add(
        call.owner, dto.identity, shipping, medical_record=dto.medical_record
    )
    if dto.business is not None:
        client.businesses.append({"id": state.tables.new_id(), **dto.business})
    message = f"KYC link has been sent to client at {client.email}"
    data = {
        "clientId": client.id,
        "kycLink": KYC_LINK_BASE + client.id,
        "client": client_records.client_row(state, client),
        "message": message,
    }
    return Reply(data, 201)


def _cart_items(body: dict[str, Any], key: str) -> tuple[list[tuple[str, float]], list[str]]:
    raw = body.get(key)
    if not isinstance(raw, list) or not raw:
        return [], [f"{key} must contain at least 1 elements"]
    items: list[tuple[str, float]] = []
    messages: list[str] = []
    for i, item in enumerate(raw):
        entry = item if isinstance(item, dict) else {}
        strain_id, quantity = entry.get("strainId"), entry.get("quantity")
        if not isinstance(strain_id, str) or not is_uuid(strain_id):
            messages.append(f"{key}.{i}.strainId must be a UUID")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float):
            messages.append(
                f"{key}.{i}.quantity must be a number conforming to the specified constraints"
            )
        elif quantity < 0.001 or round(quantity, 3) != quantity:
            messages.append(f"{key}.{i}.quantity must not be less than 0.001")
        elif isinstance(strain_id, str):
            items.append((strain_id, float(quantity)))
    return items, messages


def _cart_of(call: Call, body: dict[str, Any]) -> tuple[str, list[str]]:
    """The cart id the body names: ``clientCartId`` (source) or the client's (docs shape)."""
    if "clientCartId" in body or "items" in body:
        cart_id = body.get("clientCartId")
        ok = isinstance(cart_id, str) and is_uuid(cart_id)
        return (str(cart_id), []) if ok else ("", ["clientCartId must be a UUID"])
    client_id = body.get("clientId")
    if not isinstance(client_id, str) or not is_uuid(client_id):
        return "", ["clientId must be a UUID"]
    client = call.state.clients.held(call.owner, client_id)
    if client is None:
        raise ApiError(400, "Client is not found")
    return client.cart_id, []


def add_to_cart(call: Call) -> Reply:
    """``POST /dapp/carts`` with ``{items, clientCartId}`` (source) or ``{clientId, cartItems}``."""
    body = call.body if isinstance(call.body, dict) else {}
    cart_id, messages = _cart_of(call, body)
    items, item_messages = _cart_items(body, "cartItems" if "cartItems" in body else "items")
    if messages or item_messages:
        raise ApiError(400, messages + item_messages, validation=True)
    rows = call.state.carts.add(call.owner, cart_id, items)
    return Reply({"message": f"{rows} items added to the cart"}, 201)


def list_carts(call: Call) -> Reply:
    """``GET /dapp/carts``: the holder's clients with their carts, paginated."""
    check = QueryCheck(call.query)
    page = check.page()
    check.done()
    clients = ordered(call.state.clients.of(call.owner), "created_at", page.descending)
    items = [client_records.cart_client(call.state, c) for c in page.slice(clients)]
    return Reply({"clients": items, "pageMetaDto": page.meta(len(clients))})


def remove_from_cart(call: Call) -> Reply:
    """``DELETE /dapp/carts/{cartId}[?strainId=]``: empty the cart or drop one strain."""
    require_uuid(call.params, "cartId")
    strain_id = call.query.get("strainId")
    call.state.carts.remove(call.owner, call.params["cartId"], strain_id)
    message = "Cart item removed successfully" if strain_id else "Cart cleared successfully"
    return Reply({"message": message})


HANDLERS: dict[str, Handler] = {
    "GET /dapp/clients": list_clients,
    "GET /dapp/clients/summary": client_summary,
    "GET /dapp/clients/list": verified_clients,
    "GET /dapp/clients/{clientId}": client_detail,
    "POST /dapp/clients": create_client,
    "POST /dapp/carts": add_to_cart,
    "GET /dapp/carts": list_carts,
    "DELETE /dapp/carts/{cartId}": remove_from_cart,
}
