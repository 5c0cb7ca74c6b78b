"""Tests of the fake clock and the per-holder token bucket, driven without real waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.ratelimit import TokenBucket


async def _settle(clock: FakeClock, tasks: list[asyncio.Task[None]]) -> None:
    """Let the loop run until every task has finished or one of them sleeps on the clock.

    The others then wait behind it (on the bucket's queue), so time must move to make progress.
    """
    for _ in range(1000):
        pending = [t for t in tasks if not t.done()]
        if not pending or clock.sleepers:
            return
        await asyncio.wait(pending, timeout=0.001)
    raise AssertionError("tasks never settled")


class TestFakeClock:
    async def test_sleepers_wake_in_deadline_order(self) -> None:
        """Sleepers wake once time passes their deadline, earliest first."""
        clock = FakeClock()
        woken: list[str] = []

        async def sleeper(name: str, delay: float) -> None:
            await clock.sleep(delay)
            woken.append(name)

        tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 1))]
        await asyncio.wait(tasks, timeout=0.01)
        assert clock.sleepers == 2
        clock.advance(0.5)
        await asyncio.wait(tasks, timeout=0.01)
        assert woken == []
        clock.advance(10)
        await asyncio.gather(*tasks)
        assert woken == ["early", "late"]

    def test_now_moves_with_advance(self) -> None:
        """now() and monotonic() move exactly by the advanced amount."""
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        clock.advance(90)
        assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=90)
        assert clock.monotonic() == 90

    def test_refuses_naive_start_and_going_back(self) -> None:
        """A naive start time and a negative advance are programming errors."""
        with pytest.raises(ValueError, match="timezone"):
            FakeClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the naive datetime is the point
        with pytest.raises(ValueError, match="backwards"):
            FakeClock().advance(-1)

    async def test_zero_sleep_returns(self) -> None:
        """A sleep of zero returns without time moving."""
        clock = FakeClock()
        await clock.sleep(0)
        assert clock.monotonic() == 0


class TestSystemClock:
    async def test_is_aware_and_monotonic(self) -> None:
        """The real clock gives aware UTC times and a non-decreasing monotonic reading."""
        clock = SystemClock()
        first = clock.monotonic()
        await clock.sleep(0)
        assert clock.now().tzinfo is UTC
        assert clock.monotonic() >= first


class TestTokenBucket:
    async def test_burst_then_sustained_rate(self) -> None:
        """50 concurrent acquirers: 3 go at once, then exactly one per second."""
        clock = FakeClock()
        bucket = TokenBucket(rate=1.0, burst=3, clock=clock)
        granted: list[float] = []

        async def take() -> None:
            await bucket.acquire()
            granted.append(clock.monotonic())

        tasks = [asyncio.create_task(take()) for _ in range(50)]
        await _settle(clock, tasks)
        while not all(t.done() for t in tasks):
            clock.advance(0.25)
            await _settle(clock, tasks)
        assert granted[:3] == [0.0, 0.0, 0.0]
        assert granted[3:] == [float(i) for i in range(1, 48)]
        # No window of w seconds ever holds more than burst + w * rate grants.
        for i, start in enumerate(granted):
            in_window = [t for t in granted[i:] if t < start + 10]
            assert len(in_window) <= 3 + 10

    async def test_refills_after_quiet_period_but_not_beyond_burst(self) -> None:
        """After a long pause the bucket holds at most ``burst`` tokens."""
        clock = FakeClock()
        bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
        for _ in range(3):
            await bucket.acquire()
        assert bucket.wait_s() == pytest.approx(0.5)
        clock.advance(3600)
        assert bucket.wait_s() == 0
        for _ in range(3):
            await bucket.acquire()
        assert bucket.wait_s() == pytest.approx(0.5)

    @pytest.mark.parametrize(("rate", "burst"), [(0, 3), (-1, 3), (1, 0)])
    def test_rejects_nonsense(self, rate: float, burst: int) -> None:
        """A non-positive rate or a burst below one is refused."""
        with pytest.raises(ValueError, match="must"):
            TokenBucket(rate, burst, FakeClock())
