"""The reload tests' world: the sandbox on real time (the daemon runs on it), holder ``shop``
with no orders, and verifying webhook receivers made on demand.

Owns the fixtures every reload module shares; helpers that are not fixtures live in
``tests.reload.running``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from tests.conftest import write_config
from tests.fakes import WebhookReceiver, start
from tests.reload.running import CLOCK, SECRET, sink_toml

# What ``store_config`` makes: a verifying receiver and the config file delivering to it.
StoreConfigs = Callable[..., Awaitable[tuple[WebhookReceiver, Path]]]


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon runs on it (conftest's ``box`` serves it)."""
    return CLOCK


@pytest.fixture
def shop(state: SandboxState) -> HolderInfo:
    """Holder ``shop`` with no orders yet: each test's events are the ones it makes."""
    return state.create_holder("shop")


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Awaitable[tuple[WebhookReceiver, str]]]]:
    """A factory of verifying webhook receivers on loopback (each with its URL)."""
    servers: list[TestServer] = []

    async def make() -> tuple[WebhookReceiver, str]:
        hook = WebhookReceiver()
        servers.append(await start(hook.app))
        return hook, str(servers[-1].make_url("/events"))

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
def store_config(
    box: LocalSandbox,
    shop: HolderInfo,
    receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
    tmp_path: Path,
) -> StoreConfigs:
    """A factory: a new verifying receiver and the config file (in ``tmp_path``) of holder
    ``shop``, whose first sync emits, with webhook sink ``store`` to it signed with ``SECRET``;
    ``delivery``: the lines of a ``[delivery]`` table before it."""

    async def make(delivery: str = "") -> tuple[WebhookReceiver, Path]:
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        extra = (f"[delivery]\n{delivery}" if delivery else "") + sink_toml("store", url)
        return hook, write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=extra)

    return make
