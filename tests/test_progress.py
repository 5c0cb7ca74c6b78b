"""Long tier runs show their progress as they go: a ``sweep_progressed`` line per page (or
every five seconds), a row in the state for ``status`` (none in a dry run, cleared when the
run ends or by the next run after a crash), and each page heard by the ``on_progress`` hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import load_config
from drgreen_poller.events import iso_ms
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.progress import ProgressPolicy, SweepProgress
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.service import open_runtime
from drgreen_poller.store import ProgressRow, Store
from drgreen_poller.tiers import Tier
from tests.conftest import write_config
from tests.waiting import until_sleeping

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
        await until_sleeping(self.clock, task)


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
