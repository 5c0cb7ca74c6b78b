"""The real daemon on tiny intervals against the sandbox: lifecycles, a restart, the lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, load_config
from drgreen_poller.daemon import Controls, poll_once, run_daemon
from drgreen_poller.errors import StoreError
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import Store
from tests.conftest import write_config
from tests.waiting import eventually

CLOCK = SystemClock()


class Daemon:
    """``run_daemon`` as a task that a test can start and stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.controls = Controls()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.controls = Controls()
        self.task = asyncio.create_task(run_daemon(self.config, CLOCK, self.controls))

    async def halt(self) -> None:
        self.controls.request_stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def event_types(self, pattern: str = "*") -> list[str]:
        store = await Store.open(self.config.daemon.state_path, sinks=())
        try:
            return [e["type"] for e in await store.events(patterns=[pattern], limit=0)]
        finally:
            await store.close()

    async def first_synced(self) -> bool:
        store = await Store.open(self.config.daemon.state_path, sinks=())
        try:
            runs = await store.tier_runs()
        finally:
            await store.close()
        return {r.tier for r in runs if r.seeded_at} >= {"active_orders", "pending_kyc"}


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon runs on it (conftest's ``box`` serves it)."""
    return CLOCK


class TestDaemon:
    @pytest.mark.timeout(30)
    async def test_lifecycle_across_a_restart(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """Changes made while the daemon is down are found after restart; nothing twice."""
        order = box.state.orders.create("shop")
        daemon = Daemon(load_config(write_config(tmp_path, box.base_url, shop), {}))
        daemon.start()
        await eventually(daemon.first_synced, task=daemon.task)
        box.state.lifecycle.approve(order.id)
        await eventually(lambda: _has(daemon, "order.approved"), task=daemon.task)
        await daemon.halt()

        box.state.lifecycle.pay(order.id)  # while the daemon is down
        box.state.lifecycle.ship(order.id)
        daemon.start()
        await eventually(lambda: _has(daemon, "order.shipped"), task=daemon.task)
        box.state.lifecycle.deliver(order.id)
        await eventually(lambda: _has(daemon, "order.delivered"), task=daemon.task)
        await eventually(
            lambda: _has(daemon, "commission.accrued"), task=daemon.task
        )  # paying accrues
        await daemon.halt()
        assert await daemon.event_types("order.*") == [
            "order.approved",
            "order.paid",
            "order.shipped",
            "order.delivered",
        ]
        assert await daemon.event_types("commission.*") == ["commission.accrued"]

    async def test_second_daemon_refuses(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A second daemon on the same database refuses to start, naming the reason."""
        config = load_config(write_config(tmp_path, box.base_url, shop), {})
        first = Daemon(config)
        first.start()
        await eventually(first.first_synced, task=first.task)
        with pytest.raises(StoreError, match="already running"):
            await run_daemon(config, CLOCK, Controls())
        await first.halt()

    async def test_poll_once_dry_run_writes_nothing(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """poll-once --dry-run shows the events a pass would record and writes none of them."""
        config = load_config(write_config(tmp_path, box.base_url, shop, first_sync="emit"), {})
        box.state.orders.create("shop")
        results, failures = await poll_once(config, CLOCK, dry_run=True)
        assert failures == []
        assert "order.created" in [e["type"] for r in results for e in r.events]
        assert await Daemon(config).event_types() == []
        results, _ = await poll_once(config, CLOCK, dry_run=False)
        assert "order.created" in await Daemon(config).event_types()


async def _has(daemon: Daemon, event_type: str) -> bool:
    return event_type in await daemon.event_types()


class TestFatal:
    @pytest.mark.timeout(20)
    async def test_database_failure_stops_the_daemon(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A poll that cannot write its state stops the daemon with the error, not one tier."""
        import sqlite3

        config = load_config(write_config(tmp_path, box.base_url, shop), {})
        daemon = Daemon(config)
        daemon.start()
        await eventually(daemon.first_synced, task=daemon.task)
        db = sqlite3.connect(config.daemon.state_path, timeout=10, isolation_level=None)
        try:
            # Take the write lock first: a statement that reads, then writes, while the daemon
            # commits in between gets "database is locked" at once, without waiting.
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE tier_runs")  # the disk or the file broke under us
            db.execute("COMMIT")
        finally:
            db.close()
        assert daemon.task is not None
        with pytest.raises(StoreError, match="tier_runs"):
            await asyncio.wait_for(daemon.task, 10)
