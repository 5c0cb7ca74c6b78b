"""Stopping as an operator does it: SIGTERM to ``run`` mid-sweep, Ctrl-C to ``demo``.

Each test runs the real CLI in a subprocess; the ``run`` test talks to a sandbox in a process of
its own, as Dr Green would be, and reads what it saw from its request log.
"""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.store import Store
from tests.cli_run import CLI

CLOCK = SystemClock()
ORDERS = 2000  # 20 pages of 100: a first sweep of 20 s at 1 s per page
# A request sent just before the stop was logged may reach the sandbox a moment after it.
IN_FLIGHT = timedelta(seconds=0.25)


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


@pytest.fixture
async def sandbox() -> AsyncIterator[dict[str, Any]]:
    """``drgreen-poller sandbox`` in its own process; its announcement (base_url, keys...)."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "sandbox", "--port", "0", stdout=PIPE, stderr=PIPE
    )
    try:
        assert process.stdout is not None
        ready: dict[str, Any] = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        yield ready
    finally:
        await _stop(process)


def _config(directory: Path, ready: dict[str, Any]) -> Path:
    """The daemon's config for the sandbox's demo holder: every tier once an hour."""
    (directory / "demo.api_key").write_text(ready["api_key"])
    (directory / "demo.secret_key").write_text(ready["secret_key"])
    path = directory / "config.toml"
    tiers = "\n".join(
        f'{tier} = "1h"'
        for tier in ("active_orders", "stale_orders", "pending_kyc", "commissions", "strains")
    )
    path.write_text(
        f"""
[daemon]
state_path = "state.db"
http_listen = ""
log_level = "debug"

[api]
base_url = "{ready["base_url"]}"
requests_per_second = 20
burst = 5

[[holders]]
name = "demo"
api_key_file = "demo.api_key"
secret_key_file = "demo.secret_key"

[schedule]
{tiers}

[[sinks]]
name = "audit"
kind = "file"
path = "events.jsonl"
events = ["*"]
"""
    )
    return path


async def _requests(http: aiohttp.ClientSession, control: str) -> list[dict[str, Any]]:
    async with http.get(f"{control}/requests", params={"holder": "demo"}) as answer:
        log: list[dict[str, Any]] = (await answer.json())["log"]
        return log


async def _settled_requests(http: aiohttp.ClientSession, control: str) -> list[dict[str, Any]]:
    """The sandbox's request log once it stops growing (a cut request is logged when its slow
    answer ends)."""
    seen = await _requests(http, control)
    for _ in range(20):
        await CLOCK.sleep(0.5)
        now = await _requests(http, control)
        if len(now) == len(seen):
            return now
        seen = now
    raise AssertionError("the sandbox kept receiving requests")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class TestSigtermMidSweep:
    @pytest.mark.timeout(90)
    async def test_stops_at_once_without_writing_half_a_sweep(
        self, sandbox: dict[str, Any], tmp_path: Path
    ) -> None:
        """SIGTERM during a long, slow sweep: exit 0 well within the grace, no request after
        the stop, no traceback or error line, and nothing of the sweep in the database."""
        control = sandbox["control_url"]
        async with aiohttp.ClientSession() as http:
            await http.post(f"{control}/holders/demo/orders", json={"count": ORDERS})
            slow = {"kind": "slow", "delay_s": 1.0, "count": 10**6, "endpoint": "GET /dapp/orders"}
            await http.post(f"{control}/faults", json=slow)
            config = _config(tmp_path, sandbox)
            daemon = await asyncio.create_subprocess_exec(
                *CLI, "-c", str(config), "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
            )
            try:
                while (
                    sum(r["endpoint"] == "GET /dapp/orders" for r in await _requests(http, control))
                    < 3
                ):
                    if daemon.returncode is not None:
                        _, err = await daemon.communicate()
                        raise AssertionError(f"the daemon stopped on its own: {err.decode()}")
                    await CLOCK.sleep(0.05)
                daemon.send_signal(signal.SIGTERM)
                out, err = await asyncio.wait_for(daemon.communicate(), 10)  # grace: 20 s
            finally:
                await _stop(daemon)
            seen = await _settled_requests(http, control)
        assert daemon.returncode == 0, err.decode()
        text = out.decode() + err.decode()
        assert "Traceback" not in text
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert [x for x in lines if x["level"] in ("error", "critical") or "exception" in x] == []
        [stopping] = [_moment(x["timestamp"]) for x in lines if x["event"] == "daemon_stopping"]
        assert all(_moment(r["at"]) <= stopping + IN_FLIGHT for r in seen)
        assert "poll_abandoned" in [x["event"] for x in lines]
        store = await Store.open(tmp_path / "state.db", sinks=())
        try:
            orders = await store.entities("demo", kind="order")
            runs = {r.tier: r for r in await store.tier_runs("demo")}
        finally:
            await store.close()
        assert orders == []  # the sweep was abandoned whole: not one page of it was kept
        assert "active_orders" not in runs or runs["active_orders"].seeded_at is None


class TestDemoCtrlC:
    @pytest.mark.timeout(60)
    async def test_ctrl_c_closes_every_session(self) -> None:
        """Ctrl-C in the middle of the demo exits 0 with no "Unclosed" session or traceback."""
        demo = await asyncio.create_subprocess_exec(*CLI, "demo", stdout=PIPE, stderr=PIPE)
        try:
            assert demo.stdout is not None
            while b"webhook ok" not in await asyncio.wait_for(demo.stdout.readline(), 30):
                pass  # until the daemon has polled and delivered: everything is open
            demo.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(demo.communicate(), 20)
        finally:
            await _stop(demo)
        assert demo.returncode == 0
        assert "Unclosed" not in err.decode()
        assert "Traceback" not in err.decode()
