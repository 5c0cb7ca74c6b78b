"""The reload tests' world: the sandbox on real time (the daemon runs on it), holder ``shop``
with no orders, and verifying webhook receivers made on demand.

Owns the fixtures every reload module shares; helpers that are not fixtures live in
``tests.reload.running``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, SandboxState
from tests.fakes import WebhookReceiver, start
from tests.reload.running import CLOCK


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
