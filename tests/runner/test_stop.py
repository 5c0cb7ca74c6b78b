"""Stopping the tier runner: a run in flight (or waiting for a token) is abandoned with nothing
written, no run starts after the stop, and a cancelled job takes its run down.
"""

from __future__ import annotations

import asyncio

import pytest

from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.tiers import Tier
from tests.runner.rig import Rig, until_sleeping


class TestStop:
    async def test_a_run_in_flight_is_abandoned_and_nothing_written(self, rig: Rig) -> None:
        """stop cuts a run waiting on Dr Green: no snapshot, no seed mark, no reschedule."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await until_sleeping(rig, running)
        assert rig.clock.sleepers == 1  # the sandbox is answering slowly
        assert await rig.runner.stop(timeout_s=5)
        assert await running == {}
        assert await rig.store.entities("shop") == []
        assert not any(r.seeded_at for r in await rig.store.tier_runs("shop"))
        assert rig.planned() == []

    async def test_no_run_starts_after_stop(self, rig: Rig) -> None:
        """Once stopped, a run the scheduler had already fired sends nothing and plans nothing."""
        assert await rig.runner.stop(timeout_s=5)
        assert await rig.runner.run("shop", Tier.COMMISSIONS) == {}
        assert rig.requests() == []

    async def test_the_token_bucket_wait_is_interrupted(self, rig: Rig) -> None:
        """A run waiting for its next token (page 2 of a sweep) ends at once on stop."""
        rig.box.state.orders.create("shop")
        bucket = TokenBucket(rate=0.001, burst=1, clock=rig.clock)  # the next token in 1000 s
        rig.runner = rig.new_runner(bucket=bucket, take=1)
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await until_sleeping(rig, running)
        assert [r["endpoint"] for r in rig.requests()] == ["GET /dapp/orders"]
        assert rig.clock.sleepers == 1
        assert await rig.runner.stop(timeout_s=5)
        assert await running == {}
        assert len(rig.requests()) == 1
        assert await rig.store.entities("shop") == []

    async def test_a_cancelled_job_takes_its_run_down(self, rig: Rig) -> None:
        """Cancelling the job itself (APScheduler's task) cancels the poll; nothing is written."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await until_sleeping(rig, running)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await rig.runner.wait_idle(timeout_s=5)
        assert await rig.store.entities("shop") == []
