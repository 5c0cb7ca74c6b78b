"""Tests of the fake clock and the per-holder token bucket, driven without real waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.ratelimit import RunSlots, TokenBucket


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

    async def test_a_sleep_counts_from_when_it_was_called(self) -> None:
        """A sleep made into a task counts from the call, not from the task's first step: time
        advanced in between wakes it as it would under a real clock."""
        clock = FakeClock()
        sleeper = asyncio.create_task(clock.sleep(10))
        clock.advance(10)  # before the task has run at all
        done, _ = await asyncio.wait({sleeper}, timeout=1)
        assert done == {sleeper}

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


async def _quiet() -> None:
    """Let every ready task run until each waits (a few loop turns)."""
    clock = SystemClock()
    for _ in range(10):
        await clock.sleep(0)


class TestRunSlots:
    async def test_at_most_limit_at_work(self) -> None:
        """With 2 slots, a third run waits until one of the two gives its slot back."""
        slots = RunSlots(2)
        leave = [asyncio.Event() for _ in range(3)]
        entered: list[int] = []

        async def run(n: int) -> None:
            async with slots.hold():
                entered.append(n)
                await leave[n].wait()

        tasks = [asyncio.create_task(run(n)) for n in range(3)]
        await _quiet()
        assert (entered, slots.in_use) == ([0, 1], 2)
        leave[1].set()
        await _quiet()
        assert (entered, slots.in_use) == ([0, 1, 2], 2)
        leave[0].set()
        leave[2].set()
        await asyncio.gather(*tasks)
        assert slots.in_use == 0

    async def test_a_waiting_run_lends_its_slot(self) -> None:
        """A run that waits inside ``lent`` lets another run work, and resumes once it is free."""
        slots = RunSlots(1)
        resume, leave = asyncio.Event(), asyncio.Event()
        steps: list[str] = []

        async def patient() -> None:
            async with slots.hold():
                async with slots.lent():
                    await resume.wait()
                steps.append("patient resumed")

        async def other() -> None:
            async with slots.hold():
                steps.append("other at work")
                await leave.wait()

        first = asyncio.create_task(patient())
        await _quiet()
        second = asyncio.create_task(other())
        await _quiet()
        resume.set()
        await _quiet()
        assert steps == ["other at work"]  # the patient run waits for its slot back
        leave.set()
        await asyncio.gather(first, second)
        assert steps == ["other at work", "patient resumed"]
        assert slots.in_use == 0

    async def test_lending_without_a_slot_changes_nothing(self) -> None:
        """``lent`` outside ``hold`` (poll-once's requests) gives away no slot it does not have."""
        slots = RunSlots(1)
        async with slots.lent():
            pass
        async with slots.hold():
            assert slots.in_use == 1
            blocked = asyncio.create_task(_hold_once(slots))
            await _quiet()
            assert not blocked.done()
        await blocked
        assert slots.in_use == 0

    async def test_cancelled_while_taking_its_slot_back(self) -> None:
        """A run cancelled while it waits for its lent slot back gives back nothing twice."""
        slots = RunSlots(1)
        resume, leave = asyncio.Event(), asyncio.Event()

        async def patient() -> None:
            async with slots.hold(), slots.lent():
                await resume.wait()

        async def other() -> None:
            async with slots.hold():
                await leave.wait()

        first = asyncio.create_task(patient())
        await _quiet()
        second = asyncio.create_task(other())
        resume.set()
        await _quiet()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        leave.set()
        await second
        assert slots.in_use == 0
        async with slots.hold():  # exactly one slot: a second holder must wait
            blocked = asyncio.create_task(_hold_once(slots))
            await _quiet()
            assert not blocked.done()
        await blocked

    def test_rejects_no_slots(self) -> None:
        """A limit below one is refused."""
        with pytest.raises(ValueError, match="at least 1"):
            RunSlots(0)

    async def test_the_token_bucket_lends_the_slot_while_it_waits(self) -> None:
        """A run waiting for its holder's next token lets another run take its slot."""
        clock = FakeClock()
        slots = RunSlots(1)
        bucket = TokenBucket(rate=1.0, burst=1, clock=clock, slots=slots)
        await bucket.acquire()  # the burst is spent: the next token is a second away

        async def paced() -> None:
            async with slots.hold():
                await bucket.acquire()

        waiting = asyncio.create_task(paced())
        await _quiet()
        assert clock.sleepers == 1  # asleep on the bucket ...
        assert slots.in_use == 0  # ... its slot lent
        other = asyncio.create_task(_hold_once(slots))
        await _quiet()
        assert other.done()
        clock.advance(1)
        await asyncio.wait_for(waiting, 5)
        assert slots.in_use == 0


async def _hold_once(slots: RunSlots) -> None:
    async with slots.hold():
        pass
