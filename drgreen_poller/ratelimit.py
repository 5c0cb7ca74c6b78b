"""The per-holder politeness budget: a token bucket every upstream request of a holder waits on.

Owns only the arithmetic of tokens and the FIFO queue of waiters; it reads time from the injected
``Clock`` (so tests drive it with ``FakeClock``) and knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio

from drgreen_poller.clock import Clock


class TokenBucket:
    """``rate`` tokens per second refill a bucket of ``burst``; each request takes one.

    Waiters are served first come, first served: a waiter holds the queue while it sleeps for
    its token, so a burst of calls leaves at exactly the sustained rate after the first ``burst``.

    Args:
        rate: sustained requests per second (> 0).
        burst: how many requests may go at once after a quiet period (≥ 1).
        clock: the time source.
    """

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
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
            while delay_s > 0:
                await self._clock.sleep(delay_s)
                delay_s = self.wait_s()
            self._tokens -= 1
