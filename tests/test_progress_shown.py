"""How an operator sees a sweep in progress: ``status`` (and ``--json``) showing how far and
since when, or a stalled one; and the bar ``poll-once`` draws on a terminal, never on a pipe.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drgreen_poller.admin import status_report
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.progress import SweepProgress
from drgreen_poller.progress_bar import PollBar, wants_bar
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.store import Store
from drgreen_poller.tiers import Tier
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config

ORDERS = 500  # the poll-once story: five pages of 100


@pytest.fixture
async def shop_config(tmp_path: Path) -> AsyncIterator[tuple[Path, Store]]:
    """A config for holder ``shop`` (against no server: status makes no request) and its state."""
    box_state = SandboxState(FakeClock())
    holder: HolderInfo = box_state.create_holder("shop")
    path = write_config(tmp_path, "http://127.0.0.1:9/api/v1", holder)
    store = await Store.open(tmp_path / "state.db", sinks=())
    yield path, store
    await store.close()


class TestStatusShowsSweeps:
    async def test_status_shows_the_sweep_in_progress(
        self, shop_config: tuple[Path, Store]
    ) -> None:
        """``status`` and ``status --json`` show a running sweep: how far, since when."""
        path, store = shop_config
        now = SystemClock().now()
        progress = SweepProgress(
            "shop", Tier.ACTIVE_ORDERS, now - timedelta(seconds=20), 23, 2300, expected_records=5000
        )
        await store.record_progress(progress, now)
        code, out, err = await run_cli(
            "-c", str(path), "status", env={"NO_COLOR": "1"}, timeout_s=10
        )
        assert code == 0, err
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(Tier.ACTIVE_ORDERS))
        assert lines[at + 1].startswith("    sweeping since ")
        assert "23 page(s), 2,300 of 5,000 records (last page " in lines[at + 1]
        code, out, err = await run_cli(
            "-c", str(path), "status", "--json", env={"NO_COLOR": "1"}, timeout_s=10
        )
        assert code == 0, err
        tiers = {t["tier"]: t for t in json.loads(out)["holders"][0]["tiers"]}
        sweep = tiers[Tier.ACTIVE_ORDERS]["sweep"]
        assert (sweep["pages"], sweep["records"], sweep["expected_records"]) == (23, 2300, 5000)
        assert sweep["stalled"] is False
        assert tiers["stale_orders"]["sweep"] is None

    async def test_a_row_nobody_updates_is_shown_as_stalled(
        self, shop_config: tuple[Path, Store]
    ) -> None:
        """A row quiet for longer than a page can take is a stopped daemon's, and says so."""
        path, store = shop_config
        written = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
        progress = SweepProgress("shop", Tier.ACTIVE_ORDERS, written - timedelta(seconds=9), 9, 900)
        await store.record_progress(progress, written)
        config = load_config(path)
        for later_s, stalled in ((30, False), (61, True), (3600, True)):
            report = await status_report(config, now=written + timedelta(seconds=later_s))
            sweep = report["holders"][0]["tiers"][0]["sweep"]
            assert (sweep["updated_s_ago"], sweep["stalled"]) == (later_s, stalled)
        five_min_ago = SystemClock().now() - timedelta(minutes=5)
        stale = SweepProgress("shop", "stale_orders", five_min_ago, 2, 150)
        await store.record_progress(stale, five_min_ago)
        code, out, err = await run_cli(
            "-c", str(path), "status", env={"NO_COLOR": "1"}, timeout_s=10
        )
        assert code == 0, err
        assert "    stalled: the sweep begun 2026-11-23T09:59:51.000Z stopped at 9 page(s)," in out
        assert "900 records" in out
        assert "(was the daemon stopped?)" in out
        assert "stopped at 2 page(s), 150 records, 5 min ago" in out


def _terminal(rows: int = 40, columns: int = 120) -> tuple[int, int]:
    """A pseudo-terminal of a real size (tqdm draws nothing on a 0×0 one): (master, slave)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def _drain(master: int) -> str:
    """Everything written to the terminal so far (its writer has closed its end)."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: no writer is left
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def _progress(pages: int, done: bool = False) -> SweepProgress:
    start = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    return SweepProgress(
        "shop", Tier.ACTIVE_ORDERS, start, pages, pages * 100, expected_records=500, done=done
    )


class TestPollBar:
    def test_only_a_terminal_that_can_draw_gets_a_bar(self, tmp_path: Path) -> None:
        """A bar goes on a terminal, not on a file or pipe, nor on a ``dumb`` terminal."""
        master, slave = _terminal()
        with open(slave, "w", closefd=True) as terminal, open(tmp_path / "log", "w") as file:
            assert wants_bar(terminal, {"TERM": "xterm-256color"})
            assert wants_bar(terminal, {})
            assert not wants_bar(terminal, {"TERM": "dumb"})
            assert not wants_bar(file, {"TERM": "xterm-256color"})
        os.close(master)

    def test_log_lines_go_above_the_bar_whole(self) -> None:
        """The bar shows holder/tier and records of the total; a log line is never cut by it."""
        master, slave = _terminal()
        with open(slave, "w", closefd=True) as terminal:
            bar = PollBar(terminal, enabled=True, delay_s=0)
            with bar:
                bar.update(_progress(1))
                bar.log_stream.write("sweep_progressed")  # a line arrives in pieces
                bar.log_stream.write(" pages=1\n")
                bar.update(_progress(2))
                bar.update(_progress(2, done=True))
                bar.log_stream.write("poll_finished\n")
        shown = _drain(master)
        assert "shop/active_orders:  20%" in shown
        assert "200/500" in shown
        assert "2 page(s)" in shown
        pieces = shown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        assert "sweep_progressed pages=1" in pieces  # on a line of its own, whole
        assert "poll_finished" in pieces

    def test_off_a_terminal_nothing_is_drawn(self) -> None:
        """Disabled, the bar writes nothing and log lines pass straight through."""
        out = io.StringIO()
        bar = PollBar(out, enabled=False, delay_s=0)
        with bar:
            bar.update(_progress(1))
            bar.log_stream.write("poll_finished\n")
        assert bar.log_stream is out
        assert out.getvalue() == "poll_finished\n"

    @pytest.mark.timeout(30)
    async def test_poll_once_draws_on_a_terminal_only(self, tmp_path: Path) -> None:
        """``poll-once`` with stderr on a terminal draws the bar; on a pipe it prints none."""
        async with LocalSandbox(SandboxState(SystemClock())) as box:
            holder = box.state.create_holder("shop")
            box.state.orders.create_many("shop", ORDERS, spacing_s=1)
            path = write_config(tmp_path, box.base_url, holder)
            # Pages slower than the bar's delay, so it shows (5 pages of 100).
            box.state.traffic.add_fault(
                {"kind": "slow", "delay_s": 0.6, "endpoint": "GET /dapp/orders", "count": 10}
            )
            master, slave = _terminal()
            code = await _cli_to(slave, "-c", str(path), "poll-once", "--dry-run")
            on_terminal = await asyncio.to_thread(_drain, master)
            box.state.traffic.add_fault(
                {"kind": "slow", "delay_s": 0.6, "endpoint": "GET /dapp/orders", "count": 10}
            )
            piped_code, _, piped = await run_cli(
                "-c", str(path), "poll-once", "--dry-run", env={"NO_COLOR": "1"}, timeout_s=10
            )
        assert (code, piped_code) == (0, 0)
        assert f"/{ORDERS} [" in on_terminal  # "shop/active_orders:  40%|####  | 200/500 [..."
        assert "page(s)]" in on_terminal
        assert "would be recorded" in on_terminal
        assert "\r" not in piped
        assert "page(s)]" not in piped
        assert "would be recorded" in piped


async def _cli_to(stderr: int, *args: str) -> int:
    """Run the CLI with stderr on ``stderr`` (closed here once the child has it)."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(stderr)
    return await asyncio.wait_for(process.wait(), 20)
