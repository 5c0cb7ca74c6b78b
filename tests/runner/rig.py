"""The tier runner tests' rig: holder ``shop`` (one order) in the sandbox on a fake clock, a
real SQLite store and a runner over them that records what it plans.

Owns ``Rig`` (the ``rig`` fixture in ``tests/runner/conftest.py`` builds it), the timing the
runner is given, and ``until_sleeping``. It asserts nothing itself.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.scheduler import NextRuns, Timing
from drgreen_poller.store import Store
from drgreen_poller.tiers import TIERS, Tier
from tests.waiting import until_sleeping as sleeping_on

TIMING = Timing(interval_s=60, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)
RETRY_S = 300.0  # [schedule] unauthorized_retry
PROBE = "GET /dapp/orders/summary"


@dataclass
class Rig:
    box: LocalSandbox
    holder: HolderInfo
    clock: FakeClock
    store: Store
    session: aiohttp.ClientSession
    runner: TierRunner
    rescheduled: list[tuple[str, str, float]]

    def new_runner(self, bucket: TokenBucket | None = None, take: int = 100) -> TierRunner:
        """A runner on the same store (a restarted daemon), recording its reschedules."""
        bucket = bucket or TokenBucket(rate=1.0, burst=10**9, clock=self.clock)
        api = ApiClient(
            self.session, ApiSettings(self.box.base_url), self.holder.credentials, self.clock,
            bucket=bucket,
        )  # fmt: skip
        poller = HolderPoller("shop", ["GBR"], api, self.store, self.clock, PollSettings(take=take))
        runner = TierRunner(
            {"shop": poller}, self.store, self.clock, dict.fromkeys(TIERS, TIMING),
            random.Random(7), unauthorized_retry_s=RETRY_S,
        )  # fmt: skip
        return runner

    def planned(self) -> list[tuple[str, str, float]]:
        """Every (holder, tier, when) the runner's runs have put on ``plans`` so far."""
        while not self.runner.plans.empty():
            runs = self.runner.plans.get_nowait()
            self.rescheduled.extend((holder, tier, when) for (holder, tier), when in runs.items())
        return self.rescheduled

    async def run(self, tier: str = Tier.ACTIVE_ORDERS) -> float:
        """Run the tier; seconds from now until the runner wants it again."""
        runs = await self.runner.run("shop", tier)
        return runs[("shop", tier)] - self.clock.now().timestamp()

    async def run_all(self) -> set[float]:
        """Every tier at once, as a scheduler would fire them; seconds until each wants to run."""
        results = await asyncio.gather(*(self.runner.run("shop", tier) for tier in TIERS))
        now = self.clock.now().timestamp()
        return {
            round(runs[("shop", tier)] - now, 6) for runs, tier in zip(results, TIERS, strict=True)
        }

    def requests(self) -> list[dict[str, Any]]:
        """The holder's requests the sandbox saw since the last ``forget``."""
        log: list[dict[str, Any]] = self.box.state.traffic.request_counts("shop")["log"]
        return log

    def forget(self) -> None:
        self.box.state.traffic.reset_request_counts()

    async def poller_events(self) -> list[str]:
        return [e["type"] for e in await self.store.events(patterns=["poller.*"])]


async def until_sleeping(rig: Rig, task: asyncio.Task[NextRuns]) -> None:
    """Until something sleeps on the fake clock (a slow answer, the token bucket)."""
    await sleeping_on(rig.clock, task)
