"""Health: the pure rules for tiers and deliveries (from tables), /healthz going 503 over an
old delivery and back, and the running daemon's listener (/healthz, /metrics, a taken port).
"""

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
from drgreen_poller.monitoring import (
    HealthInputs,
    delivery_problems,
    health_problems,
)
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import SinkBacklog, TierRun
from tests.conftest import write_config
from tests.monitoring.rig import Rig, new_order_event
from tests.ports import free_port

STAMP = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
MINUTE = Timing(interval_s=60, jitter=0.1)
INPUTS = HealthInputs(["shop"], {"active_orders": MINUTE}, started_at=1000.0)


def _run(last_success: str | None) -> TierRun:
    return TierRun("shop", "active_orders", None, None, last_success, 0, None, None)


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


BACKLOG = {
    "store": SinkBacklog({"pending": 2, "delivering": 1, "failed": 0}, "2026-11-23T10:00:00Z"),
    "audit": SinkBacklog({"pending": 0, "delivering": 0, "failed": 4}, None),
}


class TestDeliveryRule:
    def test_within_the_threshold_is_healthy(self) -> None:
        """An owed delivery younger than the threshold (or exactly at it) is no problem."""
        assert delivery_problems(BACKLOG, 900, STAMP + 900) == []

    def test_too_old_is_reported_with_its_sink(self) -> None:
        """An owed delivery older than the threshold names the sink, the age and the limit."""
        assert delivery_problems(BACKLOG, 900, STAMP + 901) == [
            "sink store: oldest undelivered event waiting 901 s (expected within 900 s;"
            " 2 pending, 1 delivering)"
        ]

    def test_dead_deliveries_alone_are_healthy(self) -> None:
        """Failed (given up) rows are counted in the backlog but do not keep /healthz at 503."""
        assert delivery_problems({"audit": BACKLOG["audit"]}, 1, STAMP + 10**6) == []


class TestHealthz:
    async def test_an_old_delivery_makes_it_503_until_delivered(self, rig: Rig) -> None:
        """Healthy while the oldest owed delivery is within 15 minutes; 503 naming the sink
        after; healthy again once it is delivered."""
        await new_order_event(rig)
        rig.hook.fail_next = 1
        await rig.worker.run_once()
        rig.clock.advance(900)
        assert await rig.health() == (200, {"status": "ok"})
        rig.clock.advance(1)
        status, body = await rig.health()
        assert status == 503
        assert body == {
            "status": "unhealthy",
            "reasons": [
                "sink store: oldest undelivered event waiting 901 s (expected within 900 s;"
                " 1 pending, 0 delivering)"
            ],
        }
        await rig.worker.run_once()
        assert await rig.health() == (200, {"status": "ok"})


class TestListener:
    async def test_healthz_and_metrics(self, tmp_path: Path) -> None:
        """The running daemon answers /healthz 200 and /metrics with its series, none _created."""
        port = free_port()
        async with LocalSandbox(SandboxState(SystemClock())) as box:
            holder = box.state.create_holder("shop")
            box.state.orders.create("shop")
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
        assert 'drgreen_poller_upstream_budget_requests_per_second{holder="shop"} 200.0' in body
        assert 'drgreen_poller_poll_duration_seconds_count{outcome="ok",tier="strains"}' in body
        assert 'drgreen_poller_last_success_timestamp_seconds{holder="shop",tier="strains"}' in body
        assert "process_resident_memory_bytes" in body
        assert "_created" not in body

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
