"""When each holder × tier polls: pure timing rules, and their wiring to APScheduler.

Owns jitter, exponential backoff, ``Retry-After`` and which failures hold a whole holder,
staggering of holders and the spreading of overdue work after a restart, all as pure functions
of an explicit ``now`` and an injected ``random.Random``. ``TierScheduler`` only hands one-shot
date jobs to APScheduler's asyncio scheduler; the state that matters (next due, failures, a
refused key) lives in SQLite, and ``runner.TierRunner`` decides: each of its runs yields a
``NextRuns`` value, which the scheduler follows. APScheduler owns neither retries nor
persistence.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from drgreen_poller.errors import UpstreamRateLimited, UpstreamTransient

log = structlog.get_logger(__name__)

# A revoked or wrong key is not fixed by hammering: one probe per this interval (the default of
# [schedule] unauthorized_retry).
UNAUTHORIZED_RETRY_S = 5 * 60.0
# Backoff never exceeds this many tier intervals (nor the configured backoff_max).
BACKOFF_INTERVALS_CAP = 8
# A Retry-After beyond this is treated as this (a bogus header must not park a tier for days).
RETRY_AFTER_CAP_S = 3600.0
# What to check when Dr Green refuses a holder's key (the runner's log line, check-config).
UNAUTHORIZED_HINT = (
    "Dr Green refused the key: check that api_key and secret_key are this holder's current pair "
    "(a deleted key stays refused), that the holder has a primary NFT, and that base_url is right"
)
# A time this close ahead counts as reached (clocks and APScheduler keep microseconds only).
DUE_SLACK_S = 0.001
# A tier seen for the first time starts within this window (staggered), not a full interval later.
FIRST_RUN_WINDOW_S = 60.0
# ... at its holder's slot in the window plus at most this much jitter.
FIRST_RUN_SPREAD_S = 5.0


@dataclass(frozen=True, slots=True)
class Timing:
    """The timing rules of one tier."""

    interval_s: float
    jitter: float = 0.10
    backoff_base_s: float = 5.0
    backoff_max_s: float = 1800.0


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """``seconds`` scaled by a uniform factor in [1 - jitter, 1 + jitter]."""
    return seconds * rng.uniform(1 - jitter, 1 + jitter)


def backoff_delay(failures: int, timing: Timing, rng: random.Random) -> float:
    """Delay after the ``failures``-th consecutive failure: doubling from the base, capped."""
    cap = min(timing.backoff_max_s, timing.interval_s * BACKOFF_INTERVALS_CAP)
    raw = timing.backoff_base_s * 2 ** max(0, failures - 1)
    return jittered(min(raw, cap), timing.jitter, rng)


def delay_after_failure(
    error: Exception, failures: int, timing: Timing, rng: random.Random
) -> float:
    """Seconds until the next attempt after a failed run.

    ``Retry-After`` (capped at an hour) is a floor under the backoff, never a shortcut.
    """
    delay = backoff_delay(failures, timing, rng)
    if isinstance(error, UpstreamTransient) and error.retry_after_s is not None:
        delay = max(delay, min(error.retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def holds_holder(error: Exception) -> bool:
    """Whether a failure holds back every tier of the holder, not only the tier that met it.

    A 429 (Dr Green's throttle counts the holder's requests, whichever tier sends them) and any
    ``Retry-After`` (the server said when to come back) do; other failures are the tier's own.
    """
    if isinstance(error, UpstreamRateLimited):
        return True
    return isinstance(error, UpstreamTransient) and error.retry_after_s is not None


def initial_due(
    stored_due: float | None,
    *,
    now: float,
    timing: Timing,
    slot: int,
    slots: int,
    rng: random.Random,
) -> float:
    """When a holder × tier first runs after start-up.

    Work that is not yet due keeps its stored time (but no later than one interval from now,
    should the interval have been shortened). Overdue work runs first, but spread over a
    jitter-sized window rather than all at once. Work never run before is staggered across
    the first minute by ``slot`` of ``slots`` (holders never fire together).
    """
    if stored_due is not None and stored_due > now:
        return min(stored_due, now + timing.interval_s)
    if stored_due is not None:
        return now + rng.uniform(0, min(timing.interval_s * timing.jitter, FIRST_RUN_WINDOW_S))
    window = min(timing.interval_s, FIRST_RUN_WINDOW_S)
    share = window / max(1, slots)
    return now + share * slot + rng.uniform(0, min(share, FIRST_RUN_SPREAD_S))


Job = Callable[[str, str], Awaitable[object]]
# When tiers run next, as one run decided it: (holder, tier) → Unix seconds. A run always names
# its own tier (unless it was abandoned); a refusal, a probe or a recovery names the holder's
# other tiers too.
NextRuns = dict[tuple[str, str], float]


class Scheduler(Protocol):
    """What the daemon needs of a scheduler: fire ``job(holder, tier)`` at the times it is
    given, at first by ``start`` and then as each run's ``NextRuns`` arrive on ``plans``."""

    def start(self, due: Mapping[tuple[str, str], float]) -> None: ...
    def schedule(self, holder: str, tier: str, when: float) -> None: ...
    def schedule_all(self, runs: NextRuns) -> None: ...
    def unschedule(self, holder: str, tier: str) -> None: ...
    def next_run(self, holder: str, tier: str) -> float | None: ...
    @property
    def running(self) -> bool: ...
    def pause(self) -> None: ...
    def shutdown(self) -> None: ...


SchedulerFactory = Callable[[Job, "asyncio.Queue[NextRuns]"], Scheduler]


class TierScheduler:
    """APScheduler, asyncio flavour, running one-shot jobs: each run's ``NextRuns`` schedules
    the next.

    Args:
        job: the coroutine function run as ``job(holder, tier)`` (the daemon's:
            ``TierRunner.submit``).
        plans: where each run's ``NextRuns`` arrive (``TierRunner.plans``); followed from
            ``start`` to ``shutdown``.
    """

    def __init__(self, job: Job, plans: asyncio.Queue[NextRuns]) -> None:
        self._job = job
        self._plans = plans
        self._following: asyncio.Task[None] | None = None
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self, due: Mapping[tuple[str, str], float]) -> None:
        """Start with a first due time (Unix seconds) for every holder × tier."""
        self.schedule_all(dict(due))
        self._scheduler.start()
        self._following = asyncio.ensure_future(follow(self._plans, self))

    def schedule_all(self, runs: NextRuns) -> None:
        """(Re)schedule each holder × tier of ``runs`` at its time."""
        for (holder, tier), when in runs.items():
            self.schedule(holder, tier, when)

    def schedule(self, holder: str, tier: str, when: float) -> None:
        """(Re)schedule the one run of ``holder``/``tier`` at ``when`` (Unix seconds)."""
        self._scheduler.add_job(
            self._job,
            "date",
            run_date=datetime.fromtimestamp(when, UTC),
            args=(holder, tier),
            id=f"{holder}/{tier}",
            replace_existing=True,
            # The daemon's job (TierRunner.submit) hands the run to the runner's queue and
            # returns at once; should a job still run when its next time comes (a runner used
            # without the queue), the new run must start beside it, or APScheduler drops the job
            # and the tier for good. Runs of a holder never overlap: a lock per holder.
            max_instances=2,
            coalesce=True,
            misfire_grace_time=None,
        )

    def unschedule(self, holder: str, tier: str) -> None:
        """Drop the run of ``holder``/``tier`` (a holder removed by a reload)."""
        if self._scheduler.get_job(f"{holder}/{tier}") is not None:
            self._scheduler.remove_job(f"{holder}/{tier}")

    def next_run(self, holder: str, tier: str) -> float | None:
        job = self._scheduler.get_job(f"{holder}/{tier}")
        return job.next_run_time.timestamp() if job and job.next_run_time else None

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def pause(self) -> None:
        """Start no new job (running ones go on)."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        if self._following is not None:
            self._following.cancel()
            self._following = None
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


async def follow(plans: asyncio.Queue[NextRuns], scheduler: Scheduler) -> None:
    """Schedule every ``NextRuns`` that arrives on ``plans``, until cancelled."""
    while True:
        scheduler.schedule_all(await plans.get())
