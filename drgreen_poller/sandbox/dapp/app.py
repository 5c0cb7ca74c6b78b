"""The simulated Dr Green API under ``/api/v1``: one request from arrival to its counted answer.

Owns the order in which a Dr Green request is handled, as the real stack does it: counted;
gateway faults; Express body parsing; routing (404); the guard (401); validation and the
handler (400/409/500 in the selected error shape); the envelope; and the application keys under
which an app keeps the world and the traffic. It must not hold world rules nor control routes.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from drgreen_poller.canonical import express_query
from drgreen_poller.sandbox.dapp import routes
from drgreen_poller.sandbox.dapp.catalogue import HANDLERS as CATALOGUE_HANDLERS
from drgreen_poller.sandbox.dapp.client_activity import HANDLERS as ACTIVITY_HANDLERS
from drgreen_poller.sandbox.dapp.clients import HANDLERS as CLIENT_HANDLERS
from drgreen_poller.sandbox.dapp.faults import UNMATCHED
from drgreen_poller.sandbox.dapp.funnel import HANDLERS as FUNNEL_HANDLERS
from drgreen_poller.sandbox.dapp.gateway import through_gateway
from drgreen_poller.sandbox.dapp.guard import NestError, admit, header, parse_body
from drgreen_poller.sandbox.dapp.insights import HANDLERS as INSIGHT_HANDLERS
from drgreen_poller.sandbox.dapp.nfts import HANDLERS as NFT_HANDLERS
from drgreen_poller.sandbox.dapp.orders import HANDLERS as ORDER_HANDLERS
from drgreen_poller.sandbox.dapp.replies import (
    ApiError,
    envelope,
    handled_error,
    json_reply,
    nest_default,
)
from drgreen_poller.sandbox.dapp.routes import Call, Handler
from drgreen_poller.sandbox.dapp.traffic import Traffic
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import HolderInfo, ServiceRefusal
from drgreen_poller.sandbox.world.root import ANONYMOUS

API_PREFIX = "/api/v1"
HANDLERS: dict[str, Handler] = {
    **ORDER_HANDLERS,
    **CLIENT_HANDLERS,
    **ACTIVITY_HANDLERS,
    **CATALOGUE_HANDLERS,
    **INSIGHT_HANDLERS,
    **FUNNEL_HANDLERS,
    **NFT_HANDLERS,
}
Matched = tuple[routes.Route, dict[str, str]] | None
_CLIENT_CLOSED = 499  # nginx's status for a request whose client went away
WORLD_KEY: web.AppKey[World] = web.AppKey("sandbox_world", World)
TRAFFIC_KEY: web.AppKey[Traffic] = web.AppKey("sandbox_traffic", Traffic)

log = structlog.get_logger(__name__)


def _admit_route(
    state: World,
    request: web.Request,
    route: routes.Route,
    params: dict[str, str],
    body: Any,
) -> HolderInfo | None:
    """The guard of ``route``: no guard, the API-key guard, or a JWT-only route (always 401)."""
    if route.auth == "public":
        return None
    if route.auth == "jwt_only":
        raise NestError(401, nest_default(401, "Unauthorized", with_error=False))
    raw_query = request.rel_url.raw_query_string
    return admit(
        state, request.headers, method=request.method, raw_query=raw_query, path_params=params,
        body=body,
    )  # fmt: skip


async def _answer(state: World, request: web.Request, found: Matched) -> web.Response:
    """The API's answer, from body parsing to the envelope (everything behind the gateway)."""
    url, method = request.raw_path, request.method
    try:
        body = parse_body(request.content_type, await request.read())
        if found is None:
            raise NestError(404, nest_default(404, f"Cannot {method} {url}"))
        route, params = found
        holder = _admit_route(state, request, route, params, body)
        query = express_query(request.rel_url.raw_query_string)
        reply = HANDLERS[route.endpoint](Call(state, holder, params, query, body))
        return json_reply(envelope(reply.data, reply.status), reply.status)
    except NestError as exc:
        return json_reply(exc.body, exc.status)
    except ServiceRefusal as exc:
        error = ApiError(exc.status, exc.message)
        return json_reply(handled_error(state.settings, error, url=url, method=method), exc.status)
    except ApiError as exc:
        return json_reply(handled_error(state.settings, exc, url=url, method=method), exc.status)
    except Exception as exc:  # the server boundary: NestJS turns any other Error into a 500
        log.exception("sandbox_handler_failed", url=url, method=method)
        error = ApiError(500, str(exc) or "Internal server error")
        return json_reply(handled_error(state.settings, error, url=url, method=method), 500)


async def handle_api(request: web.Request) -> web.StreamResponse:
    """Serve one ``/api/v1`` request and count it, whatever happens to it."""
    state, traffic = request.app[WORLD_KEY], request.app[TRAFFIC_KEY]
    arrival_s, arrived_at = state.clock.monotonic(), state.clock.now()
    path = request.raw_path.split("?", 1)[0][len(API_PREFIX) :]
    found = routes.match(request.method, path)
    endpoint = found[0].endpoint if found is not None else UNMATCHED
    holder = state.holder_for_key(header(request.headers, "x-auth-apikey"))
    holder_name = holder.name if holder is not None else ANONYMOUS
    status = _CLIENT_CLOSED
    try:
        fault = traffic.faults.pick(endpoint, holder_name)
        response = await through_gateway(
            fault, state, request, lambda: _answer(state, request, found)
        )
        status = response.status
        return response
    finally:
        traffic.record_request(
            arrival_s=arrival_s,
            arrived_at=arrived_at,
            holder=holder_name,
            endpoint=endpoint,
            status=status,
            user_agent=request.headers.get("User-Agent", ""),
        )


def add_api_routes(app: web.Application, world: World, traffic: Traffic) -> None:
    """Serve the Dr Green API under ``/api/v1`` on ``app``, over ``world`` and ``traffic``."""
    app[WORLD_KEY] = world
    app[TRAFFIC_KEY] = traffic
    app.router.add_route("*", API_PREFIX + "{tail:.*}", handle_api)
