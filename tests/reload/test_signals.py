"""``drgreen-poller run`` in a subprocess under real signals: SIGHUP reloads the file (a broken
one changes nothing), and a second SIGTERM cuts a hanging delivery that the next start sends
under the same id.
"""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.cli_run import CLI
from tests.conftest import write_config
from tests.fakes import WebhookReceiver
from tests.reload.running import (
    CLOCK,
    SECRET,
    accepted_types,
    sink_toml,
)
from tests.waiting import eventually


class Process_:
    """``drgreen-poller run`` in a subprocess, its JSON log read line by line."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def until_logged(self, event: str, timeout_s: float = 10) -> dict[str, Any]:
        """Read the log until a line named ``event``; returns it."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"the daemon ended before logging {event}")
                self.lines.append(json.loads(raw))
                if self.lines[-1]["event"] == event:
                    return self.lines[-1]

    async def finish(self) -> tuple[int, list[dict[str, Any]], str]:
        """Wait for the exit; returns the exit code, every log line and stderr."""
        out, err = await asyncio.wait_for(self.process.communicate(), 10)
        self.lines.extend(json.loads(line) for line in out.splitlines())
        assert self.process.returncode is not None
        return self.process.returncode, self.lines, err.decode()


@pytest.fixture
async def run_cli() -> AsyncIterator[Callable[[Path], Awaitable[Process_]]]:
    """Starts ``drgreen-poller -c PATH run``; whatever is still running at the end is killed."""
    started: list[Process] = []

    async def launch(path: Path) -> Process_:
        process = await asyncio.create_subprocess_exec(
            *CLI, "-c", str(path), "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        started.append(process)
        return Process_(process)

    yield launch
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _received(hook: WebhookReceiver, expected: list[str], timeout_s: float = 10) -> None:
    await eventually(
        lambda: accepted_types(hook) == expected, timeout_s=timeout_s, what=f"{expected} received"
    )


class TestSignals:
    @pytest.mark.timeout(45)
    async def test_sighup_reloads_a_running_daemon(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        run_cli: Callable[[Path], Awaitable[Process_]],
        tmp_path: Path,
    ) -> None:
        """SIGHUP: a sink added to the file gets the next event; a broken file changes nothing."""
        (tmp_path / "store.whsec").write_text(SECRET)
        (first, first_url), (second, second_url) = await receivers(), await receivers()
        one = sink_toml("first", first_url)
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=one)
        daemon = await run_cli(path)
        await daemon.until_logged("daemon_started")
        order = box.state.orders.create("shop")
        await _received(first, ["order.created"])
        both = one + sink_toml("second", second_url)
        write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=both)
        daemon.process.send_signal(signal.SIGHUP)
        reloaded = await daemon.until_logged("config_reloaded")
        box.state.lifecycle.approve(order.id)
        await _received(second, ["order.approved"])
        path.write_text(
            path.read_text().replace('strain_countries = ["GBR"]', "strain_countries = 3")
        )
        daemon.process.send_signal(signal.SIGHUP)
        failed = await daemon.until_logged("config_reload_failed")
        box.state.lifecycle.pay(order.id)
        await _received(first, ["order.created", "order.approved", "order.paid"])
        await _received(second, ["order.approved", "order.paid"])
        daemon.process.send_signal(signal.SIGTERM)
        code, lines, err = await daemon.finish()
        assert code == 0, err
        assert reloaded["sinks_added"] == ["second"]
        assert failed["level"] == "error"
        assert failed["problem"].startswith("holders[0].strain_countries: ")
        assert [line["event"] for line in lines].count("config_reloaded") == 1
        assert "Traceback" not in err

    @pytest.mark.timeout(30)
    async def test_a_second_sigterm_stops_at_once(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        run_cli: Callable[[Path], Awaitable[Process_]],
        tmp_path: Path,
    ) -> None:
        """A delivery hanging through the grace period is cut by a second SIGTERM; the next
        start delivers it under the same id."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        hook.hang_next = 1
        sink = sink_toml("store", url) + 'timeout = "1h"\n'
        extra = sink.replace("[[sinks]]", '[delivery]\ntimeout = "1h"\n\n[[sinks]]')
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=extra)
        path.write_text(path.read_text().replace("[daemon]", '[daemon]\nstop_grace = "1h"'))
        daemon = await run_cli(path)
        box.state.orders.create("shop")
        while not hook.received:
            await CLOCK.sleep(0.02)
        daemon.process.send_signal(signal.SIGTERM)
        stopping = await daemon.until_logged("daemon_stopping")
        daemon.process.send_signal(signal.SIGTERM)
        code, lines, err = await daemon.finish()
        assert (code, err) == (0, "")
        assert stopping["deliveries_in_flight"] == 1
        assert "daemon_stop_forced" in [line["event"] for line in lines]
        again = await run_cli(path)
        await _received(hook, ["order.created"])
        again.process.send_signal(signal.SIGTERM)
        assert (await again.finish())[0] == 0
        assert hook.accepted()[0].id == hook.received[0].id
