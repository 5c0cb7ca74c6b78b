"""Time for the whole package: the ``Clock`` protocol, the real ``SystemClock`` and a ``FakeClock``.

``SystemClock`` is the only code that reads the wall clock, the monotonic clock or sleeps (ruff's
TID251 bans those calls everywhere else). ``FakeClock`` moves only when told to, so tests,
benchmarks and the sandbox can drive time without waiting. Nothing here knows about polling.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    """A source of time that components take as a collaborator."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


DEFAULT_FAKE_START = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when ``advance`` is called.

    Sleepers wake, in deadline order, once ``advance`` moves time past their deadline. A sleep of
    zero or less returns at once (after yielding to the loop once).
    """

    def __init__(self, start: datetime = DEFAULT_FAKE_START) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._start = start
        self._offset_s = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._offset_s)

    def monotonic(self) -> float:
        return self._offset_s

    @property
    def sleepers(self) -> int:
        """How many coroutines are waiting in ``sleep`` right now."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        """Until ``seconds`` after this call: the deadline is taken now, so a sleep wrapped in a
        task that first runs after an ``advance`` still wakes when it should."""
        return self._sleep_until(self._offset_s + seconds)

    async def _sleep_until(self, deadline: float) -> None:
        if deadline <= self._offset_s:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._ids), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a FakeClock cannot go backwards")
        self._offset_s += seconds
        while self._sleepers and self._sleepers[0][0] <= self._offset_s:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
