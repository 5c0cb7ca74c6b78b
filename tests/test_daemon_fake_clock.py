"""The whole daemon on a fake clock: its scheduling decisions, polls and deliveries in test time.

``run_daemon`` runs as in production (the lock, the runtime, the runner, the delivery worker, the
reload and watchdog loops) at the default 60 s interval, against the sandbox on the same
``FakeClock``, delivering to a real webhook receiver. Only the firing of jobs runs on the fake
clock (``tests.fakes.ClockScheduler``); when each tier runs next is the runner's decision, read
back from the scheduler and checked to the second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.config import Config, load_config
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.scheduler import Job, NextRuns
from drgreen_poller.store import Store
from drgreen_poller.tiers import Tier
from tests.conftest import write_config
from tests.fakes import ClockScheduler, WebhookReceiver, start
from tests.waiting import eventually

INTERVAL_S = 60.0
BACKOFF_BASE_S = 5.0


@dataclass
class FakeTimeDaemon:
    """The daemon task, the fake clock it runs on, its scheduler, and what the store received."""

    clock: FakeClock
    state: SandboxState
    config: Config
    hook: WebhookReceiver
    controls: Controls
    task: asyncio.Task[None]
    schedulers: list[ClockScheduler]

    @property
    def scheduler(self) -> ClockScheduler:
        return self.schedulers[0]

    def next_run(self, tier: str) -> float:
        """When the runner decided ``tier`` runs next (Unix seconds, on the fake clock)."""
        when = self.scheduler.next_run("shop", tier)
        assert when is not None, f"{tier} is not scheduled"
        return when

    def started(self) -> bool:
        """Whether the scheduler has the first runs (``serve`` starts it once the store is open)."""
        return bool(self.schedulers) and self.scheduler.running

    def planned_after(self, tier: str, when: float) -> bool:
        """Whether the runner has planned ``tier``'s next run, later than ``when`` (between a
        job's firing and its run's plan the tier is not scheduled at all)."""
        planned = self.scheduler.next_run("shop", tier)
        return planned is not None and planned > when

    def advance_to(self, when: float) -> None:
        """Move the fake clock to ``when`` (runs due by then are fired)."""
        self.clock.advance(max(0.0, when - self.clock.now().timestamp()))

    def delivered(self) -> list[str]:
        return [d.event["type"] for d in self.hook.accepted()]

    async def until(self, check: Callable[[], bool], what: str) -> None:
        await eventually(check, timeout_s=10, what=what, task=self.task)

    async def seeded(self) -> bool:
        store = await Store.open_reader(self.config.daemon.state_path)
        try:
            runs = await store.tier_runs("shop")
        finally:
            await store.close()
        return {r.tier for r in runs if r.seeded_at} >= {Tier.ACTIVE_ORDERS, Tier.PENDING_KYC}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[FakeTimeDaemon]:
    clock = FakeClock()
    state = SandboxState(clock)
    shop: HolderInfo = state.create_holder("shop")
    hook = WebhookReceiver()
    receiver = await start(hook.app)
    sink = f"""
[[sinks]]
name = "store"
kind = "webhook"
url = "{receiver.make_url("/hooks")}"
secret = "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
events = ["order.*"]
"""
    schedulers: list[ClockScheduler] = []

    def make_scheduler(job: Job, plans: asyncio.Queue[NextRuns]) -> ClockScheduler:
        schedulers.append(ClockScheduler(clock, job, plans))
        return schedulers[-1]

    async with LocalSandbox(state) as box:
        path = write_config(tmp_path, box.base_url, shop, interval="60s", extra=sink)
        config = load_config(path, {})
        controls = Controls()
        task = asyncio.create_task(
            run_daemon(config, clock, controls, make_scheduler=make_scheduler)
        )
        running = FakeTimeDaemon(clock, state, config, hook, controls, task, schedulers)
        try:
            yield running
        finally:
            controls.request_stop()
            await asyncio.wait_for(task, 10)
            await receiver.close()


class TestTheWholeDaemonOnAFakeClock:
    @pytest.mark.timeout(40)
    async def test_a_sandbox_story_in_fake_time(self, daemon: FakeTimeDaemon) -> None:
        """At the default 60 s interval and no real waiting: first sweeps within the first
        minute; a change found at the tier's next run, exactly one interval after its last;
        a 503 met there backed off by backoff_base and retried then; each change delivered."""
        order = daemon.state.orders.create("shop")
        await daemon.until(daemon.started, "the scheduler to start")
        start_s = daemon.clock.now().timestamp()
        first = daemon.next_run(Tier.ACTIVE_ORDERS)
        assert start_s <= first <= start_s + 60.0  # staggered over the first-run window
        daemon.advance_to(first)
        await daemon.until(lambda: daemon.planned_after(Tier.ACTIVE_ORDERS, first), "the next run")
        assert daemon.next_run(Tier.ACTIVE_ORDERS) == pytest.approx(first + INTERVAL_S, abs=1e-3)
        daemon.advance_to(start_s + 60.0)  # every tier's first run is due by then
        await eventually(daemon.seeded, timeout_s=10, what="the first sweeps", task=daemon.task)
        assert daemon.delivered() == []  # first_sync = "seed": what exists is not news

        daemon.state.lifecycle.approve(order.id)
        approved_run = daemon.next_run(Tier.ACTIVE_ORDERS)
        daemon.advance_to(approved_run)
        await daemon.until(lambda: daemon.delivered() == ["order.approved"], "order.approved")
        await daemon.until(
            lambda: daemon.planned_after(Tier.ACTIVE_ORDERS, approved_run), "a new plan"
        )
        paid_run = daemon.next_run(Tier.ACTIVE_ORDERS)
        assert paid_run == pytest.approx(approved_run + INTERVAL_S, abs=1e-3)

        daemon.state.traffic.add_fault(
            {"kind": "server_error", "status": 503, "count": 1, "endpoint": "GET /dapp/orders"}
        )
        daemon.state.lifecycle.pay(order.id)
        daemon.advance_to(paid_run)
        await daemon.until(
            lambda: daemon.planned_after(Tier.ACTIVE_ORDERS, paid_run), "the backoff plan"
        )
        assert daemon.next_run(Tier.ACTIVE_ORDERS) == pytest.approx(
            paid_run + BACKOFF_BASE_S, abs=1e-3
        )
        assert daemon.delivered() == ["order.approved"]  # the failed run found nothing

        daemon.advance_to(paid_run + BACKOFF_BASE_S)
        await daemon.until(
            lambda: daemon.delivered() == ["order.approved", "order.paid"], "order.paid"
        )
        assert len({d.id for d in daemon.hook.accepted()}) == 2  # one webhook-id each
