"""Webhook sinks over a unix socket, from the TOML file to a signed delivery on the socket."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.errors import ConfigError
from drgreen_poller.events import Resource
from drgreen_poller.sandbox import SandboxState
from drgreen_poller.settings import sink_routes
from drgreen_poller.sinks import build_sinks
from drgreen_poller.store import Observation, Store
from drgreen_poller.webhook_signing import generate_webhook_secret, verify_webhook
from tests.conftest import write_config

SECRET = generate_webhook_secret()


def _sink_config(tmp_path: Path, sink: str) -> Path:
    """A configuration file with one webhook sink table whose body is ``sink``."""
    holder = SandboxState(SystemClock()).create_holder("shop")
    (tmp_path / "store.whsec").write_text(SECRET)
    table = f'[[sinks]]\nname = "store"\nkind = "webhook"\nsecret_file = "store.whsec"\n{sink}\n'
    return write_config(tmp_path, "http://127.0.0.1:9/api/v1", holder, extra=table)


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A socket path short enough for AF_UNIX (tmp_path can be longer than 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="dgp-") as directory:
        yield Path(directory) / "hooks.sock"


class TestLoading:
    def test_unix_socket_is_accepted(self, tmp_path: Path) -> None:
        """unix_socket loads as a path; http:// to any host is then local (no allow_remote)."""
        config = load_config(
            _sink_config(
                tmp_path, 'url = "http://store.internal/hooks"\nunix_socket = "/run/s/h.sock"'
            )
        )
        [sink] = config.sinks
        assert isinstance(sink, WebhookSinkConfig)
        assert sink.unix_socket == Path("/run/s/h.sock")
        assert sink.url == "http://store.internal/hooks"

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ('"run/h.sock"', "must be an absolute path, not 'run/h.sock'"),
            ('""', "must be an absolute path, not ''"),
            ("7", "must be a string, not an integer"),
            (f'"/{"x" * 120}"', "is 121 bytes long; a unix socket path takes at most 107"),
        ],
    )
    def test_bad_values(self, tmp_path: Path, value: str, message: str) -> None:
        """A relative, empty, non-string or too long unix_socket is one line naming the key."""
        path = _sink_config(tmp_path, f'url = "http://localhost/hooks"\nunix_socket = {value}')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.problems == [f"sinks[0].unix_socket: {message}"]

    def test_remote_http_without_a_socket_is_still_refused(self, tmp_path: Path) -> None:
        """Without unix_socket, http:// to a remote host still needs allow_remote."""
        with pytest.raises(ConfigError, match=r"sinks\[0\]\.url: http:// is only allowed"):
            load_config(_sink_config(tmp_path, 'url = "http://store.internal/hooks"'))


class TestDelivery:
    async def test_a_signed_event_arrives_on_the_socket(
        self, tmp_path: Path, socket_path: Path
    ) -> None:
        """An event recorded for a unix_socket sink is POSTed, signed, to the URL's path there."""
        received: list[tuple[str, dict[str, str], bytes]] = []

        async def handle(request: web.Request) -> web.Response:
            received.append((request.path, dict(request.headers), await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(socket_path)).start()
        config = load_config(
            _sink_config(
                tmp_path, f'url = "http://store.internal/events"\nunix_socket = "{socket_path}"'
            )
        )
        clock = FakeClock()
        store = await Store.open(config.daemon.state_path, sinks=sink_routes(config))
        sinks = build_sinks(config.sinks, config.delivery)
        worker = DeliveryWorker(store, sinks, config.delivery, clock, random.Random(1))
        try:
            change = Observation(
                Resource("order", "o-1"), {}, None, changes=[Change("order.approved", {})]
            )
            await store.commit_events("shop", [change], now=clock.now())
            assert await worker.run_once() == 1
        finally:
            for sink in sinks.values():
                await sink.close()
            await store.close()
            await runner.cleanup()
        [(path, headers, body)] = received
        [row] = await _deliveries(config.daemon.state_path)
        assert row == ("delivered", headers["webhook-id"])
        assert (path, headers["Host"]) == ("/events", "store.internal")
        assert verify_webhook(
            [SECRET],
            msg_id=headers["webhook-id"],
            timestamp=headers["webhook-timestamp"],
            signature_header=headers["webhook-signature"],
            body=body,
            now_s=clock.now().timestamp(),
        )


async def _deliveries(state_path: Path) -> list[tuple[str, str]]:
    store = await Store.open(state_path, sinks=())
    try:
        return [(row.state, row.event_id) for row in await store.deliveries(limit=10)]
    finally:
        await store.close()
