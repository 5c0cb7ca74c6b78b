"""Delivery as a user runs it: SIGKILL mid-delivery, deliveries list/retry/replay, listen."""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.store import Store
from drgreen_poller.webhook_signing import generate_webhook_secret, sign_webhook
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config
from tests.fakes import start
from tests.ports import free_port
from tests.waiting import eventually

CLOCK = SystemClock()
SECRET = generate_webhook_secret()


class SlowReceiver:
    """Accepts every webhook after a short real delay, so a kill lands mid-delivery."""

    def __init__(self, delay_s: float = 0.1) -> None:
        self.delay_s = delay_s
        self.accepted: list[str] = []
        self.fail = False
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        await CLOCK.sleep(self.delay_s)
        if self.fail:
            return web.Response(status=500)
        self.accepted.append(request.headers["webhook-id"])
        return web.Response(status=204)


@pytest.fixture
async def world(
    tmp_path: Path,
) -> AsyncIterator[tuple[LocalSandbox, HolderInfo, SlowReceiver, str]]:
    receiver = SlowReceiver()
    server = await start(receiver.app)
    async with LocalSandbox(SandboxState(CLOCK)) as box:
        holder = box.state.create_holder("shop")
        box.state.orders.create_many("shop", 40)
        (tmp_path / "store.whsec").write_text(SECRET)
        sink = f"""
[delivery]
retry_schedule = ["0s", "1s", "1s", "1s", "1s", "1s"]
concurrency = 4

[[sinks]]
name = "store"
kind = "webhook"
url = "{server.make_url("/events")}"
secret_file = "store.whsec"
"""
        config = write_config(tmp_path, box.base_url, holder, first_sync="emit", extra=sink)
        try:
            yield box, holder, receiver, str(config)
        finally:
            await server.close()


async def _event_ids(config_dir: Path) -> set[str]:
    store = await Store.open(config_dir / "state.db", sinks=())
    try:
        return {event["id"] for event in await store.events(limit=0)}
    finally:
        await store.close()


class TestCrashSafety:
    @pytest.mark.timeout(60)
    async def test_sigkill_mid_delivery_loses_nothing(
        self, world: tuple[LocalSandbox, HolderInfo, SlowReceiver, str], tmp_path: Path
    ) -> None:
        """Killed with SIGKILL while delivering, then restarted: every event arrives; repeats
        only ever repeat an id."""
        _, _, receiver, config = world
        daemon = await asyncio.create_subprocess_exec(
            *CLI, "-c", config, "run", stdout=PIPE, stderr=PIPE
        )
        await eventually(lambda: _at_least(receiver, 5), timeout_s=15.0, step_s=0.05)
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        killed_with = len(set(receiver.accepted))

        again = await asyncio.create_subprocess_exec(
            *CLI, "-c", config, "run", stdout=PIPE, stderr=PIPE
        )
        try:
            expected = await _event_ids(tmp_path)
            assert killed_with < len(expected)  # the kill really landed mid-way
            await eventually(lambda: _covers(receiver, expected), timeout_s=15.0, step_s=0.05)
        finally:
            if again.returncode is None:
                again.send_signal(signal.SIGTERM)
            await asyncio.wait_for(again.communicate(), 20)
        assert again.returncode == 0
        assert set(receiver.accepted) == expected
        repeats = [i for i, n in Counter(receiver.accepted).items() if n > 1]
        assert all(i in expected for i in repeats)


async def _at_least(receiver: SlowReceiver, count: int) -> bool:
    return len(receiver.accepted) >= count


async def _covers(receiver: SlowReceiver, expected: set[str]) -> bool:
    return expected <= set(receiver.accepted)


class TestDeliveryCommands:
    @pytest.mark.timeout(90)
    async def test_list_retry_replay(self, tmp_path: Path) -> None:
        """Failed deliveries are listed, requeued and delivered (same ids); replay resends them."""
        receiver = SlowReceiver(delay_s=0)
        receiver.fail = True
        server = await start(receiver.app)
        async with LocalSandbox(SandboxState(CLOCK)) as box:
            holder = box.state.create_holder("shop")
            box.state.orders.create_many("shop", 3)
            (tmp_path / "store.whsec").write_text(SECRET)
            sink = f"""
[delivery]
retry_schedule = ["0s"]

[[sinks]]
name = "store"
kind = "webhook"
url = "{server.make_url("/events")}"
secret_file = "store.whsec"
events = ["order.*"]
"""
            config = str(
                write_config(tmp_path, box.base_url, holder, first_sync="emit", extra=sink)
            )
            await _run_daemon_until(config, lambda: _states(tmp_path, {"failed"}))
            code, out, _ = await run_cli("-c", config, "deliveries", "list", "--state", "failed")
            failed_ids = {line.split()[5] for line in out.splitlines()}
            assert (code, len(failed_ids)) == (0, 3)
            code, out, _ = await run_cli("-c", config, "deliveries", "list", "--attempts")
            assert "failed 500" in out

            receiver.fail = False
            code, out, _ = await run_cli("-c", config, "deliveries", "retry", "--all-failed")
            assert (code, out.strip()) == (0, "3 delivery(ies) requeued")
            await _run_daemon_until(config, lambda: _states(tmp_path, {"delivered"}))
            assert set(receiver.accepted) == failed_ids

            code, out, _ = await run_cli(
                "-c", config, "deliveries", "replay", "--since", "1h", "--sink", "store"
            )
            assert (code, out.strip()) == (0, "3 event(s) queued again for store")
            await _run_daemon_until(config, lambda: _at_least(receiver, 6))
            assert sorted(receiver.accepted) == sorted([*failed_ids, *failed_ids])

            code, _, err = await run_cli("-c", config, "deliveries", "list", "--sink", "nope")
            assert code == 2
            assert "no such sink" in err
            code, _, err = await run_cli("-c", config, "deliveries", "retry", "999")
            assert code == 1
        await server.close()


async def _states(config_dir: Path, wanted: set[str]) -> bool:
    store = await Store.open(config_dir / "state.db", sinks=())
    try:
        rows = await store.deliveries(limit=1000)
    finally:
        await store.close()
    return bool(rows) and {row.state for row in rows} <= wanted


async def _run_daemon_until(config: str, check: Callable[[], Awaitable[bool]]) -> None:
    daemon = await asyncio.create_subprocess_exec(
        *CLI, "-c", config, "run", stdout=PIPE, stderr=PIPE
    )
    try:
        await eventually(check, timeout_s=15.0, step_s=0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.communicate(), 20)


class TestListenAndSecret:
    async def test_secret(self) -> None:
        """secret prints a new whsec_ secret each time."""
        first, second = await run_cli("secret"), await run_cli("secret")
        assert first[1].startswith("whsec_")
        assert first[1] != second[1]

    @pytest.mark.timeout(30)
    async def test_listen_verifies_and_prints(self) -> None:
        """listen answers 204 to a signed event and prints it; a bad signature gets 401."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *CLI, "listen", "--port", str(port), "--secret", SECRET, stdout=PIPE, stderr=PIPE
        )
        assert process.stdout is not None
        try:
            assert (
                "listening on" in (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
            )
            body = json.dumps(
                {"id": "evt_1", "type": "order.paid", "sequence": 2, "inferred": False,
                 "resource": {"type": "order", "id": "o-1"}}
            ).encode()  # fmt: skip
            stamp = int(CLOCK.now().timestamp())
            headers = {
                "webhook-id": "evt_1", "webhook-timestamp": str(stamp),
                "webhook-signature": sign_webhook([SECRET], "evt_1", stamp, body),
            }  # fmt: skip
            url = f"http://127.0.0.1:{port}/drgreen/events"
            async with aiohttp.ClientSession() as session:
                async with session.post(url, data=body, headers=headers) as good:
                    assert good.status == 204
                async with session.post(url, data=body + b" ", headers=headers) as bad:
                    assert bad.status == 401
            first = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
            second = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
            assert first.startswith("ok       evt_1: order.paid")
            assert "o-1 #2" in first
            assert second.startswith("REJECTED evt_1")
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
