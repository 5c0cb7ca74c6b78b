"""Runs one holder × tier and decides when it runs next: the job ``TierScheduler`` fires.

Owns what happens around a poll: the queue of runs waiting for a slot, the lock that keeps a
holder's runs from overlapping, backoff after a failure, holder-wide holds (429,
``Retry-After``), abandoning runs on stop, and each run's ``NextRuns``. A refused key's probes
and events are ``refusals``'; the timing rules the pure functions of ``scheduler``; fetching and
storing belong to ``poller``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from drgreen_poller.clock import Clock
from drgreen_poller.errors import (
    ConcurrentUpdate,
    LeaseLost,
    StoreError,
    UpstreamError,
    UpstreamUnauthorized,
)
from drgreen_poller.poller import HolderPoller
from drgreen_poller.ratelimit import RunSlots
from drgreen_poller.refusals import Refusals, describe
from drgreen_poller.scheduler import (
    DUE_SLACK_S,
    UNAUTHORIZED_RETRY_S,
    NextRuns,
    Timing,
    delay_after_failure,
    holds_holder,
    jittered,
)
from drgreen_poller.store.roles import RunStateStore

log = structlog.get_logger(__name__)

# Tier runs at work at once, across holders (``RunSlots``). Enough to keep requests to a slow
# upstream overlapping (5,000 holders need about 110 runs a second at the default intervals);
# few enough that a start-up with every holder's first sweeps due holds a bounded number of
# pages in memory while the others wait their turn (a run waiting for its budget lends its slot).
MAX_RUNS_AT_WORK = 64

# (holder, tier, outcome, events, duration_s): duration_s is how long the poll itself took.
ResultHook = Callable[[str, str, str, Sequence[Mapping[str, Any]], float], None]


class TierRunner:
    """Runs one holder × tier and decides when it runs next (the job ``TierScheduler`` calls).

    Success: next run after the jittered interval. Failure: exponential backoff (``Retry-After``
    as a floor); a 429 or a ``Retry-After`` holds back every tier of the holder until it expires.
    401/403: ``poller.holder_unauthorized`` is emitted once and the holder is refused: one cheap
    signed probe per ``unauthorized_retry_s`` (± jitter) and no other request, until a probe
    succeeds, emits ``poller.holder_recovered`` and makes every tier due at once. Runs of one
    holder never overlap (a lock per holder). ``stop`` abandons the runs in progress.

    Args:
        pollers: the ``HolderPoller`` of each holder, by name.
        store: the state database.
        clock: the time source.
        timings: the ``Timing`` of each tier.
        rng: randomness for jitter.
        on_result: told ``(holder, tier, outcome, events, duration_s)`` after every run,
            outcome being ``ok``, ``failed`` or ``unauthorized`` (metrics; waking the delivery
            worker); an operational event is told as tier ``holder``, outcome ``event``.
        unauthorized_retry_s: the probe interval of a refused holder.
        slots: the bound on runs at work at once (give the one the holders' token buckets were
            made with, so a run waiting for its budget lends its slot); ``MAX_RUNS_AT_WORK``
            slots of its own when not given.
    """

    def __init__(
        self,
        pollers: Mapping[str, HolderPoller],
        store: RunStateStore,
        clock: Clock,
        timings: Mapping[str, Timing],
        rng: random.Random,
        on_result: ResultHook = lambda holder, tier, outcome, events, duration_s: None,
        *,
        unauthorized_retry_s: float = UNAUTHORIZED_RETRY_S,
        slots: RunSlots | None = None,
    ) -> None:
        self.pollers = dict(pollers)
        self.store = store
        self.clock = clock
        self.timings = dict(timings)
        self.rng = rng
        self.on_result = on_result
        self.refusals = Refusals(store, clock, rng, on_result, unauthorized_retry_s)
        # Each run's NextRuns, for the scheduler to follow (``TierScheduler``'s ``plans``).
        self.plans: asyncio.Queue[NextRuns] = asyncio.Queue()
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None
        # A write of a holder's was refused (another instance holds its lease now): the
        # service stops polling it (``sharing``); told the holder's name.
        self.on_lease_lost: Callable[[str], None] = lambda holder: None
        self.slots = slots or RunSlots(MAX_RUNS_AT_WORK)
        self._locks = {name: asyncio.Lock() for name in self.pollers}
        self._keys = dict.fromkeys(self.pollers, 0)  # holder → pollers installed since start
        # Runs in progress: holder, tier, and when each started (monotonic).
        self._running: dict[asyncio.Task[NextRuns], tuple[str, str, float]] = {}
        self._stopping = False
        self._held_until: dict[str, float] = {}  # 429 / Retry-After: no tier of it before then
        self._idle = asyncio.Event()
        self._idle.set()
        # Runs submitted while no slot was free: holder → its tiers waiting (``submit``), and the
        # holders whose turn may come (an ordered set: insertion order is the queue's order).
        self._waiting: dict[str, list[str]] = {}
        self._ready: dict[str, None] = {}
        self._started: set[asyncio.Task[NextRuns]] = set()  # runs started from the queue
        self._starting: set[str] = set()  # holders whose run from the queue is not in yet
        self.slots.on_lend = self._dispatch

    async def submit(self, holder: str, tier: str) -> None:
        """The scheduler's job: run the tier as soon as a slot and its holder are free.

        A run that cannot start at once waits its turn as an entry in a queue, not as a task
        holding its place (thousands of first sweeps due together cost next to nothing while
        they wait), and starts as runs end or lend their slots. A tier already waiting is not
        queued twice. Its outcome is ``run``'s: its ``NextRuns`` go to ``plans``.
        """
        if self._stopping or holder not in self.pollers:
            return
        waiting = self._waiting.setdefault(holder, [])
        if tier not in waiting:
            waiting.append(tier)
        self._ready[holder] = None
        self._dispatch()

    def waiting(self) -> int:
        """Runs submitted and not started yet."""
        return sum(len(tiers) for tiers in self._waiting.values())

    def _dispatch(self) -> None:
        """Start waiting runs while there are slots for them (a lent slot counts as free)."""
        busy = {name for name, _, _ in self._running.values()} | self._starting
        while len(busy) < self.slots.limit + self.slots.lending and not self._stopping:
            # A holder with a run in progress keeps its place (it is one of at most a slot's
            # worth): its turn comes when that run ends (``_ended``).
            holder = next((name for name in self._ready if name not in busy), None)
            if holder is None:
                return
            del self._ready[holder]
            tiers = self._waiting[holder]  # a holder is ready only while a tier of it waits
            tier = tiers.pop(0)
            if not tiers:
                del self._waiting[holder]
            self._starting.add(holder)
            self._idle.clear()
            task = asyncio.create_task(self._run_from_queue(holder, tier))
            self._started.add(task)
            task.add_done_callback(self._started.discard)
            busy.add(holder)

    async def _run_from_queue(self, holder: str, tier: str) -> NextRuns:
        self._starting.discard(holder)  # ``run`` registers it before it first waits
        runs = await self.run(holder, tier)
        if not self._running and not self._starting:  # it did not start (a stop came first)
            self._idle.set()
        return runs

    async def run(self, holder: str, tier: str) -> NextRuns:
        """Run the tier now; returns when it, and any other tier the run moved, run next (Unix
        seconds), and puts that on ``plans`` for the scheduler.

        Returns nothing once ``stop`` was called (the run did not start, or was abandoned with
        nothing of it written) or when the state database failed (the daemon is told through
        ``on_fatal``).
        """
        if self._stopping or holder not in self.pollers:  # stopping, or removed by a reload
            return {}
        task = asyncio.create_task(self._run_in_turn(holder, tier))
        started = self.clock.monotonic()
        self._running[task] = (holder, tier, started)
        self._idle.clear()
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():  # this job itself was cancelled: take the run down with it
                task.cancel()
                await asyncio.wait({task})
            del self._running[task]
            self._ended(holder)  # may start another run (the next turn of the queue)
            if not self._running and not self._starting:
                self._idle.set()
        if task.cancelled():
            log.info(
                "poll_abandoned",
                holder=holder,
                tier=tier,
                outcome="abandoned",
                duration_ms=self._ms_since(started),
            )
            return {}
        runs = self._outcome(holder, tier, task)
        if runs:
            self.plans.put_nowait(runs)
        return runs

    def _ended(self, holder: str) -> None:
        """A run ended: the holder's next waiting tier may go, and a slot is free for another."""
        if holder in self._waiting:
            self._ready[holder] = None
        self._dispatch()

    def _outcome(self, holder: str, tier: str, task: asyncio.Task[NextRuns]) -> NextRuns:
        try:
            return task.result()
        except LeaseLost:
            # Another instance polls this holder now: nothing of this run was written.
            log.warning("lease_lost", holder=holder, tier=tier, hint="another instance holds it")
            self.on_lease_lost(holder)
            return {}
        except StoreError as exc:
            # The tier cannot go on without its state: the daemon must stop (systemd restarts
            # it) rather than limp on. Raising would only give APScheduler a traceback to log.
            log.error("state_database_failed", holder=holder, tier=tier, error=str(exc))
            self.on_fatal(exc)
            return {}

    async def stop(self, timeout_s: float) -> bool:
        """Start no new run and abandon the runs in progress, at most ``timeout_s``.

        Their requests are cut and their transactions roll back, so nothing of a half-done run
        is written; the next start runs them again. True if every run ended in time.
        """
        self._stopping = True
        self._waiting.clear()  # never started: nothing of them to abandon
        self._ready.clear()
        for task in self._running:
            task.cancel()
        return await self.wait_idle(timeout_s)

    def add_holder(self, holder: str, poller: HolderPoller) -> None:
        """Poll ``holder`` from now on, or with a new poller (new keys, new settings)."""
        self.pollers[holder] = poller
        self._locks.setdefault(holder, asyncio.Lock())
        self._keys[holder] = self._keys.get(holder, 0) + 1

    def remove_holder(self, holder: str) -> None:
        """Poll ``holder`` no more: its runs in progress are abandoned (nothing of them is
        written) and its holds forgotten. Its state stays in the database (a refusal too: see
        ``probe_now``)."""
        self.pollers.pop(holder, None)
        self._waiting.pop(holder, None)
        self._ready.pop(holder, None)
        for task, (name, _, _) in self._running.items():
            if name == holder:
                task.cancel()
        self._held_until.pop(holder, None)
        self.refusals.forget(holder)

    async def probe_now(self, holder: str) -> NextRuns:
        """A refused holder was given new keys, or added back: probe at once rather than at the
        next interval (only a probe clears the refusal the database remembers).

        Returns its tiers due now when the holder was refused (and so is probed now), else
        nothing.
        """
        return await self.refusals.probe_now(holder, list(self.timings))

    def longest_run_s(self) -> float:
        """How long the oldest run in progress has been going (0 when idle)."""
        now = self.clock.monotonic()
        return max((now - started for _, _, started in self._running.values()), default=0.0)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no run is in progress, at most ``timeout_s``; True if idle."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _run_in_turn(self, holder: str, tier: str) -> NextRuns:
        # The holder's lock first: a run waiting for another tier of its holder takes no slot.
        async with self._locks[holder], self.slots.hold():
            return await self._run_locked(holder, tier)

    async def _run_locked(self, holder: str, tier: str) -> NextRuns:
        timing, keys = self.timings[tier], self._keys[holder]
        now = self.clock.now().timestamp()
        refused = await self.refusals.next_probes()
        # A refused key waits for its next probe, a throttled holder for its hold to expire:
        # not a single request of any tier before then.
        blocked_until = refused.get(holder, self._held_until.get(holder, 0.0))
        if now + DUE_SLACK_S < blocked_until:
            return {(holder, tier): blocked_until}
        if holder in refused:
            return await self._probe(holder, tier, keys)
        next_due = now + jittered(timing.interval_s, timing.jitter, self.rng)
        started = self.clock.monotonic()
        try:
            result = await self.pollers[holder].poll_tier(tier, next_due_at=next_due)
        except UpstreamUnauthorized as exc:
            self.on_result(holder, tier, "unauthorized", [], self.clock.monotonic() - started)
            return await self.refusals.refuse(
                holder, tier, exc, duration_ms=self._ms_since(started), jitter=timing.jitter,
                tiers=list(self.timings), keys_moved=lambda: self._keys.get(holder) != keys,
            )  # fmt: skip
        except (UpstreamError, ConcurrentUpdate) as exc:
            self.on_result(holder, tier, "failed", [], self.clock.monotonic() - started)
            return await self._failed(holder, tier, exc, timing, self._ms_since(started))
        except (StoreError, LeaseLost):
            raise  # the database is gone (the daemon must stop), or the holder went elsewhere
        except Exception as exc:  # loop-level boundary: log, back off, carry on
            log.exception("poll_crashed", holder=holder, tier=tier)
            self.on_result(holder, tier, "failed", [], self.clock.monotonic() - started)
            return await self._failed(holder, tier, exc, timing, self._ms_since(started))
        self.on_result(holder, tier, "ok", result.events, self.clock.monotonic() - started)
        return {(holder, tier): next_due}

    def _ms_since(self, started: float) -> float:
        """Milliseconds since ``started`` (a monotonic reading): a run's ``duration_ms``."""
        return round((self.clock.monotonic() - started) * 1000, 1)

    async def _failed(
        self, holder: str, tier: str, exc: Exception, timing: Timing, duration_ms: float
    ) -> NextRuns:
        now = self.clock.now().timestamp()
        runs = await self.store.tier_runs(holder)
        failures = 1 + next((r.consecutive_failures for r in runs if r.tier == tier), 0)
        next_due = now + delay_after_failure(exc, failures, timing, self.rng)
        await self.store.record_failure(
            holder, tier, now=self.clock.now(), error=describe(exc), next_due_at=next_due
        )
        log.warning(
            "poll_failed",
            holder=holder,
            tier=tier,
            outcome="failed",
            duration_ms=duration_ms,
            error=describe(exc),
            error_class=type(exc).__name__,
            consecutive_failures=failures,
            retry_in_s=round(next_due - now, 1),
        )
        if holds_holder(exc):  # the other tiers wait too (and so does a restarted daemon)
            self._held_until[holder] = max(self._held_until.get(holder, 0.0), next_due)
            await self.store.postpone(holder, next_due)
        return {(holder, tier): next_due}

    def _fired(self, holder: str) -> set[str]:
        """The tiers of ``holder`` that run next anyway: in progress, or waiting in the queue
        (its plan reaches the scheduler after the next of them has left the queue, so a plan
        for them would run that one twice)."""
        running = {name for owner, name, _ in self._running.values() if owner == holder}
        return running | set(self._waiting.get(holder, ()))

    async def _probe(self, holder: str, tier: str, keys: int) -> NextRuns:
        """The refused holder's probe; once it works, the holder's throttle goes too."""
        runs = await self.refusals.probe(
            holder, tier, self.pollers[holder], jitter=self.timings[tier].jitter,
            tiers=list(self.timings), fired=lambda: self._fired(holder),
            keys_moved=lambda: self._keys.get(holder) != keys,
        )  # fmt: skip
        if holder not in await self.refusals.next_probes():
            self._held_until.pop(holder, None)
        return runs
