"""The demo's automatic story: steps that move a holder's world forward, on the injected clock."""

from __future__ import annotations

import asyncio
import io
import json
import random

import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.sandbox import InvalidInput, SandboxState, run_sandbox, seed_demo
from drgreen_poller.sandbox.story import STEP_INTERVAL_S, run_story, story_step


class TestStory:
    def test_steps_drive_every_lifecycle(self) -> None:
        """Two hundred seeded steps sign clients up, approve, pay, ship and deliver orders."""
        state = SandboxState(FakeClock(), seed=1)
        holder = seed_demo(state)
        rng = random.Random(1)
        steps = [story_step(state, holder, rng) for _ in range(200)]
        assert all(steps)
        orders = state.orders.of(holder)
        assert len(orders) > 5
        assert {o.order_status for o in orders} >= {"PENDING", "SHIPPED", "DELIVERED"}
        assert any("signed up" in s for s in steps)
        assert any("paid" in s for s in steps)
        assert any(c.payment_status == "PAID" for c in state.commissions.of(holder))

    def test_steps_are_reproducible(self) -> None:
        """The same seeds tell the same story."""
        stories = []
        for _ in range(2):
            state = SandboxState(FakeClock(), seed=4)
            holder = seed_demo(state)
            rng = random.Random(9)
            stories.append([story_step(state, holder, rng) for _ in range(30)])
        assert stories[0] == stories[1]

    def test_empty_world_signs_someone_up(self) -> None:
        """With nothing to act on, a step signs a new customer up."""
        state = SandboxState(FakeClock())
        holder = state.create_holder("h1")
        assert "signed up" in story_step(state, holder, random.Random(0))

    async def test_run_story_sleeps_on_the_clock(self) -> None:
        """``run_story`` takes one step per interval of the clock, divided by the speed."""
        clock = FakeClock()
        state = SandboxState(clock)
        holder = seed_demo(state)
        seen: list[str] = []
        task = asyncio.ensure_future(run_story(state, holder, speed=2, on_step=seen.append))
        for _ in range(3):
            while not clock.sleepers:
                await SystemClock().sleep(0.001)
            clock.advance(STEP_INTERVAL_S / 2)
            await SystemClock().sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(seen) == 3

    async def test_speed_must_be_positive(self) -> None:
        """A speed of zero is refused."""
        state = SandboxState(FakeClock())
        with pytest.raises(InvalidInput, match="speed must be greater than 0"):
            await run_story(state, state.create_holder("h1"), speed=0)

    async def test_run_sandbox_tells_the_story(self) -> None:
        """With a speed, ``run_sandbox`` writes ``story:`` lines after the announcement."""
        out = io.StringIO()
        ready = asyncio.Event()
        task = asyncio.ensure_future(
            run_sandbox("127.0.0.1", 0, out=out, ready=ready, speed=STEP_INTERVAL_S / 0.001)
        )
        await asyncio.wait_for(ready.wait(), timeout=5)
        for _ in range(1000):
            if out.getvalue().count("\n") >= 3:
                break
            await SystemClock().sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first, *rest = out.getvalue().splitlines()
        assert "base_url" in json.loads(first)
        assert rest[0].startswith("story: ")
