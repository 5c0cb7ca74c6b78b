"""Operator commands over the outbox: what ``deliveries list``, ``retry`` and ``replay`` compute.

They may run while the daemon runs (SQLite in WAL mode; the daemon picks requeued rows up within
seconds), and never create a state database. Printing and exit codes belong to the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drgreen_poller.admin import open_reader, require_writable_state
from drgreen_poller.config import Config
from drgreen_poller.config_sinks import SinkConfig
from drgreen_poller.errors import ConfigError
from drgreen_poller.events import iso_ms
from drgreen_poller.store import REQUEUEABLE_STATES, DeliveryRow, DeliveryState, Store


async def list_deliveries(
    config: Config, *, state: str | None, sink: str | None, limit: int, attempts: bool = False
) -> list[DeliveryListing]:
    """The newest ``limit`` matching deliveries, oldest first (as ``events list``), each with
    its attempt log when ``attempts``."""
    if sink is not None:
        _sink(config, sink)
    store = await open_reader(config)
    try:
        rows = await store.deliveries(state=state, sink=sink, limit=limit)
        return [
            DeliveryListing(row, await store.attempts(row.id) if attempts else [])
            for row in reversed(rows)
        ]
    finally:
        await store.close()


@dataclass
class DeliveryListing:
    """One delivery as ``deliveries list`` shows it, and its attempts (when asked for)."""

    row: DeliveryRow
    attempts: list[dict[str, Any]]

    def json(self) -> dict[str, Any]:
        row = self.row
        due = row.state == DeliveryState.PENDING
        return {
            "id": row.id,
            "sink": row.sink,
            "state": row.state,
            "event_id": row.event_id,
            "event_type": row.event_type,
            "attempts": row.attempts,
            "last_outcome": row.last_outcome,
            "next_attempt_at": iso_ms(datetime.fromtimestamp(row.next_attempt_at, UTC))
            if due
            else None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            **({"attempt_log": [_attempt_json(a) for a in self.attempts]} if self.attempts else {}),
        }


def _attempt_json(attempt: dict[str, Any]) -> dict[str, Any]:
    return {k: bool(v) if k == "ok" else v for k, v in attempt.items() if k != "delivery_id"}


# Why a delivery in each state cannot be requeued by ``deliveries retry ID``.
NOT_REQUEUED: dict[str | None, str] = {
    None: "no such delivery",
    DeliveryState.DELIVERED: "already delivered",
    DeliveryState.DELIVERING: "being delivered right now (a daemon stopped mid-attempt puts it "
    "back to pending when it starts again)",
}


@asynccontextmanager
async def _writing(config: Config, store: Store | None) -> AsyncIterator[Store]:
    """``store`` when given (the running daemon's own connection: the operator page), else
    the state opened to write for this one action (the CLI), closed after it."""
    if store is not None:
        yield store
        return
    opened = await Store.open(require_writable_state(config), sinks=())
    try:
        yield opened
    finally:
        await opened.close()


async def retry_deliveries(
    config: Config, ids: Sequence[int], now: datetime, *, store: Store | None = None
) -> dict[int, str | None]:
    """Requeue deliveries ``ids`` (failed or pending: due now, fresh schedule, same event ids),
    through ``store`` when given (see ``_writing``).

    Returns, per id, None when it was requeued, else why not (``NOT_REQUEUED``).
    """
    async with _writing(config, store) as writer:
        found = await writer.requeue(ids, now)
    return {
        i: None if state in REQUEUEABLE_STATES else NOT_REQUEUED[state]
        for i, state in found.items()
    }


async def retry_failed(config: Config, now: datetime, *, store: Store | None = None) -> int:
    """Requeue every failed delivery; returns how many."""
    async with _writing(config, store) as writer:
        return await writer.requeue_failed(now)


async def replay(
    config: Config, sink: str, since: datetime, now: datetime, *, store: Store | None = None
) -> int:
    """New deliveries to ``sink`` of every event it takes since ``since`` (same event ids)."""
    patterns = _sink(config, sink).events
    async with _writing(config, store) as writer:
        return await writer.replay(sink, patterns, since, now)


def _sink(config: Config, name: str) -> SinkConfig:
    for sink in config.sinks:
        if sink.name == name:
            return sink
    known = ", ".join(s.name for s in config.sinks) or "none configured"
    raise ConfigError(f"--sink {name!r}: no such sink ({known})")
