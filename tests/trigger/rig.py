"""The trigger tests' receiver and configuration: a store's endpoint verifying with the
``standardwebhooks`` library, a webhook sink for orders and clients and a file sink for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from drgreen_poller.clock import FakeClock
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.sandbox import HolderInfo
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.conftest import write_config

SECRET = generate_webhook_secret()
NOW = FakeClock().now()


@dataclass
class Receiver:
    """A store's endpoint verifying with ``standardwebhooks``: 204, 401 unverified, or 500."""

    fail: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        from standardwebhooks.webhooks import Webhook

        body = await request.read()
        try:
            event = Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:  # the library's own verification error types
            self.refused += 1
            return web.Response(status=401)
        self.events.append(event)
        self.ids.append(request.headers["webhook-id"])
        return (
            web.Response(status=500, text="store down") if self.fail else web.Response(status=204)
        )


def sinks_toml(url: str) -> str:
    """A webhook sink for orders and clients, and a file sink for everything."""
    return f"""
[[sinks]]
name = "store"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = ["order.*", "client.*"]

[[sinks]]
name = "audit"
kind = "file"
path = "events.jsonl"
events = ["*"]
"""


def config_file(directory: Path, url: str, credentials: ApiCredentials) -> Path:
    (directory / "store.whsec").write_text(SECRET)
    holder = HolderInfo("shop", credentials, user_id="u-1", nft=None)
    return write_config(directory, "http://127.0.0.1:9/api/v1", holder, extra=sinks_toml(url))
