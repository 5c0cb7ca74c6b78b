"""The per-holder politeness budget, and the daemon's bound on tier runs at work at once.

Owns the arithmetic of tokens and the FIFO queue of waiters (``TokenBucket``), and the slots
tier runs take (``RunSlots``): a run waiting for its holder's budget lends its slot meanwhile.
It reads time from the injected ``Clock`` (so tests drive it with ``FakeClock``) and knows
nothing about HTTP or polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from drgreen_poller.clock import Clock

# The span over which the share of a holder's budget used is counted (``UsageWindow``).
USAGE_WINDOW_S = 60.0


class RunSlots:
    """At most ``limit`` tier runs at work at once, across every holder.

    When more runs are due than the machine keeps up with (every holder's first sweeps at
    start-up), the others wait before they begin, holding nothing but their place: a run at
    work holds its pages, entities and events in memory until it commits. A run waiting for its
    holder's request budget lends its slot meanwhile (``lent``), so a long, budget-paced sweep
    never holds up the others.

    Args:
        limit: runs at work at once (≥ 1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.lending = 0  # slots lent by runs waiting for their budget, right now
        self.on_lend: Callable[[], None] = lambda: None  # told when a slot is lent
        self._free = asyncio.Semaphore(limit)
        self._holders: set[asyncio.Task[object] | None] = set()

    @property
    def in_use(self) -> int:
        """Slots taken now."""
        return len(self._holders)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Take a slot for the current task (waiting for one), give it back on the way out."""
        task = asyncio.current_task()
        await self._free.acquire()
        self._holders.add(task)
        try:
            yield
        finally:
            if task in self._holders:  # not when cancelled while taking it back in ``lent``
                self._holders.discard(task)
                self._free.release()

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        """While the current task waits, its slot (if it holds one) serves another run."""
        task = asyncio.current_task()
        if task not in self._holders:
            yield
            return
        self._holders.discard(task)
        self._free.release()
        self.lending += 1
        self.on_lend()
        try:
            yield
        finally:
            self.lending -= 1
            await self._free.acquire()
            self._holders.add(task)


class UsageWindow:
    """How many requests were made over the last ``window_s``, counted in ``slots`` equal slots.

    A ring of counters: constant memory per holder whatever the rate, exact to one slot's width
    (the oldest slot is dropped whole). The operator page shows it as the share of the budget used.

    Args:
        clock: the time source (its ``monotonic``).
        window_s: the span counted.
        slots: how many slots the span is cut into.
    """

    def __init__(self, clock: Clock, window_s: float = USAGE_WINDOW_S, slots: int = 12) -> None:
        self.window_s = window_s
        self._clock = clock
        self._slot_s = window_s / slots
        self._ring = [(-1, 0)] * slots  # (slot number, requests in it)

    def add(self) -> None:
        """Count one request now."""
        number = int(self._clock.monotonic() // self._slot_s)
        place = number % len(self._ring)
        seen, count = self._ring[place]
        self._ring[place] = (number, count + 1 if seen == number else 1)

    def count(self) -> int:
        """Requests in the slots of the last ``window_s`` (the current slot included)."""
        now = int(self._clock.monotonic() // self._slot_s)
        return sum(n for number, n in self._ring if 0 <= now - number < len(self._ring))


class TokenBucket:
    """``rate`` tokens per second refill a bucket of ``burst``; each request takes one.

    Waiters are served first come, first served: a waiter holds the queue while it sleeps for
    its token, so a burst of calls leaves at exactly the sustained rate after the first ``burst``.

    Args:
        rate: sustained requests per second (> 0).
        burst: how many requests may go at once after a quiet period (≥ 1).
        clock: the time source.
        slots: the daemon's run slots: a caller holding one lends it while it waits here.
    """

    def __init__(
        self, rate: float, burst: int, clock: Clock, *, slots: RunSlots | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock.monotonic()
        self._queue = asyncio.Lock()
        self._slots = slots
        self.usage = UsageWindow(clock)

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_s(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        async with self._queue:
            delay_s = self.wait_s()
            if delay_s > 0:
                async with self._lent():
                    while delay_s > 0:
                        await self._clock.sleep(delay_s)
                        delay_s = self.wait_s()
            self._tokens -= 1
            self.usage.add()

    def share_used(self) -> float:
        """Requests of the last ``USAGE_WINDOW_S`` over what the sustained rate allows in it
        (a burst after a quiet spell may take it a little over 1)."""
        return self.usage.count() / (self.rate * self.usage.window_s)

    def _lent(self) -> AbstractAsyncContextManager[None]:
        return self._slots.lent() if self._slots is not None else nullcontext()
