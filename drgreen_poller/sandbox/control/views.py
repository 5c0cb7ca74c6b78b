"""How the control API reads requests and shows entities.

Owns reading a control request's JSON body, reaching the app's world and traffic, and the
control views of entities (the Dr Green row from ``dapp``'s records plus what only the sandbox
knows, such as the holder and the cart). It must not change the world nor hold routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from drgreen_poller.sandbox.dapp import client_records, records, strain_records
from drgreen_poller.sandbox.dapp.app import TRAFFIC_KEY, WORLD_KEY
from drgreen_poller.sandbox.dapp.traffic import Traffic
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.inputs import as_dict, as_number, as_str
from drgreen_poller.sandbox.world.model import (
    Client,
    Commission,
    HolderInfo,
    InvalidInput,
    Order,
    Strain,
    iso,
    num,
)
from drgreen_poller.sandbox.world.tokens import Nft


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty).

    Raises:
        InvalidInput: the body is not JSON or not an object.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    return body


def world_of(request: web.Request) -> World:
    """The world behind this app (stored by ``dapp.app.add_api_routes``)."""
    return request.config_dict[WORLD_KEY]


def traffic_of(request: web.Request) -> Traffic:
    """The faults and request counts of this app's simulated API."""
    return request.config_dict[TRAFFIC_KEY]


def json_reply(data: Any, status: int = 200) -> web.Response:
    """A control-API answer."""
    return web.json_response(data, status=status)


def strain_view(strain: Strain) -> dict[str, Any]:
    """A strain with every location, its timestamps and whether it was removed."""
    view = strain_records.strain_detail(strain, None)
    view.update(createdAt=iso(strain.created_at), updatedAt=iso(strain.updated_at))
    view["removed"] = strain.deleted
    return view


def client_view(state: World, client: Client) -> dict[str, Any]:
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


def order_view(state: World, order: Order) -> dict[str, Any]:
    """The full stored order: the raw row plus lines, transactions, logs and delivery fee."""
    view = records.order_row(state, order)
    view.update(
        holder=order.holder,
        deliveryFee=num(order.delivery_fee),
        transactions=records.completed_payments(order),
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


def commission_view(state: World, commission: Commission) -> dict[str, Any]:
    """A commission list item plus holder, order id and transaction hash."""
    view = records.commission_item(state, commission)
    view.update(
        holder=commission.holder,
        orderId=commission.order_id,
        transactionHash=commission.transaction_hash,
    )
    return view


def nft_view(holder: HolderInfo, nft: Nft) -> dict[str, Any]:
    """A holder's key as the control API shows it: the token and every field it may set."""
    meta = nft.metadata
    return {
        "holder": holder.name,
        "id": nft.id,
        "tokenId": nft.token_id,
        "ownerId": nft.owner_id,
        "price": None if nft.price is None else num(nft.price),
        "isListedForSale": nft.listed_for_sale,
        "nftType": meta.nft_type,
        "nftName": meta.nft_name,
        "imageUrl": meta.image_url,
        "description": meta.description,
        "planetNo": meta.planet_no,
        "planetName": meta.planet_name,
        "clientCount": meta.client_count,
        "txCount": meta.tx_count,
        "txVolume": meta.tx_volume,
    }


def created_reply(views: list[dict[str, Any]], body: Mapping[str, Any]) -> web.Response:
    """One view, or ``{"count", "ids"}`` when the body asked for a ``count``."""
    if "count" in body:
        return json_reply({"count": len(views), "ids": [view["id"] for view in views]}, 201)
    return json_reply(views[0], 201)


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
