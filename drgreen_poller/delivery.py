"""The delivery worker: takes due outbox rows, hands them to sinks, records every attempt.

Owns each attempt's next state (the retry policy itself is ``retries.py``), bounded concurrency,
waking at once for new rows, the drain on stop, the gate a shared database's instance passes
before each claim and send, and the periodic pruning of old rows. Ordering per sink and resource
is the store's claim rule; how an event travels is the sink's business. Delivery is at least
once: receivers deduplicate on the event id (``webhook-id``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial

import structlog

from drgreen_poller.claim_queue import ClaimQueue
from drgreen_poller.clock import Clock
from drgreen_poller.config import DeliveryConfig
from drgreen_poller.retries import retry_delay
from drgreen_poller.sinks import Outcome, Sink
from drgreen_poller.store import UNROUTED, AttemptRecord, DeliveryState, DueDelivery
from drgreen_poller.store.roles import DeliveryStore

log = structlog.get_logger(__name__)

# With nothing due, look again at least this often (rows requeued by the CLI, clock drift).
IDLE_RECHECK_S = 5.0
# Rows claimed per slot and sink, counting those under way: a finishing attempt starts a claimed
# row at once, so the slots stay busy while the loop writes (one commit per turn, not per event).
# Each sink has its own queue and share of the claim, and a freed slot goes to the sink with the
# fewest attempts under way, so a receiver that hangs holds up its own rows only.
CLAIM_AHEAD = 8
# Under load a turn records up to this many slots' worth of ended attempts at once (fewer
# commits, fewer hand-offs: about 10 % less CPU per event at two than at one, measured with eight
# rows claimed per slot), but none waits for its record longer than BATCH_WAIT_S.
BATCH_SLOTS = 2
BATCH_WAIT_S = 0.05
# Old delivered rows and events are pruned this often.
UPKEEP_EVERY_S = 3600.0

AttemptHook = Callable[[str, str], None]
# Where instances share the database: the epoch whose claims may be sent now (None: none may).
SendGate = Callable[[], int | None]


def until_next_due(upcoming: float | None, now: float) -> float:
    """Seconds to sleep before looking for due rows again, given the earliest pending one."""
    if upcoming is None or upcoming <= now:
        # Nothing pending, or due rows held back behind an earlier event in flight (its
        # finishing wakes us): just look again in a while.
        return IDLE_RECHECK_S
    return min(upcoming - now, IDLE_RECHECK_S)


def _unroutable(row: tuple[int, str, str, int], now: datetime) -> AttemptRecord:
    """The failed attempt recorded for a pending row ``(id, sink, event_id, attempts)`` of a
    sink no longer configured."""
    delivery_id, sink, event_id, attempts = row
    return AttemptRecord(
        delivery_id=delivery_id, attempt=attempts + 1, started_at=now, duration_ms=0.0,
        ok=False, status=None, error_class=UNROUTED, excerpt=None,
        state=DeliveryState.FAILED, sink=sink, event_id=event_id,
    )  # fmt: skip


class DeliveryWorker:
    """Delivers outbox rows to their sinks.

    Args:
        store: the state database.
        sinks: the sinks by name.
        config: ``[delivery]``: timeout, retry schedule, retention, concurrency.
        clock: the time source.
        rng: randomness for retry jitter.
        on_attempt: told ``(sink, outcome)`` for every attempt (metrics), outcome being
            ``delivered``, ``retrying`` or ``failed`` (given up).
    """

    def __init__(
        self,
        store: DeliveryStore,
        sinks: Mapping[str, Sink],
        config: DeliveryConfig,
        clock: Clock,
        rng: random.Random,
        on_attempt: AttemptHook = lambda sink, outcome: None,
    ) -> None:
        self.store = store
        self.sinks = dict(sinks)
        self.config = config
        self.clock = clock
        self.rng = rng
        self.on_attempt = on_attempt
        # Instances sharing the database (``sharing``): checked before each claim and send; a
        # row claimed in another epoch goes back unsent. None: alone, nothing to check.
        self.gate: SendGate | None = None
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[AttemptRecord | None]] = set()
        # Claimed ahead, not started yet: a finishing attempt starts the next one at once, so
        # the slots stay busy while the loop is writing to the database.
        self._queued = ClaimQueue()
        self._routed: frozenset[str] | None = None  # the sinks the last claim was made for
        self._swept_at = 0.0  # monotonic: when rows of other sinks were last looked for
        self._unrouted_left = False  # the last look found a window full of them: more may wait
        self._finished: list[asyncio.Task[AttemptRecord | None]] = []  # ended, not recorded yet
        self._oldest_finished_at = 0.0  # monotonic: when the first of ``_finished`` ended
        self._progress = asyncio.Event()  # an attempt ended
        self._starting = False  # finishing attempts may start queued rows (only inside run)
        # The sink object that accepted each delivery, until recorded: the one to fsync, even
        # when a reload has replaced it under the same name meanwhile.
        self._accepted_by: dict[int, Sink] = {}
        self._last_upkeep = clock.monotonic()
        self.last_tick = clock.monotonic()

    @property
    def in_flight(self) -> int:
        """Attempts under way now."""
        return len(self._in_flight)

    async def wait_in_flight(self) -> None:
        """Until the attempts under way now have ended (not those started meanwhile)."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    def wake(self) -> None:
        """New rows were committed: look for due work now rather than at the next check."""
        self._wake.set()

    # --- one wave at a time: the loop's turns, without its waiting (tests, tools) --------------

    async def run_once(self) -> int:
        """The loop's turns without its waiting: claim what is due now (one turn, as ``run``
        takes it), let every attempt of that claim end, and record them in turns that claim
        nothing more. Returns the attempts made."""
        await self._turn()
        made = 0
        while self._in_flight or self._queued.count or self._queued.held:
            await self.wait_in_flight()
            made += len(self._finished)
            await self._turn(claim=False)  # records them, starts what was queued
        return made

    async def _attempt(self, row: DueDelivery, epoch: int | None) -> AttemptRecord | None:
        """One attempt of ``row``, claimed in ``epoch``; None: not sent, the gate refused."""
        if self.gate is not None and self.gate() != epoch:
            return None
        started, t0 = self.clock.now(), self.clock.monotonic()
        sink = self.sinks.get(row.sink)
        if sink is None:
            outcome = Outcome(False, error_class=UNROUTED)
        else:
            outcome = await self._deliver(sink, row, started)
            if outcome.ok:
                self._accepted_by[row.id] = sink
        attempt = row.attempts + 1
        duration_ms = round((self.clock.monotonic() - t0) * 1000, 1)
        state, next_at = self._next(outcome, row.scheduled_attempts + 1, sink is None)
        return AttemptRecord(
            delivery_id=row.id, attempt=attempt, started_at=started, duration_ms=duration_ms,
            ok=outcome.ok, status=outcome.status, error_class=outcome.error_class,
            excerpt=outcome.excerpt, state=state, next_attempt_at=next_at, sink=row.sink,
            event_id=row.event_id,
        )  # fmt: skip

    async def _deliver(self, sink: Sink, row: DueDelivery, now: datetime) -> Outcome:
        try:
            return await sink.deliver(row.event_id, row.event_type, row.body.encode(), now)
        except Exception as exc:  # loop-level boundary: a sink bug is a failed attempt, not a stall
            log.exception("delivery_attempt_crashed", sink=row.sink, delivery_id=row.id)
            return Outcome(False, error_class=type(exc).__name__)

    def _next(
        self, outcome: Outcome, made: int, unroutable: bool
    ) -> tuple[DeliveryState, float | None]:
        """The row's next state after an attempt; ``made``: attempts since the schedule began."""
        if outcome.ok:
            return DeliveryState.DELIVERED, None
        if unroutable:
            return DeliveryState.FAILED, None
        delay = retry_delay(made, self.config.retry_schedule_s, outcome.retry_after_s, self.rng)
        if delay is None:
            return DeliveryState.FAILED, None
        return DeliveryState.PENDING, self.clock.now().timestamp() + delay

    async def _sync_accepted(self, records: list[AttemptRecord]) -> None:
        """fsync each sink that accepted one of ``records`` (before they are recorded)."""
        accepted = [self._accepted_by.pop(r.delivery_id, None) for r in records]
        for sink in {id(s): s for s in accepted if s is not None}.values():
            await sink.sync()

    def _log(self, record: AttemptRecord) -> None:
        sink = record.sink
        self.on_attempt(sink, record.outcome)
        fields = {
            "sink": sink, "event_id": record.event_id, "delivery_id": record.delivery_id,
            "attempt": record.attempt, "duration_ms": record.duration_ms,
            "outcome": record.outcome,  # the name the metrics count it under too
        }  # fmt: skip
        if record.status is not None:
            fields["status"] = record.status
        if record.error_class is not None:
            fields["error_class"] = record.error_class
        if record.ok:
            log.info("delivery_attempt_finished", **fields)
        elif record.state == DeliveryState.PENDING:
            retry_in = (record.next_attempt_at or 0) - self.clock.now().timestamp()
            log.warning("delivery_attempt_failed", retry_in_s=round(retry_in, 1), **fields)
        else:
            log.error("delivery_failed", excerpt=record.excerpt, **fields)

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        """Deliver until ``stop``; then let attempts in flight finish for ``grace_s``.

        Attempts still running after the grace period, or when this task is cancelled, are cut:
        their rows stay ``delivering`` and go back to ``pending`` at the next start (same ids).
        """
        reset = await self.store.reset_delivering(self.clock.now())
        if reset:
            log.info("deliveries_resumed", count=reset)
        # One waiter on ``stop`` for the whole run, not a new task per turn.
        stopping = asyncio.create_task(stop.wait())
        self._starting = True
        try:
            while not stop.is_set():
                upcoming = await self._turn()
                await self._wait(stopping, upcoming)
                await self._upkeep()
                self.last_tick = self.clock.monotonic()
            await self._drain(grace_s)
        finally:
            self._starting = False
            stopping.cancel()
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(stopping, *self._in_flight, return_exceptions=True)
            self._in_flight.clear()
            self._finished.clear()

    def _start(self, row: DueDelivery) -> None:
        task = asyncio.create_task(self._attempt(row, self._queued.epoch))
        self._in_flight.add(task)
        task.add_done_callback(partial(self._ended, row))

    def _ended(self, row: DueDelivery, task: asyncio.Task[AttemptRecord | None]) -> None:
        """An attempt ended: keep it for the next turn's write, and start a queued row. One the
        gate held back wakes the loop instead, whose turn hands it and the queue back."""
        self._in_flight.discard(task)
        self._queued.ended(row.sink)
        if task.cancelled():
            return
        if task.exception() is None and task.result() is None:
            self._queued.held.append(row.id)
            self._wake.set()
            self._progress.set()
            return
        if not self._finished:
            self._oldest_finished_at = self.clock.monotonic()
        self._finished.append(task)
        self._progress.set()
        # Below the limit only: a reload may have lowered it under the attempts still running.
        if self._starting and self._queued.count and len(self._in_flight) < self.config.concurrency:
            self._start(self._queued.start_next())

    async def _unrouted(self) -> list[AttemptRecord]:
        """The pending rows of sinks no longer configured, as failed attempts to record (claims
        are made per configured sink, so nothing else would ever take them). Looked for when the
        configured sinks change, and again every ``IDLE_RECHECK_S``: rows of a removed sink can
        become pending later (the retry of an attempt under way at the reload, a requeue). A
        claim's window at a time: with more, the next turn comes at once for the rest."""
        if (
            self._routed is not None
            and self._routed == self.sinks.keys()
            and self.clock.monotonic() - self._swept_at < IDLE_RECHECK_S
        ):
            return []
        routed, window = frozenset(self.sinks), CLAIM_AHEAD * self.config.concurrency
        rows = await self.store.unrouted(routed, window)
        self._unrouted_left = len(rows) >= window
        if not self._unrouted_left:
            self._routed, self._swept_at = routed, self.clock.monotonic()
        now = self.clock.now()
        return [_unroutable(row, now) for row in rows]

    async def _turn(self, *, claim: bool = True) -> float | None:
        """Record ended attempts and claim work for the free slots and queue: one transaction.

        Accepted events are made durable in their sinks first (``sync``); with ``claim`` false,
        or while the gate (instances sharing the database) is closed, nothing new is claimed.
        Returns when the earliest pending row falls due (None: no room, or nothing pending).
        """
        done, self._finished = self._finished, []
        self._progress.clear()
        records = [record for task in done if (record := task.result()) is not None]
        epoch = 0 if self.gate is None else self.gate()
        if self._queued.stale(epoch):
            await self._hand_back(epoch)
        if claim:
            records += await self._unrouted()
        await self._sync_accepted(records)
        window = CLAIM_AHEAD * self.config.concurrency
        rooms = self._queued.rooms(self.sinks, window) if claim and epoch is not None else {}
        if claim:
            # Rows committed from here on are seen by this claim or wake us. With no room (every
            # sink's window full, so every slot busy; or no sink at all) the turn after the next
            # ended attempt claims them: a wake left set would only turn the loop in vain.
            self._wake.clear()
        settled = await self.store.settle(records, self.clock.now(), rooms)
        if claim and self._unrouted_left:
            self._wake.set()  # the next turn fails the next window of them
        if self.gate is not None and settled.claimed and self.gate() != epoch:
            self._queued.held += [row.id for row in settled.claimed]  # it moved during the claim
            self._wake.set()
        else:
            self._queued.extend(settled.claimed)
        while self._queued.count and len(self._in_flight) < self.config.concurrency:
            self._start(self._queued.start_next())
        for record in records:
            self._log(record)
        return settled.next_attempt_at

    async def _hand_back(self, epoch: int | None) -> None:
        """Claimed rows not to be sent under ``epoch`` go back to pending (the store changes
        only those still this instance's). A round reopening a closed gate wakes the loop."""
        ids = self._queued.hand_back(epoch)
        if ids:
            await self.store.release(ids, self.clock.now())
            log.warning("deliveries_handed_back", count=len(ids), reason="lease not sure")

    async def _wait(self, stopping: asyncio.Task[object], upcoming: float | None) -> None:
        """Until ended attempts are to be recorded, new rows arrive, the next row falls due, or
        ``stop``. Under load, attempts that end go on collecting for one write (``_can_batch``)."""
        while not self._finished or self._can_batch():
            progress = asyncio.create_task(self._progress.wait())
            waiters: list[asyncio.Task[object]] = [progress]
            if len(self._in_flight) < self.config.concurrency:
                # A free slot: new rows or the next due row can start work at once. With every
                # slot busy, only an ended attempt frees one (its turn claims what came meanwhile).
                delay = until_next_due(upcoming, self.clock.now().timestamp())
                waiters.append(asyncio.create_task(self._wake.wait()))
                waiters.append(asyncio.create_task(self.clock.sleep(delay)))
            elif self._finished:  # collecting: the oldest is written BATCH_WAIT_S after it ended
                left = self._oldest_finished_at + BATCH_WAIT_S - self.clock.monotonic()
                waiters.append(asyncio.create_task(self.clock.sleep(max(0.0, left))))
            try:
                done, _ = await asyncio.wait(
                    {stopping, *waiters}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if done != {progress}:  # stop, new rows, a row due, or the batch's time is up
                return
            self._progress.clear()

    def _can_batch(self) -> bool:
        """Whether the next write can wait for more ended attempts: every slot is busy, enough
        is queued to keep them busy meanwhile, fewer than ``BATCH_SLOTS`` slots' worth have
        ended, and the first of them ended less than ``BATCH_WAIT_S`` ago. Under load this makes
        one commit cover many attempts; when quiet, none waits."""
        batch = BATCH_SLOTS * self.config.concurrency
        return (
            len(self._finished) < batch
            and len(self._in_flight) >= self.config.concurrency
            and self._queued.count >= batch
            and self.clock.monotonic() - self._oldest_finished_at < BATCH_WAIT_S
        )

    async def _drain(self, grace_s: float) -> None:
        """On stop: queued rows go back to pending; attempts under way get ``grace_s``."""
        self._starting = False
        if self._queued.count or self._queued.held:
            await self.store.release(self._queued.take_all(), self.clock.now())
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace_s)
        if self._finished:
            await self._turn(claim=False)

    async def _upkeep(self) -> None:
        if self.clock.monotonic() - self._last_upkeep < UPKEEP_EVERY_S:
            return
        self._last_upkeep = self.clock.monotonic()
        cutoff = self.clock.now() - timedelta(seconds=self.config.retention_s)
        deliveries, events = await self.store.prune(cutoff)
        if deliveries or events:
            log.info("pruned", deliveries=deliveries, events=events)
