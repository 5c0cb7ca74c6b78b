"""A store's webhook endpoint for the reliability suite: it verifies Standard Webhooks
signatures with the reference library and records every request, and can hold its answer so a
SIGKILL lands mid-delivery. It never decides whether an arrival was expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.reliability.harness import CLOCK


@dataclass(frozen=True, slots=True)
class Arrival:
    """One verified webhook request: its ``webhook-id``, the event, when it came, and the
    sender's ``via`` (the sink URL's query parameter: several senders each name theirs)."""

    id: str
    event: dict[str, Any]
    body: bytes
    at: float
    via: str = ""


@dataclass
class Receiver:
    """A store's webhook endpoint that verifies Standard Webhooks signatures and records all.

    ``hold_s`` (drawn per request) delays the 204, so a SIGKILL can land mid-delivery;
    ``arrived`` is set on every request and cleared by whoever waits on it.
    """

    secret: str = field(default_factory=generate_webhook_secret)
    hold_s: Callable[[], float] = lambda: 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hooks"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(f"{request.headers.get('webhook-id')}: {exc}")
            return web.Response(status=401)
        via = request.query.get("via", "")
        self.arrivals.append(
            Arrival(request.headers["webhook-id"], event, body, CLOCK.monotonic(), via)
        )
        self.arrived.set()
        hold = self.hold_s()
        if hold > 0:
            await CLOCK.sleep(hold)
        return web.Response(status=204)

    def since(self, index: int) -> list[Arrival]:
        """Arrivals from ``index`` on."""
        return self.arrivals[index:]
