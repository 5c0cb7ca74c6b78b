"""``drgreen-poller listen``: a local receiver that verifies our signatures and prints events.

For store developers: it answers 204 to a request whose ``webhook-signature`` (or ``sha256=``
``X-Signature``) verifies with one of the given secrets and is fresh, 401 otherwise, and prints
one line per request, marking repeats of an event id. It can fail the first N requests on
purpose, to watch the daemon retry. It stores nothing.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from drgreen_poller.clock import Clock
from drgreen_poller.config_fields import is_whsec
from drgreen_poller.webhook_signing import sign_hex, verify_webhook


@dataclass
class ListenerState:
    """What the listener has seen."""

    secrets: Sequence[str]
    fail_first: int = 0
    requests: int = 0
    seen: set[str] = field(default_factory=set)


def _verified(state: ListenerState, headers: dict[str, str], body: bytes, now_s: float) -> bool:
    if "x-signature" in headers:
        return any(
            hmac.compare_digest(sign_hex(s, body), headers["x-signature"]) for s in state.secrets
        )
    # A hmac-sha256-hex sink's secret may be any text: only whsec_ ones sign Standard Webhooks.
    standard = [s for s in state.secrets if is_whsec(s)]
    return verify_webhook(
        standard,
        msg_id=headers.get("webhook-id", ""),
        timestamp=headers.get("webhook-timestamp", ""),
        signature_header=headers.get("webhook-signature", ""),
        body=body,
        now_s=now_s,
    )


def _describe(body: bytes) -> str:
    try:
        event = json.loads(body)
        resource = event["resource"]
        inferred = " (inferred)" if event.get("inferred") else ""
        return (
            f"{event['type']:30} {resource['type']} {resource['id']} #{event['sequence']}{inferred}"
        )
    except (ValueError, KeyError, TypeError):
        return f"(not an event: {len(body)} bytes)"


def build_listener(
    state: ListenerState, clock: Clock, say: Callable[[str], None]
) -> web.Application:
    """The receiver app: any path, POST only."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        state.requests += 1
        event_id = headers.get("webhook-id", "?")
        if not _verified(state, headers, body, clock.now().timestamp()):
            say(f"REJECTED {event_id}: signature does not verify (or timestamp too far off)")
            return web.json_response({"error": "invalid signature"}, status=401)
        if state.requests <= state.fail_first:
            say(f"FAILING  {event_id}: {_describe(body)} (answering 503 on purpose)")
            return web.json_response({"error": "failing on purpose"}, status=503)
        repeat = " (repeat)" if event_id in state.seen else ""
        state.seen.add(event_id)
        say(f"ok       {event_id}: {_describe(body)}{repeat}")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app
