"""The gateway in front of the simulated API: what a fault does to a request's answer.

Owns the injected answers (429, 5xx with JSON, nginx HTML or Envoy text bodies, ``Retry-After``
in seconds or as an HTTP-date), slow answers (on the injected clock), malformed and truncated
bodies, and connections dropped without an answer. It must not choose faults (``faults.py``
does) nor serve the API itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from email.utils import format_datetime

from aiohttp import web

from drgreen_poller.sandbox.dapp.faults import Fault
from drgreen_poller.sandbox.dapp.replies import REASONS, ApiError, dump_json, handled_error
from drgreen_poller.sandbox.world import World

# nginx's own wording in its built-in error pages.
NGINX_TITLES = {
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}
ENVOY_CONNECT_ERROR = (
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)
ENVOY_TIMEOUT = "upstream request timeout"
ENVOY_RATE_LIMITED = "local_rate_limited"
THROTTLER_MESSAGE = "ThrottlerException: Too Many Requests"
MALFORMED_BODY = (
    b"<html><head><title>Maintenance</title></head><body><h1>We'll be back soon</h1></body></html>"
)

Serve = Callable[[], Awaitable[web.Response]]
# nginx's status for "closed the connection without answering": what the counters record.
NO_RESPONSE = 444


def nginx_page(status: int) -> bytes:
    """nginx's built-in error page for ``status``."""
    title = NGINX_TITLES.get(status, f"{status} {REASONS.get(status, 'Error')}")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode("ascii")


def _retry_after(fault: Fault, state: World) -> dict[str, str]:
    if fault.retry_after_s is None:
        return {}
    if fault.retry_after_format == "http-date":
        when = state.clock.now() + timedelta(seconds=fault.retry_after_s)
        return {"Retry-After": format_datetime(when, usegmt=True)}
    return {"Retry-After": str(fault.retry_after_s)}


def _json_error(fault: Fault, state: World, request: web.Request) -> bytes:
    if fault.kind == "rate_limit":
        return dump_json({"statusCode": 429, "message": THROTTLER_MESSAGE})
    if fault.status == 500:
        error = ApiError(500, "Internal server error")
        body = handled_error(state.settings, error, url=request.raw_path, method=request.method)
        return dump_json(body)
    return dump_json({"statusCode": fault.status, "message": REASONS[fault.status]})


def error_answer(fault: Fault, state: World, request: web.Request) -> web.Response:
    """The answer of a ``rate_limit`` or ``server_error`` fault."""
    headers = _retry_after(fault, state)
    if fault.body == "html":
        headers["Server"] = "nginx"
        return web.Response(
            status=fault.status, body=nginx_page(fault.status), content_type="text/html",
            headers=headers,
        )  # fmt: skip
    if fault.body == "text":
        headers["Server"] = "envoy"
        if fault.kind == "rate_limit":
            text = ENVOY_RATE_LIMITED
        else:
            text = ENVOY_TIMEOUT if fault.status == 504 else ENVOY_CONNECT_ERROR
        return web.Response(status=fault.status, text=text, headers=headers)
    return web.Response(
        status=fault.status,
        body=_json_error(fault, state, request),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def truncate(response: web.Response, keep_fraction: float) -> web.Response:
    """The same answer with its body cut part-way (and a ``Content-Length`` that matches)."""
    body = response.body if isinstance(response.body, bytes) else b""
    cut = min(int(len(body) * keep_fraction), max(len(body) - 1, 0))
    return web.Response(
        status=response.status,
        body=body[:cut],
        headers={"Content-Type": response.headers.get("Content-Type", "application/json")},
    )


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection with nothing sent; the returned response is only for the counters."""
    transport = request.transport
    if transport is not None:  # None only when the client has already gone
        transport.abort()
    return web.Response(status=NO_RESPONSE)


async def through_gateway(
    fault: Fault | None, state: World, request: web.Request, serve: Serve
) -> web.Response:
    """Serve ``request``, altered by ``fault`` when one hit it."""
    if fault is None:
        return await serve()
    if fault.kind == "slow":
        await state.clock.sleep(fault.delay_s)
        return await serve()
    if fault.kind == "truncated":
        return truncate(await serve(), fault.keep_fraction)
    if fault.kind == "reset":
        return drop_connection(request)
    if fault.kind == "malformed":
        return web.Response(
            status=200, body=MALFORMED_BODY, content_type="application/json", charset="utf-8"
        )
    return error_answer(fault, state, request)
