"""examples/receiver.py, run as a store would run it, fed by our webhook sink."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.ports import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "receiver.py"
SECRET = generate_webhook_secret()


class TestExampleReceiver:
    @pytest.mark.timeout(30)
    async def test_verifies_and_deduplicates(self, tmp_path: Path) -> None:
        """It accepts our signed events, stores each webhook-id once, marks late ones stale,
        and refuses forgeries."""
        port = free_port()
        database = tmp_path / "received.db"
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), "--port", str(port), "--db", str(database),
            stdout=PIPE, stderr=PIPE, env={**os.environ, "DRGREEN_WEBHOOK_SECRET": SECRET},
        )  # fmt: skip
        assert process.stdout is not None
        try:
            while b"Running on" not in await asyncio.wait_for(process.stdout.readline(), 10):
                pass
            url = f"http://127.0.0.1:{port}/drgreen/events"
            config = WebhookSinkConfig(name="s", url=url, secrets=(Secret(SECRET, "t"),))
            sink = WebhookSink(config, DeliveryConfig())
            body = _event("evt_1", "order.approved", 7)
            now = SystemClock().now()
            first = await sink.deliver("evt_1", "order.approved", body, now)
            again = await sink.deliver("evt_1", "order.approved", body, now)  # a retry
            late = await sink.deliver(
                "evt_0", "order.created", _event("evt_0", "order.created", 6), now
            )
            await sink.close()
            assert (first.status, again.status, late.status) == (204, 204, 204)
            forged_headers = {
                "webhook-id": "evt_1",
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": "v1,Zm9yZ2Vk",
            }
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=body, headers=forged_headers) as forged,
            ):
                assert forged.status == 401
        finally:
            process.terminate()
            await asyncio.wait_for(process.communicate(), 10)
        with sqlite3.connect(database) as db:
            rows = db.execute("SELECT webhook_id, type, stale FROM received").fetchall()
        assert rows == [("evt_1", "order.approved", 0), ("evt_0", "order.created", 1)]


def _event(event_id: str, kind: str, sequence: int) -> bytes:
    resource = {"type": "order", "id": "o-1"}
    shown = {"id": event_id, "type": kind, "holder": "main", "resource": resource}
    return json.dumps({**shown, "sequence": sequence}).encode()
