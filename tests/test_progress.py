"""Long tier runs show progress: log lines per page, a row for ``status``, a bar for poll-once."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from drgreen_poller.admin import status_report
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.events import iso_ms
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.progress import ProgressPolicy, SweepProgress
from drgreen_poller.progress_bar import PollBar, wants_bar
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.service import open_runtime
from drgreen_poller.store import ProgressRow, Store
from drgreen_poller.tiers import Tier
from tests.conftest import write_config

EVERY_PAGE = ProgressPolicy(log_every_s=0, write_every_s=0)
ORDERS, TAKE = 500, 50


@dataclass
class Rig:
    """A sandbox holding 500 orders of one holder, and a poller reading 50 a page."""

    box: LocalSandbox
    clock: FakeClock
    store: Store
    poller: HolderPoller
    heard: list[SweepProgress] = field(default_factory=list)

    async def rows(self) -> list[ProgressRow]:
        return await self.store.progress_rows()

    async def until_sleeping(self, task: asyncio.Task[Any]) -> None:
        """Until the sandbox's slow answer sleeps on the fake clock (or the run ended)."""
        for _ in range(1000):
            if self.clock.sleepers or task.done():
                return
            await asyncio.wait([task], timeout=0.005)
        raise AssertionError("the run never waited on the sandbox")


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build ``Rig``s with a given progress policy; everything is closed at the end."""
    closers: list[Any] = []

    async def build(policy: ProgressPolicy = EVERY_PAGE) -> Rig:
        clock = FakeClock()
        box = LocalSandbox(SandboxState(clock))
        await box.__aenter__()
        closers.append(box.__aexit__)
        holder = box.state.create_holder("shop")
        box.state.orders.create_many("shop", ORDERS, spacing_s=1)
        store = await Store.open(tmp_path / "state.db", sinks=())
        closers.append(lambda *_: store.close())
        session = aiohttp.ClientSession()
        closers.append(lambda *_: session.close())
        bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)  # never waits for a token
        api = ApiClient(
            session, ApiSettings(box.base_url), holder.credentials, clock, bucket=bucket
        )
        heard: list[SweepProgress] = []
        poller = HolderPoller(
            "shop", (), api, store, clock, PollSettings(take=TAKE, progress=policy),
            on_progress=heard.append,
        )  # fmt: skip
        return Rig(box, clock, store, poller, heard)

    yield build
    for close in reversed(closers):
        await close(None, None, None)


class TestProgressLines:
    async def test_a_line_per_page_with_its_counts(self, make_rig: Callable[..., Any]) -> None:
        """With no throttle, a first sync logs sweep_progressed per page: pages, records, total."""
        rig: Rig = await make_rig()
        with capture_logs() as logs:
            await rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        lines = [line for line in logs if line["event"] == "sweep_progressed"]
        pages = ORDERS // TAKE
        assert [(line["pages"], line["records"]) for line in lines] == [
            (n, n * TAKE) for n in range(1, pages + 1)
        ]
        assert {line["log_level"] for line in lines} == {"info"}
        assert all(
            line["holder"] == "shop" and line["tier"] == Tier.ACTIVE_ORDERS for line in lines
        )
        assert {line["expected_records"] for line in lines} == {ORDERS}
        assert all(line["elapsed_s"] == 0 for line in lines)  # the fake clock never moved

    async def test_slow_pages_log_every_five_seconds(self, make_rig: Callable[..., Any]) -> None:
        """Pages a second apart give a line at 5 s and 10 s, and the row follows every page."""
        rig: Rig = await make_rig(ProgressPolicy())
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 1, "endpoint": "GET /dapp/orders", "count": 100}
        )
        with capture_logs() as logs:
            run = asyncio.create_task(rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0))
            seen: list[tuple[int, int]] = []
            while not run.done():
                await rig.until_sleeping(run)
                seen.extend((row.pages, row.records) for row in await rig.rows())
                rig.clock.advance(1)
            await run
        lines = [line for line in logs if line["event"] == "sweep_progressed"]
        assert [(line["pages"], line["elapsed_s"]) for line in lines] == [(5, 5.0), (10, 10.0)]
        # seen while the next page was awaited: after page 1, ..., after page 9
        assert seen == [(n, n * TAKE) for n in range(1, ORDERS // TAKE)]
        assert await rig.rows() == []  # the run ended: its row went with it


class TestProgressRows:
    async def test_the_row_says_how_far_and_since_when(self, make_rig: Callable[..., Any]) -> None:
        """While a page is awaited, the row holds the holder, tier, start, pages and records."""
        rig: Rig = await make_rig()
        started = rig.clock.now()
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders", "count": 2}
        )
        run = asyncio.create_task(rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0))
        await rig.until_sleeping(run)
        assert await rig.rows() == []  # nothing read yet, nothing to show
        rig.clock.advance(30)  # page 1 arrives; page 2 is slow too
        await rig.until_sleeping(run)
        [row] = await rig.rows()
        assert (row.holder, row.tier, row.pages, row.records) == (
            "shop",
            Tier.ACTIVE_ORDERS,
            1,
            TAKE,
        )
        assert row.expected_records == ORDERS
        assert (row.started_at, row.updated_at) == (iso_ms(started), iso_ms(rig.clock.now()))
        rig.clock.advance(30)
        await run
        assert await rig.rows() == []

    async def test_a_dry_run_writes_no_row(self, make_rig: Callable[..., Any]) -> None:
        """A dry run records nothing, its progress included (the hook still hears it)."""
        rig: Rig = await make_rig()
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 5, "endpoint": "GET /dapp/orders", "count": 100}
        )
        run = asyncio.create_task(
            rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0, dry_run=True)
        )
        rows: list[ProgressRow] = []
        while not run.done():
            await rig.until_sleeping(run)
            rows.extend(await rig.rows())
            rig.clock.advance(5)
        await run
        assert rows == []
        assert rig.heard[-2].pages == ORDERS // TAKE

    async def test_a_row_left_by_a_stopped_process_goes(self, make_rig: Callable[..., Any]) -> None:
        """A row from a daemon that died mid-sweep is cleared by the tier's next run."""
        rig: Rig = await make_rig(ProgressPolicy())  # this run is too quick to write its own
        old = SweepProgress("shop", Tier.ACTIVE_ORDERS, rig.clock.now(), pages=7, records=700)
        await rig.store.record_progress(old, rig.clock.now())
        assert len(await rig.rows()) == 1
        await rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        assert await rig.rows() == []

    async def test_rows_known_at_start_up_are_trusted(self, make_rig: Callable[..., Any]) -> None:
        """A poller told which rows were left clears those and deletes nothing for the others."""
        rig: Rig = await make_rig(ProgressPolicy())
        left = SweepProgress("shop", Tier.PENDING_KYC, rig.clock.now(), pages=7, records=700)
        await rig.store.record_progress(left, rig.clock.now())
        rig.poller = HolderPoller(
            "shop", (), rig.poller.api, rig.store, rig.clock, PollSettings(take=TAKE),
            rows_left=[Tier.PENDING_KYC],
        )  # fmt: skip
        # Written after start-up (say, by hand): a tier told it has no row does not look.
        later = SweepProgress("shop", Tier.ACTIVE_ORDERS, rig.clock.now(), pages=1, records=50)
        await rig.store.record_progress(later, rig.clock.now())
        await rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        await rig.poller.poll_tier(Tier.PENDING_KYC, next_due_at=0)
        assert [(row.tier, row.pages) for row in await rig.rows()] == [(Tier.ACTIVE_ORDERS, 1)]

    async def test_the_runtime_reads_the_rows_left_once(self, tmp_path: Path) -> None:
        """Opening the daemon's runtime reads every row left, and its pollers clear them."""
        clock = FakeClock()
        box_state = SandboxState(clock)
        holder: HolderInfo = box_state.create_holder("shop")
        async with LocalSandbox(box_state) as box:
            config = load_config(write_config(tmp_path, box.base_url, holder))
            store = await Store.open(config.daemon.state_path, sinks=())
            left = SweepProgress("shop", Tier.PENDING_KYC, clock.now(), pages=2, records=9)
            await store.record_progress(left, clock.now())
            await store.close()
            async with open_runtime(config, clock) as runtime:
                assert runtime.rows_left == {"shop": {Tier.PENDING_KYC}}
                await runtime.pollers["shop"].poll_tier(Tier.PENDING_KYC, next_due_at=0)
                assert await runtime.store.progress_rows() == []

    async def test_the_hook_hears_every_page_then_the_end(
        self, make_rig: Callable[..., Any]
    ) -> None:
        """``on_progress`` gets each page's counts in order, then one value marked done."""
        rig: Rig = await make_rig()
        await rig.poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        *pages, end = rig.heard
        assert [p.records for p in pages] == [n * TAKE for n in range(1, ORDERS // TAKE + 1)]
        assert not any(p.done for p in pages)
        assert end.done
        assert end.records == ORDERS


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
        code, out, err = await _cli("-c", str(path), "status")
        assert code == 0, err
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(Tier.ACTIVE_ORDERS))
        assert lines[at + 1].startswith("    sweeping since ")
        assert "23 page(s), 2,300 of 5,000 records (last page " in lines[at + 1]
        code, out, err = await _cli("-c", str(path), "status", "--json")
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
        code, out, err = await _cli("-c", str(path), "status")
        assert code == 0, err
        assert "    stalled: the sweep begun 2026-11-23T09:59:51.000Z stopped at 9 page(s)," in out
        assert "900 records" in out
        assert "(was the daemon stopped?)" in out
        assert "stopped at 2 page(s), 150 records, 5 min ago" in out


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "drgreen_poller",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


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
            piped_code, _, piped = await _cli("-c", str(path), "poll-once", "--dry-run")
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
        sys.executable,
        "-m",
        "drgreen_poller",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(stderr)
    return await asyncio.wait_for(process.wait(), 20)
