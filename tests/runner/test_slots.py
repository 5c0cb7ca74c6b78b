"""Runs at work at once: one holder's runs take turns, and across holders ``RunSlots`` bounds
them, a run paced by its budget lends its slot, and runs beyond the slots wait in a queue.
"""

from __future__ import annotations

import asyncio
import random

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import RunSlots, TokenBucket
from drgreen_poller.runner import TierRunner
from drgreen_poller.tiers import TIERS, Tier
from tests.runner.rig import TIMING, Rig, until_sleeping


class TestNoOverlap:
    async def test_runs_of_one_holder_take_turns(self, rig: Rig) -> None:
        """While one tier's poll is in flight, another tier of the holder waits its turn."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        slow = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        quick = asyncio.create_task(rig.runner.run("shop", Tier.COMMISSIONS))
        for _ in range(400):  # until the slow answer sleeps on the fake clock (real time)
            if rig.clock.sleepers:
                break
            await asyncio.wait([slow, quick], timeout=0.005)
        await asyncio.wait([slow, quick], timeout=0.1)
        assert rig.clock.sleepers == 1
        assert not quick.done()  # it would long be done if it ran beside the slow one
        rig.clock.advance(30)
        await asyncio.wait_for(asyncio.gather(slow, quick), 5)
        endpoints = [e["endpoint"] for e in rig.box.state.traffic.request_counts("shop")["log"]]
        assert endpoints == ["GET /dapp/orders", "GET /dapp/commissions/summary"]


class TestRunSlots:
    def two_holders(self, rig: Rig, slots: RunSlots, paced: TokenBucket | None = None) -> None:
        """The runner polls "shop" and "other" (the same keys), ``slots`` at work at once;
        ``paced``: the bucket of "shop"."""
        pollers = {}
        for name, bucket in (("shop", paced), ("other", None)):
            api = ApiClient(
                rig.session, ApiSettings(rig.box.base_url), rig.holder.credentials, rig.clock,
                bucket=bucket or TokenBucket(rate=1.0, burst=10**9, clock=rig.clock, slots=slots),
            )  # fmt: skip
            settings = PollSettings(take=1)
            pollers[name] = HolderPoller(name, ["GBR"], api, rig.store, rig.clock, settings)
        rig.runner = TierRunner(
            pollers, rig.store, rig.clock, dict.fromkeys(TIERS, TIMING), random.Random(7),
            slots=slots,
        )  # fmt: skip

    async def test_runs_beyond_the_limit_wait_their_turn(self, rig: Rig) -> None:
        """With one slot, another holder's run begins only once the run at work has ended."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        slow = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await until_sleeping(rig, slow)
        waiting = asyncio.create_task(rig.runner.run("other", Tier.COMMISSIONS))
        await asyncio.wait([waiting], timeout=0.1)
        assert not waiting.done()  # it would long be done if it had a slot of its own
        rig.clock.advance(30)
        await asyncio.wait_for(asyncio.gather(slow, waiting), 5)
        assert [r["endpoint"] for r in rig.requests()] == [
            "GET /dapp/orders",
            "GET /dapp/commissions/summary",
        ]

    async def test_a_run_paced_by_its_budget_lends_its_slot(self, rig: Rig) -> None:
        """A sweep waiting for its next token lets another holder's run work meanwhile."""
        rig.box.state.orders.create("shop")  # two orders, one a page: page 2 waits for a token
        slots = RunSlots(1)
        paced = TokenBucket(rate=0.001, burst=1, clock=rig.clock, slots=slots)
        self.two_holders(rig, slots, paced)
        sweep = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await until_sleeping(rig, sweep)
        other = asyncio.create_task(rig.runner.run("other", Tier.COMMISSIONS))
        assert await asyncio.wait_for(other, 5) is not None
        assert not sweep.done()
        rig.clock.advance(1000)
        assert await asyncio.wait_for(sweep, 5) is not None
        assert slots.in_use == 0

    async def test_submitted_runs_wait_in_a_queue_not_as_tasks(self, rig: Rig) -> None:
        """Submitted beyond the slots, a run waits as a queue entry and starts when one is free;
        a tier submitted twice while it waits runs once."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        assert rig.runner.waiting() == 1
        started = [t for t in asyncio.all_tasks() if "_run_from_queue" in repr(t.get_coro())]
        assert len(started) == 1  # the slow run: the waiting one is no task
        rig.clock.advance(30)
        for _ in range(400):
            idle = await rig.runner.wait_idle(0.01)
            if idle and rig.runner.waiting() == 0:
                break
        endpoints = [r["endpoint"] for r in rig.requests()]
        assert endpoints == ["GET /dapp/orders", "GET /dapp/commissions/summary"]

    async def test_a_lent_slot_starts_a_waiting_run(self, rig: Rig) -> None:
        """While a sweep waits for its next token, a run waiting in the queue goes ahead."""
        rig.box.state.orders.create("shop")
        slots = RunSlots(1)
        self.two_holders(rig, slots, TokenBucket(rate=0.001, burst=1, clock=rig.clock, slots=slots))
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        for _ in range(400):
            if "GET /dapp/commissions/summary" in [r["endpoint"] for r in rig.requests()]:
                break
            await asyncio.wait_for(rig.runner.wait_idle(0.005), 1)
        assert rig.runner.waiting() == 0
        assert [r["endpoint"] for r in rig.requests()] == [
            "GET /dapp/orders",
            "GET /dapp/commissions/summary",
        ]
        assert await rig.runner.stop(timeout_s=5)

    async def test_stop_and_removal_drop_waiting_runs(self, rig: Rig) -> None:
        """A removed holder's waiting runs and, on stop, every waiting run never start."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        await rig.runner.submit("other", Tier.PENDING_KYC)
        await rig.runner.submit("shop", Tier.COMMISSIONS)
        assert rig.runner.waiting() == 3
        rig.runner.remove_holder("other")
        assert rig.runner.waiting() == 1
        assert await rig.runner.stop(timeout_s=5)
        assert rig.runner.waiting() == 0
        await rig.runner.submit("shop", Tier.PENDING_KYC)  # after stop: ignored
        assert rig.runner.waiting() == 0
        assert [r["endpoint"] for r in rig.requests()] == ["GET /dapp/orders"]  # the slow one


async def _until_idle_or_sleeping(rig: Rig) -> None:
    """Until something sleeps on the fake clock (a slow answer, the token bucket), or no run is
    in progress (or starting)."""
    for _ in range(400):
        idle = await rig.runner.wait_idle(0.005)
        if rig.clock.sleepers or idle:
            return
