"""Health and metrics: the pure health rule, and the daemon's real /healthz and /metrics."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.errors import DrGreenError
from drgreen_poller.monitoring import HealthInputs, health_problems
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import TierRun
from tests.conftest import write_config

STAMP = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
MINUTE = Timing(interval_s=60, jitter=0.1)
INPUTS = HealthInputs(["shop"], {"active_orders": MINUTE}, started_at=1000.0)


def _run(last_success: str | None) -> TierRun:
    return TierRun("shop", "active_orders", None, None, last_success, 0, None, None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestHealthRule:
    def test_recent_success_is_healthy(self) -> None:
        """A tier that succeeded within interval × 1.1 + one interval of slack is healthy."""
        assert health_problems(INPUTS, [_run("2026-11-23T10:00:00.000Z")], {}, STAMP + 100) == []

    def test_stale_success_is_reported(self) -> None:
        """A tier whose last success is too old is named with its age and the allowance."""
        problems = health_problems(INPUTS, [_run("2026-11-23T10:00:00.000Z")], {}, STAMP + 300)
        assert problems == ["shop/active_orders: last success 300 s ago (expected within 126 s)"]

    def test_never_ran_counts_from_start(self) -> None:
        """A tier that never succeeded is healthy only within the allowance after start."""
        assert health_problems(INPUTS, [], {}, 1100.0) == []
        assert health_problems(INPUTS, [], {}, 1200.0) == [
            "shop/active_orders: no success yet (expected within 126 s)"
        ]

    def test_unauthorized_holder(self) -> None:
        """A holder whose key is refused makes the daemon unhealthy."""
        problems = health_problems(INPUTS, [], {"shop": "2026-11-23T10:00:00.000Z"}, 1001.0)
        assert problems == ["shop: Dr Green refuses the key since 2026-11-23T10:00:00.000Z"]


class TestListener:
    async def test_healthz_and_metrics(self, tmp_path: Path) -> None:
        """The running daemon answers /healthz 200 and /metrics with polls and requests."""
        port = _free_port()
        async with LocalSandbox(SandboxState(SystemClock())) as box:
            holder = box.state.create_holder("shop")
            box.state.create_order("shop")
            config = load_config(
                write_config(tmp_path, box.base_url, holder, http_listen=f"127.0.0.1:{port}"), {}
            )
            controls = Controls()
            daemon = asyncio.create_task(run_daemon(config, SystemClock(), controls))
            try:
                async with aiohttp.ClientSession() as session:
                    body = await _wait_for_polls(session, port, daemon)
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                        assert health.status == 200
                        assert await health.json() == {"status": "ok"}
            finally:
                controls.request_stop()
                await asyncio.wait_for(daemon, 5)
        assert 'drgreen_poller_polls_total{holder="shop",outcome="ok",tier="active_orders"}' in body
        assert 'endpoint="GET /dapp/orders",holder="shop",status="200"' in body
        assert 'drgreen_poller_active_entities{holder="shop",tier="active_orders"} 1.0' in body

    async def test_port_in_use_is_a_clear_error(self, tmp_path: Path) -> None:
        """A taken http_listen port stops the daemon with a message naming the key."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            async with LocalSandbox(SandboxState(SystemClock())) as box:
                holder = box.state.create_holder("shop")
                config = load_config(
                    write_config(tmp_path, box.base_url, holder, http_listen=address), {}
                )
                with pytest.raises(DrGreenError, match=r"daemon\.http_listen: cannot listen on"):
                    await run_daemon(config, SystemClock(), Controls())


async def _wait_for_polls(
    session: aiohttp.ClientSession, port: int, daemon: asyncio.Task[None]
) -> str:
    """The /metrics page once every tier has run (polling it every 50 ms)."""
    clock = SystemClock()
    for _ in range(100):
        if daemon.done():
            daemon.result()
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                body = await response.text()
        except aiohttp.ClientConnectionError:
            body = ""
        if body.count("drgreen_poller_polls_total{") >= 5:
            return body
        await clock.sleep(0.05)
    raise AssertionError("the tiers never all ran")
