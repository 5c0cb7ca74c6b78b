"""The operator page's test rig: the real daemon against the sandbox, delivering to a real
webhook receiver that fails until told otherwise, with its HTTP listener on a free port.

Shared by the page's aiohttp tests and its headless-browser test, with the requests the former
make (a page, a form, the page's form token, a failed order); holds no test of its own.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, load_config
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.store import DeliveryRow, Store
from tests.fakes import WebhookReceiver, start
from tests.ports import free_port
from tests.waiting import eventually

CLOCK = SystemClock()
TOKEN = "operator-token-for-tests-0123456789"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None: it has none), found the way a
    UDP socket picks its source address; nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routed by the default route, if any
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104 - compared, not bound


@dataclass
class Rig:
    """A running daemon and what it talks to."""

    base: str  # the page's URL, http://127.0.0.1:PORT
    port: int
    box: LocalSandbox
    holder: HolderInfo
    receiver: WebhookReceiver
    config: Config
    daemon: asyncio.Task[None]

    async def deliveries(self, state: str | None = None) -> list[DeliveryRow]:
        store = await Store.open_reader(self.config.daemon.state_path)
        try:
            return await store.deliveries(state=state, limit=1000)
        finally:
            await store.close()

    async def opened(self) -> int:
        """How many times the state has been opened to write (its lineage generation)."""
        store = await Store.open_reader(self.config.daemon.state_path)
        try:
            return store.lineage.generation
        finally:
            await store.close()

    async def synced(self) -> bool:
        """Whether the first sweeps of the order and client tiers are recorded."""
        store = await Store.open_reader(self.config.daemon.state_path)
        try:
            runs = await store.tier_runs()
        finally:
            await store.close()
        return {r.tier for r in runs if r.seeded_at} >= {"active_orders", "pending_kyc"}

    async def wait_failed(self, at_least: int = 1) -> list[DeliveryRow]:
        """Until ``at_least`` deliveries have failed for good; returns the failed ones."""
        failed: list[DeliveryRow] = []

        async def enough() -> bool:
            failed[:] = await self.deliveries("failed")
            return len(failed) >= at_least

        await eventually(enough, what="failed deliveries", task=self.daemon, timeout_s=8)
        return failed


def _config_text(base_url: str, port: int, listen: str, receiver_url: str, daemon: str) -> str:
    return f"""
[daemon]
state_path = "state.db"
http_listen = "{listen}:{port}"
{daemon}

[api]
base_url = "{base_url}"
requests_per_second = 200
burst = 20

[[holders]]
name = "shop"
api_key_file = "shop.api_key"
secret_key_file = "shop.secret_key"
strain_countries = ["GBR"]

[schedule]
active_orders = "0.2s"
stale_orders = "0.2s"
pending_kyc = "0.2s"
commissions = "0.2s"
strains = "0.2s"
jitter = 0

[delivery]
retry_schedule = ["0s", "0.05s"]

[[sinks]]
name = "store"
kind = "webhook"
url = "{receiver_url}"
secret = "{SECRET}"
events = ["order.*", "client.*"]
"""


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, *, listen: str = "127.0.0.1", daemon: str = ""
) -> AsyncIterator[Rig]:
    """The daemon (``daemon``: more ``[daemon]`` lines) once it has seeded one order, its
    receiver answering 500 until told otherwise, until the block ends."""
    receiver = WebhookReceiver()
    receiver.fail_next, receiver.fail_status = 10**9, 500
    receiver_server = await start(receiver.app)
    async with LocalSandbox(SandboxState(CLOCK)) as box:
        holder = box.state.create_holder("shop")
        box.state.orders.create("shop")
        (tmp_path / "shop.api_key").write_text(holder.credentials.api_key)
        (tmp_path / "shop.secret_key").write_text(holder.credentials.secret_key)
        port = free_port()
        url = str(receiver_server.make_url("/hook"))
        path = tmp_path / "config.toml"
        path.write_text(_config_text(box.base_url, port, listen, url, daemon))
        config = load_config(path, {})
        controls = Controls()
        task = asyncio.create_task(run_daemon(config, CLOCK, controls))
        rig = Rig(f"http://127.0.0.1:{port}", port, box, holder, receiver, config, task)
        try:
            await eventually(rig.synced, what="the first sync", task=task, timeout_s=8)
            yield rig
        finally:
            controls.request_stop()
            await asyncio.wait_for(task, 5)
            await receiver_server.close()


async def get_page(rig: Rig, path: str, **headers: str) -> tuple[int, str]:
    """GET ``path`` of the page (redirects not followed): the status and the body."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(rig.base + path, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def post_form(
    rig: Rig, path: str, form: dict[str, str], **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    """POST ``form`` to ``path`` (redirects not followed): the status, the body, the response."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            rig.base + path, data=form, headers=headers, allow_redirects=False
        ) as response,
    ):
        return response.status, await response.text(), response


async def csrf_token(rig: Rig, **headers: str) -> str:
    """The form token the main page carries."""
    _, page = await get_page(rig, "/", **headers)
    found = CSRF_RE.search(page)
    assert found, page[:500]
    return found.group(1)


async def new_failed_order(rig: Rig) -> str:
    """An order created upstream now; returns its id once its delivery has failed for good."""
    order = rig.box.state.orders.create("shop")

    async def failed() -> bool:
        _, page = await get_page(rig, f"/?state=failed&resource={order.id}")
        return order.id in page and "order.created" in page

    await rig.wait_failed()
    await eventually(failed, what="the order's failed delivery", task=rig.daemon, timeout_s=8)
    return order.id
