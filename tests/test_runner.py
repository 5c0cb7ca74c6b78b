"""The tier runner on an injected clock: backoff grows and resets, Retry-After, the 401 pause."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.poller import ACTIVE_ORDERS, COMMISSIONS, TIERS, HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.scheduler import UNAUTHORIZED_PAUSE_S, TierRunner, Timing
from drgreen_poller.store import Store

TIMING = Timing(interval_s=60, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)


@dataclass
class Rig:
    box: LocalSandbox
    holder: HolderInfo
    clock: FakeClock
    store: Store
    runner: TierRunner
    rescheduled: list[tuple[str, str, float]]

    async def run(self, tier: str = ACTIVE_ORDERS) -> float:
        """Run the tier; seconds from now until the runner wants it again."""
        when = await self.runner.run("shop", tier)
        return when - self.clock.now().timestamp()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        holder = box.state.create_holder("shop")
        box.state.create_order("shop")
        store = await Store.open(tmp_path / "state.db")
        bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)
        api = ApiClient(
            session, ApiSettings(box.base_url), holder.credentials, clock, bucket=bucket
        )
        poller = HolderPoller("shop", ["GBR"], api, store, clock, PollSettings())
        runner = TierRunner(
            {"shop": poller}, store, clock, dict.fromkeys(TIERS, TIMING), random.Random(7)
        )
        rescheduled: list[tuple[str, str, float]] = []
        runner.reschedule = lambda holder, tier, when: rescheduled.append((holder, tier, when))
        try:
            yield Rig(box, holder, clock, store, runner, rescheduled)
        finally:
            await store.close()


class TestTiming:
    async def test_success_waits_one_jittered_interval(self, rig: Rig) -> None:
        """After a success the tier runs again in 60 s ± 10 %, and is rescheduled so."""
        delay = await rig.run()
        assert 54 <= delay <= 66
        assert rig.rescheduled[-1][:2] == ("shop", ACTIVE_ORDERS)

    async def test_backoff_grows_then_resets(self, rig: Rig) -> None:
        """Consecutive failures back off 5, 10, 20, 40 s (± 10 %); a success resets it."""
        rig.box.state.add_fault({"kind": "server_error", "status": 503, "count": 4})
        delays = [await rig.run() for _ in range(4)]
        for delay, nominal in zip(delays, (5, 10, 20, 40), strict=True):
            assert nominal * 0.9 <= delay <= nominal * 1.1
        [run] = [r for r in await rig.store.tier_runs("shop") if r.tier == ACTIVE_ORDERS]
        assert run.consecutive_failures == 4
        assert "503" in (run.last_error or "")
        assert 54 <= await rig.run() <= 66
        [run] = [r for r in await rig.store.tier_runs("shop") if r.tier == ACTIVE_ORDERS]
        assert run.consecutive_failures == 0

    async def test_retry_after_is_respected(self, rig: Rig) -> None:
        """A 429 with Retry-After: 120 is not retried sooner than 120 s."""
        rig.box.state.add_fault({"kind": "rate_limit", "retry_after": 120})
        assert await rig.run() == pytest.approx(120, abs=0.01)

    async def test_malformed_response_backs_off(self, rig: Rig) -> None:
        """A truncated body is a failure like any other transient one: nothing is written."""
        rig.box.state.add_fault({"kind": "truncated"})
        assert 4.5 <= await rig.run() <= 5.5
        assert await rig.store.entities("shop") == []


class TestUnauthorized:
    async def test_pause_event_once_then_recovery(self, rig: Rig) -> None:
        """A 401 pauses every tier 15 min and emits holder_unauthorized once; recovery is told."""
        rig.box.state.revoke_holder_key("shop")
        assert await rig.run() == UNAUTHORIZED_PAUSE_S
        paused = {tier for holder, tier, _ in rig.rescheduled if holder == "shop"}
        assert paused == set(TIERS)
        assert await rig.run(COMMISSIONS) == UNAUTHORIZED_PAUSE_S
        events = await rig.store.events(patterns=["poller.*"])
        assert [e["type"] for e in events] == ["poller.holder_unauthorized"]
        assert events[0]["data"]["status"] == 401
        assert events[0]["resource"] == {"type": "holder", "id": "shop"}

        before = rig.box.state.request_counts("shop")["total"]
        assert await rig.run(ACTIVE_ORDERS) == UNAUTHORIZED_PAUSE_S  # paused: not even tried
        assert rig.box.state.request_counts("shop")["total"] == before

        rig.box.state.holder("shop").revoked = False  # the key works again
        rig.clock.advance(UNAUTHORIZED_PAUSE_S)
        await rig.run()
        types = [e["type"] for e in await rig.store.events(patterns=["poller.*"])]
        assert types == ["poller.holder_unauthorized", "poller.holder_recovered"]
        assert await rig.store.unauthorized_holders() == {}


class TestNoOverlap:
    async def test_runs_of_one_holder_take_turns(self, rig: Rig) -> None:
        """While one tier's poll is in flight, another tier of the holder waits its turn."""
        rig.box.state.add_fault({"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"})
        slow = asyncio.create_task(rig.runner.run("shop", ACTIVE_ORDERS))
        quick = asyncio.create_task(rig.runner.run("shop", COMMISSIONS))
        for _ in range(400):  # until the slow answer sleeps on the fake clock (real time)
            if rig.clock.sleepers:
                break
            await asyncio.wait([slow, quick], timeout=0.005)
        await asyncio.wait([slow, quick], timeout=0.1)
        assert rig.clock.sleepers == 1
        assert not quick.done()  # it would long be done if it ran beside the slow one
        rig.clock.advance(30)
        await asyncio.wait_for(asyncio.gather(slow, quick), 5)
        endpoints = [e["endpoint"] for e in rig.box.state.request_counts("shop")["log"]]
        assert endpoints == ["GET /dapp/orders", "GET /dapp/commissions/summary"]
