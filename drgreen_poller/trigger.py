"""``drgreen-poller trigger TYPE [--sink NAME]``: a sample event sent the way real ones are.

Owns choosing the sinks (``--sink``, else every sink whose ``events`` filter takes the type),
committing the sample with its outbox rows as a poll commits events (``commit_events``), and
seeing it delivered: by the running daemon's worker when one holds the state's lock (this
command waits for its first attempts), else by this command with the daemon's own
``DeliveryWorker`` and sinks, limited to the sample's rows. Printing belongs to the CLI.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.clock import Clock
from drgreen_poller.config import Config
from drgreen_poller.config_sinks import SinkConfig
from drgreen_poller.contract import known_type
from drgreen_poller.delivery import IDLE_RECHECK_S, DeliveryWorker
from drgreen_poller.errors import ConfigError, StateLocked
from drgreen_poller.events import matches
from drgreen_poller.samples import sample
from drgreen_poller.sinks import build_sinks
from drgreen_poller.store import (
    AttemptRecord,
    DeliveryRow,
    DeliveryState,
    Settled,
    SinkRoute,
    Store,
)
from drgreen_poller.store.locking import state_lock

# How often the outbox is looked at while the running daemon delivers the sample.
WATCH_EVERY_S = 0.2
# Beyond the daemon's idle recheck and one attempt's timeout, how long to wait for its attempt.
WATCH_SLACK_S = 5.0
# The sample's rows are among the newest of their sink: this many are looked through.
NEWEST_ROWS = 200
DEFAULT_COUNTRY = "GBR"


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What became of the sample at one sink."""

    sink: str
    state: str  # a DeliveryState, or "queued" when no attempt was made yet
    outcome: str | None  # the last attempt's HTTP status or error class
    excerpt: str | None  # the first bytes of the last answer


@dataclass(frozen=True, slots=True)
class TriggerReport:
    """The sample sent, who delivered it (``daemon`` or ``trigger``), and each sink's result."""

    event: dict[str, Any]
    delivered_by: str
    results: list[SinkResult]

    @property
    def ok(self) -> bool:
        return all(r.state in (DeliveryState.DELIVERED, "queued") for r in self.results)


def chosen_sinks(config: Config, event_type: str, name: str | None) -> list[SinkConfig]:
    """``--sink NAME`` when it takes ``event_type``, else every sink that does.

    Raises:
        ConfigError: an unknown type or sink, a sink whose filter leaves the type out, or no
            sink that takes it.
    """
    known_type(event_type)
    if name is None:
        taking = [s for s in config.sinks if matches(event_type, s.events)]
        if not taking:
            filters = "; ".join(f"{s.name}: {', '.join(s.events)}" for s in config.sinks)
            raise ConfigError(f"no sink takes {event_type} ({filters or 'no sinks configured'})")
        return taking
    for sink in config.sinks:
        if sink.name == name:
            if not matches(event_type, sink.events):
                raise ConfigError(
                    f"--sink {name}: its events filter ({', '.join(sink.events)}) does not "
                    f"take {event_type}"
                )
            return [sink]
    known = ", ".join(s.name for s in config.sinks) or "none configured"
    raise ConfigError(f"--sink {name!r}: no such sink ({known})")


def daemon_running(config: Config) -> bool:
    """Whether a daemon holds the state's lock (taken and let go at once when none does)."""
    try:
        with state_lock(config.state):
            return False
    except StateLocked:
        return True


async def trigger(
    config: Config, event_type: str, sink_name: str | None, clock: Clock
) -> TriggerReport:
    """Commit a sample of ``event_type`` for the chosen sinks and see it delivered.

    Raises:
        ConfigError: see ``chosen_sinks``.
        StoreError: the state database cannot be opened or written.
    """
    sinks = chosen_sinks(config, event_type, sink_name)
    holder = config.holders[0]
    country = holder.strain_countries[0] if holder.strain_countries else DEFAULT_COUNTRY
    observation = sample(event_type, holder=holder.name, country=country, now=clock.now())
    running = daemon_running(config)
    routes = [SinkRoute(s.name, s.events) for s in sinks]
    store = await Store.open(config.state, sinks=routes, clock=clock)
    try:
        committed = await store.commit_events(holder.name, [observation], now=clock.now())
        [event] = committed.events
        if running:
            rows = await _watch(store, event["id"], sinks, clock, _patience_s(config))
        else:
            rows = await _deliver(store, config, event["id"], sinks, clock)
        results = [await _result(store, row) for row in rows]
    finally:
        await store.close()
    return TriggerReport(event, "daemon" if running else "trigger", results)


def _patience_s(config: Config) -> float:
    return IDLE_RECHECK_S + config.delivery.timeout_s + WATCH_SLACK_S


async def _rows(store: Store, event_id: str, sinks: Sequence[SinkConfig]) -> list[DeliveryRow]:
    """The sample's delivery rows, one per sink, in the sinks' order."""
    found = []
    for sink in sinks:
        rows = await store.deliveries(sink=sink.name, limit=NEWEST_ROWS)
        found += [row for row in rows if row.event_id == event_id]
    return found


async def _watch(
    store: Store, event_id: str, sinks: Sequence[SinkConfig], clock: Clock, patience_s: float
) -> list[DeliveryRow]:
    """The rows once the daemon has attempted each (or ``patience_s`` has passed)."""
    deadline = clock.monotonic() + patience_s
    rows = await _rows(store, event_id, sinks)
    while any(_unattempted(r) for r in rows) and clock.monotonic() < deadline:
        await clock.sleep(WATCH_EVERY_S)
        rows = await _rows(store, event_id, sinks)
    return rows


def _unattempted(row: DeliveryRow) -> bool:
    return row.attempts == 0 or row.state == DeliveryState.DELIVERING


async def _deliver(
    store: Store, config: Config, event_id: str, sinks: Sequence[SinkConfig], clock: Clock
) -> list[DeliveryRow]:
    """One attempt per row, made by a ``DeliveryWorker`` that claims only the sample's rows."""
    built = build_sinks(tuple(sinks), config.delivery)
    ids = {row.id for row in await _rows(store, event_id, sinks)}
    worker = DeliveryWorker(_Only(store, ids), built, config.delivery, clock, random.Random())
    try:
        await worker.run_once()
    finally:
        for sink in built.values():
            await sink.close()
    return await _rows(store, event_id, sinks)


async def _result(store: Store, row: DeliveryRow) -> SinkResult:
    if row.attempts == 0:
        return SinkResult(row.sink, "queued", None, None)
    last = (await store.attempts(row.id))[-1]
    return SinkResult(row.sink, row.state, row.last_outcome, last["response_excerpt"])


class _Only:
    """The store as a ``DeliveryStore`` that hands out only rows ``ids``: any other row a claim
    took goes straight back to pending, due as it was, and no other sink's rows are failed as
    unrouted (the daemon's backlog stays its own)."""

    def __init__(self, store: Store, ids: set[int]) -> None:
        self.store = store
        self.ids = ids

    async def reset_delivering(self, now: datetime) -> int:
        return 0  # not this command's business: the daemon does it when it starts

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled:
        settled = await self.store.settle(records, now, rooms)
        others = [row.id for row in settled.claimed if row.id not in self.ids]
        if others:
            await self.store.release(others, now)
        mine = [row for row in settled.claimed if row.id in self.ids]
        return Settled(mine, settled.next_attempt_at)

    async def unrouted(self, sinks: Collection[str], limit: int) -> list[tuple[int, str, str, int]]:
        return []  # this worker knows only the chosen sinks: the others' rows are not orphans

    async def release(self, ids: Sequence[int], now: datetime) -> None:
        await self.store.release(ids, now)

    async def prune(self, before: datetime) -> tuple[int, int]:
        return 0, 0  # pruning is the daemon's upkeep
