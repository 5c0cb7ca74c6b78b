"""The control API's own machinery: its error convention and routes for the sandbox as a whole.

Owns the JSON error convention of the control API (``{"error": ...}`` with 400/404/409, never a
traceback), the routes for reset, settings, holders and their keys' NFT, the ETH rate, faults
and request counts, and registering every control route (``entities`` and ``orders`` add the
world's entities). It must not hold world rules nor answer ``/api/v1``.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from drgreen_poller.sandbox.control import entities, orders
from drgreen_poller.sandbox.control.views import nft_view, read_json, traffic_of, world_of
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.inputs import as_bool, as_number, as_str, check_keys
from drgreen_poller.sandbox.world.model import HolderInfo, InvalidInput, SandboxError

CONTROL_PREFIX = "/_sandbox"
log = structlog.get_logger(__name__)


def error_reply(status: int, message: str) -> web.Response:
    """A control-API error."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure of a control request into ``{"error": ...}`` JSON."""
    try:
        return await handler(request)
    except SandboxError as exc:
        return error_reply(exc.status, str(exc))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_reply(405, f"{request.method} is not allowed on {request.path}; use {allowed}")
    except web.HTTPNotFound:
        return error_reply(404, f"no control route {request.method} {request.path}")
    except Exception as exc:  # the server boundary: report, never a traceback page
        log.exception("sandbox_control_failed", path=request.path, method=request.method)
        return error_reply(500, f"internal error: {type(exc).__name__}: {exc}")


def holder_view(holder: HolderInfo, state: World, *, secret: bool = False) -> dict[str, Any]:
    """A holder as the control API shows it; the secret key only when it is first issued."""
    nft = None if holder.nft is None else {
        "id": holder.nft.id, "tokenId": holder.nft.token_id, "ownerId": holder.nft.owner_id,
    }  # fmt: skip
    view: dict[str, Any] = {"name": holder.name, "api_key": holder.credentials.api_key}
    if secret:
        view["secret_key"] = holder.credentials.secret_key
    view.update(
        user_id=holder.user_id,
        nft=nft,
        revoked=holder.revoked,
        clients=len(state.clients.of(holder)),
        orders=len(state.orders.of(holder)),
    )
    return view


async def reset(request: web.Request) -> web.Response:
    """``POST /_sandbox/reset``: empty the world (settings are kept)."""
    world_of(request).reset()
    traffic_of(request).clear()
    return web.json_response({"reset": True, "settings": world_of(request).settings.as_dict()})


async def get_settings(request: web.Request) -> web.Response:
    """``GET /_sandbox/settings``."""
    return web.json_response(world_of(request).settings.as_dict())


async def patch_settings(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/settings``: change any of the variant switches."""
    settings = world_of(request).update_settings(await read_json(request))
    return web.json_response(settings.as_dict())


async def create_holder(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders`` ``{"name", "nft": true}``: issue a key pair (201)."""
    body = await read_json(request)
    check_keys(body, ("name", "nft"), "a holder")
    state = world_of(request)
    holder = state.create_holder(
        as_str(body.get("name"), "name"), nft=as_bool(body.get("nft", True), "nft")
    )
    return web.json_response(holder_view(holder, state, secret=True), status=201)


async def list_holders(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders``: every holder, without secret keys."""
    state = world_of(request)
    return web.json_response({"holders": [holder_view(h, state) for h in state.holders.values()]})


async def get_holder(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}``."""
    state = world_of(request)
    return web.json_response(holder_view(state.holder(request.match_info["name"]), state))


async def revoke_holder(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/revoke``: the key gets 401 from now on."""
    state = world_of(request)
    holder = state.revoke_holder_key(request.match_info["name"])
    return web.json_response(holder_view(holder, state))


async def restore_holder(request: web.Request) -> web.Response:
    """``POST /_sandbox/holders/{name}/restore``: a revoked key is accepted again."""
    state = world_of(request)
    holder = state.restore_holder_key(request.match_info["name"])
    return web.json_response(holder_view(holder, state))


async def get_nft(request: web.Request) -> web.Response:
    """``GET /_sandbox/holders/{name}/nft``: the holder's key and its settable fields."""
    state = world_of(request)
    holder = state.holder(request.match_info["name"])
    return web.json_response(nft_view(holder, state.nfts.of(holder)))


async def patch_nft(request: web.Request) -> web.Response:
    """``PATCH /_sandbox/holders/{name}/nft``: set the key's metadata or sale fields (what
    ``GET /nfts/{tokenId}`` shows); all are checked before any is set."""
    state = world_of(request)
    holder = state.holder(request.match_info["name"])
    nft = state.nfts.update(holder, await read_json(request))
    return web.json_response(nft_view(holder, nft))


async def get_eth_rate(request: web.Request) -> web.Response:
    """``GET /_sandbox/eth-rate``."""
    return web.json_response({"ethPerUsd": world_of(request).commissions.eth_per_usd})


async def put_eth_rate(request: web.Request) -> web.Response:
    """``PUT /_sandbox/eth-rate`` ``{"ethPerUsd": 0.00032}``."""
    body = await read_json(request)
    check_keys(body, ("ethPerUsd",), "the ETH rate")
    world_of(request).commissions.set_eth_rate(as_number(body.get("ethPerUsd"), "ethPerUsd"))
    return web.json_response({"ethPerUsd": world_of(request).commissions.eth_per_usd})


async def list_faults(request: web.Request) -> web.Response:
    """``GET /_sandbox/faults``: active faults and what remains of them."""
    faults = traffic_of(request).faults.active()
    return web.json_response({"faults": [fault.as_dict() for fault in faults]})


async def add_fault(request: web.Request) -> web.Response:
    """``POST /_sandbox/faults``: activate a fault (201)."""
    fault = traffic_of(request).add_fault(await read_json(request))
    return web.json_response(fault.as_dict(), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/faults``: deactivate every fault."""
    traffic_of(request).clear_faults()
    return web.json_response({"faults": []})


async def remove_fault(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/faults/{id}``: deactivate one fault."""
    raw = request.match_info["fault_id"]
    if not raw.isdigit():
        raise InvalidInput(f"fault id must be a number, got {raw!r}")
    traffic_of(request).remove_fault(int(raw))
    return web.json_response({"removed": int(raw)})


async def get_requests(request: web.Request) -> web.Response:
    """``GET /_sandbox/requests[?holder=]``: request counts and the recent request log."""
    holder = request.query.get("holder")
    return web.json_response(traffic_of(request).request_counts(holder))


async def reset_requests(request: web.Request) -> web.Response:
    """``DELETE /_sandbox/requests``: count from zero."""
    traffic_of(request).reset_request_counts()
    return web.json_response(traffic_of(request).request_counts())


def control_app() -> web.Application:
    """The control API as an application to mount at ``CONTROL_PREFIX`` on a sandbox app.

    Its handlers find the world and the traffic under ``dapp``'s keys of the parent app.
    """
    app = web.Application(middlewares=[control_errors])
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.post("/reset", reset),
            web.get("/settings", get_settings),
            web.patch("/settings", patch_settings),
            web.get("/holders", list_holders),
            web.post("/holders", create_holder),
            web.get("/holders/{name}", get_holder),
            web.post("/holders/{name}/revoke", revoke_holder),
            web.post("/holders/{name}/restore", restore_holder),
            web.get("/holders/{name}/nft", get_nft),
            web.patch("/holders/{name}/nft", patch_nft),
            web.get("/eth-rate", get_eth_rate),
            web.put("/eth-rate", put_eth_rate),
            web.get("/faults", list_faults),
            web.post("/faults", add_fault),
            web.delete("/faults", clear_faults),
            web.delete("/faults/{fault_id}", remove_fault),
            web.get("/requests", get_requests),
            web.delete("/requests", reset_requests),
        ]
    )
    entities.add_routes(app)
    orders.add_routes(app)
