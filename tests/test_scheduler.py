"""Table tests of the timing rules: jitter, backoff, Retry-After, start-up spreading."""

from __future__ import annotations

import asyncio
import random

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.errors import (
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamTransient,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from drgreen_poller.scheduler import (
    RETRY_AFTER_CAP_S,
    TierScheduler,
    Timing,
    backoff_delay,
    delay_after_failure,
    holds_holder,
    initial_due,
    jittered,
)

MINUTE = Timing(interval_s=60, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)


class TestJitter:
    def test_stays_within_ten_percent(self) -> None:
        """Over many draws, a 60 s interval lands in [54, 66] and uses the whole range."""
        rng = random.Random(1)
        draws = [jittered(60, 0.10, rng) for _ in range(5000)]
        assert min(draws) >= 54
        assert max(draws) <= 66
        assert min(draws) < 54.5
        assert max(draws) > 65.5

    def test_zero_jitter_is_exact(self) -> None:
        """Jitter 0 gives the interval itself."""
        assert jittered(60, 0, random.Random(1)) == 60


class TestBackoff:
    @pytest.mark.parametrize(
        ("failures", "nominal"), [(1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (7, 320), (8, 480)]
    )
    def test_doubles_then_caps_at_eight_intervals(self, failures: int, nominal: float) -> None:
        """Backoff doubles from 5 s and caps at 8 × the interval (480 s for a minute tier)."""
        delay = backoff_delay(failures, MINUTE, random.Random(failures))
        assert nominal * 0.9 <= delay <= nominal * 1.1

    def test_capped_by_backoff_max(self) -> None:
        """A slow tier's backoff is capped by backoff_max."""
        hourly = Timing(interval_s=3600, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)
        assert backoff_delay(20, hourly, random.Random(0)) <= 1800 * 1.1

    def test_retry_after_is_a_floor(self) -> None:
        """Retry-After longer than the backoff is waited out; a shorter one changes nothing."""
        rng = random.Random(0)
        long_hint = UpstreamRateLimited("slow down", status=429, retry_after_s=120)
        assert delay_after_failure(long_hint, 1, MINUTE, rng) == 120
        short_hint = UpstreamTransient("busy", status=503, retry_after_s=1)
        assert 4.5 <= delay_after_failure(short_hint, 1, MINUTE, rng) <= 5.5

    def test_absurd_retry_after_is_capped(self) -> None:
        """A Retry-After of days is held to an hour."""
        hint = UpstreamRateLimited("slow down", status=429, retry_after_s=10 * 86400)
        assert delay_after_failure(hint, 1, MINUTE, random.Random(0)) == RETRY_AFTER_CAP_S

    def test_no_hint_is_plain_backoff(self) -> None:
        """A connection error without hint backs off normally."""
        error = UpstreamUnavailable("refused")
        assert 9 <= delay_after_failure(error, 2, MINUTE, random.Random(0)) <= 11


class TestHolderHold:
    @pytest.mark.parametrize(
        ("error", "holds"),
        [
            (UpstreamRateLimited("slow down", status=429, retry_after_s=120), True),
            (UpstreamRateLimited("slow down", status=429), True),
            (UpstreamTransient("busy", status=503, retry_after_s=30), True),
            (UpstreamTransient("busy", status=503), False),
            (UpstreamUnavailable("refused"), False),
            (UpstreamMalformed("truncated"), False),
            (UpstreamUnauthorized("no", status=401), False),
            (ValueError("a bug"), False),
        ],
    )
    def test_which_failures_hold_the_whole_holder(self, error: Exception, holds: bool) -> None:
        """A 429 or any Retry-After holds every tier of the holder; other failures one tier."""
        assert holds_holder(error) is holds


class TestInitialDue:
    def test_future_due_is_kept(self) -> None:
        """Work not yet due after a restart keeps its stored time."""
        due = initial_due(1030.0, now=1000.0, timing=MINUTE, slot=0, slots=1, rng=random.Random(0))
        assert due == 1030.0

    def test_shortened_interval_wins(self) -> None:
        """A stored due time beyond the (new, shorter) interval is brought forward."""
        due = initial_due(5000.0, now=1000.0, timing=MINUTE, slot=0, slots=1, rng=random.Random(0))
        assert due == 1060.0

    def test_overdue_runs_soon_but_spread(self) -> None:
        """Overdue work runs within a jitter-sized window, not all at the same instant."""
        rng = random.Random(0)
        dues = [
            initial_due(10.0, now=1000.0, timing=MINUTE, slot=0, slots=1, rng=rng)
            for _ in range(50)
        ]
        assert all(1000.0 <= d <= 1006.0 for d in dues)
        assert len(set(dues)) == 50

    def test_a_lone_new_holder_starts_soon(self) -> None:
        """A single never-run holder starts within seconds, not a whole window later."""
        rng = random.Random(0)
        dues = [
            initial_due(None, now=0.0, timing=MINUTE, slot=0, slots=1, rng=rng) for _ in range(50)
        ]
        assert max(dues) <= 5.0

    def test_new_holders_are_staggered(self) -> None:
        """Never-run holders start spread across the first minute by their slot."""
        rng = random.Random(0)
        dues = [
            initial_due(None, now=0.0, timing=MINUTE, slot=i, slots=4, rng=rng) for i in range(4)
        ]
        assert [int(d // 15) for d in dues] == [0, 1, 2, 3]


class TestTierScheduler:
    async def test_a_run_due_again_before_it_ends_runs_again(self) -> None:
        """A run that reschedules itself into the past (a sweep longer than its interval, or
        a holder that recovered) runs again at once instead of being dropped by APScheduler."""
        runs: list[str] = []
        again = asyncio.Event()

        async def job(holder: str, tier: str) -> None:
            runs.append(tier)
            if len(runs) == 1:
                scheduler.schedule(holder, tier, SystemClock().now().timestamp() - 1)
            else:
                again.set()

        scheduler = TierScheduler(job, asyncio.Queue())
        scheduler.start({("shop", "active_orders"): SystemClock().now().timestamp()})
        try:
            await asyncio.wait_for(again.wait(), 5)
        finally:
            scheduler.shutdown()
        assert runs == ["active_orders", "active_orders"]
