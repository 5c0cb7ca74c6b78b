"""Interop: receivers built with the standardwebhooks and svix libraries verify our requests."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.sinks import WebhookSink
from tests.fakes import start

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdef").decode()
BODY = '{"id":"evt_abc","type":"order.shipped","sequence":4,"name":"Zoë ✓"}'.encode()


def _standardwebhooks(secret: str) -> Callable[[bytes, dict[str, str]], Any]:
    from standardwebhooks.webhooks import Webhook

    return lambda body, headers: Webhook(secret).verify(body, headers)


def _svix(secret: str) -> Callable[[bytes, dict[str, str]], Any]:
    from svix.webhooks import Webhook

    return lambda body, headers: Webhook(secret).verify(body, headers)


LIBRARIES = {"standardwebhooks": _standardwebhooks, "svix": _svix}


class LibraryReceiver:
    """A store endpoint that verifies with a library and answers 204 or 401."""

    def __init__(self, verify: Callable[[bytes, dict[str, str]], Any]) -> None:
        self.verify = verify
        self.verdicts: list[bool] = []
        self.last: tuple[bytes, dict[str, str]] | None = None
        self.app = web.Application()
        self.app.router.add_post("/hook", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.last = (body, headers)
        try:
            self.verify(body, headers)
        except Exception:  # the libraries raise their own WebhookVerificationError types
            self.verdicts.append(False)
            return web.Response(status=401)
        self.verdicts.append(True)
        return web.Response(status=204)


async def _send(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("receiver_secret", [OLD, NEW], ids=["old", "new"])
class TestLibrariesVerify:
    async def test_verified_during_rotation(self, library: str, receiver_secret: str) -> None:
        """With both secrets configured, a receiver knowing either one accepts the request."""
        receiver = LibraryReceiver(LIBRARIES[library](receiver_secret))
        server = await start(receiver.app)
        config = WebhookSinkConfig(
            name="store", url=str(server.make_url("/hook")),
            secrets=(Secret(OLD, "t"), Secret(NEW, "t")),
        )  # fmt: skip
        sink = WebhookSink(config, DeliveryConfig())
        outcome = await sink.deliver("evt_abc", "order.shipped", BODY, SystemClock().now())
        await sink.close()
        await server.close()
        assert outcome.ok, outcome
        assert receiver.verdicts == [True]

    async def test_tampering_is_rejected(self, library: str, receiver_secret: str) -> None:
        """Changing the body, the id or the timestamp of a signed request makes it fail."""
        receiver = LibraryReceiver(LIBRARIES[library](receiver_secret))
        server = await start(receiver.app)
        url = str(server.make_url("/hook"))
        config = WebhookSinkConfig(name="store", url=url, secrets=(Secret(receiver_secret, "t"),))
        sink = WebhookSink(config, DeliveryConfig())
        headers = sink.headers("evt_abc", "order.shipped", BODY, SystemClock().now())
        await sink.close()
        stamp = str(int(headers["webhook-timestamp"]) - 1)
        try:
            assert await _send(url, BODY, headers) == 204
            assert await _send(url, BODY.replace(b"4", b"5"), headers) == 401
            assert await _send(url, BODY, {**headers, "webhook-id": "evt_other"}) == 401
            assert await _send(url, BODY, {**headers, "webhook-timestamp": stamp}) == 401
        finally:
            await server.close()
        assert receiver.verdicts == [True, False, False, False]
