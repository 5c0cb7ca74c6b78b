"""The operator page's reads of the state database: events by type and resource, one event, the
deliveries of an event, attempt logs, and the rows behind its two charts.

Owns only SELECTs, in plain SQL (no SQLite-only functions beyond the event globs the event log
already uses), over an open store's connection; it writes nothing. What the page computes from
the rows (hourly buckets, percentiles) is the page's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.events import iso_ms
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.delivery_rows import DeliveryRow
from drgreen_poller.store.outbox import glob_clause

# The newest delivered rows the latency chart reads, at most: enough for a day of a busy store,
# bounded so a page view never reads the whole delivery log.
LATENCY_ROWS_MAX = 20_000


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as the page lists it: its place in the log and its envelope."""

    seq: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeliveredRow:
    """A delivered row: when it was written to the outbox, and when its successful attempt
    started and how long it took."""

    created_at: str
    started_at: str
    duration_ms: float


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class OperatorViews:
    """Read queries over ``store``'s connection (the daemon's own: no second connection)."""

    def __init__(self, store: Connection) -> None:
        self._store = store

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # The store package's own read helper: these queries are the store's, kept in this module.
        return await self._store._rows(sql, params)

    async def events(
        self,
        *,
        patterns: Sequence[str] = ("*",),
        resource: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[LoggedEvent]:
        """The newest ``limit`` events matching ``patterns`` (type globs), about ``resource`` (an
        id, or a whole key such as ``strain:GBR:ID``) and older than ``before_seq``; newest
        first."""
        where, params = glob_clause("type", patterns, self._store.dialect)
        clauses, values = [where], list[Any](params)
        if resource:
            clauses.append("(resource_key = ? OR resource_key LIKE ? ESCAPE '\\')")
            values += [resource, "%:" + _like_escaped(resource)]
        if before_seq is not None:
            clauses.append("seq < ?")
            values.append(before_seq)
        rows = await self._select(
            f"SELECT seq, body FROM events WHERE {' AND '.join(clauses)}"  # noqa: S608 - placeholders only
            " ORDER BY seq DESC LIMIT ?",
            [*values, limit],
        )
        return [LoggedEvent(int(row[0]), json.loads(row[1])) for row in rows]

    async def event(self, event_id: str) -> dict[str, Any] | None:
        """One event's envelope (None: no such event, or pruned)."""
        rows = await self._select("SELECT body FROM events WHERE id = ?", [event_id])
        return json.loads(rows[0][0]) if rows else None

    async def event_deliveries(self, event_id: str) -> list[DeliveryRow]:
        """Every delivery of one event (a replay adds more), oldest first."""
        rows = await self._select(
            "SELECT d.id, d.event_id, e.type, d.sink, d.state, d.attempts, d.next_attempt_at,"
            " d.created_at, d.updated_at, d.last_outcome FROM deliveries AS d"
            " JOIN events AS e ON e.id = d.event_id WHERE d.event_id = ? ORDER BY d.id",
            [event_id],
        )
        return [DeliveryRow(*row) for row in rows]

    async def attempts_of(self, delivery_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """The attempt log of each of ``delivery_ids``, in attempt order (one query)."""
        if not delivery_ids:
            return {}
        marks = ", ".join("?" for _ in delivery_ids)
        rows = await self._select(
            "SELECT delivery_id, attempt, started_at, duration_ms, ok, status, error_class,"  # noqa: S608 - placeholders only
            f" response_excerpt FROM attempts WHERE delivery_id IN ({marks})"
            " ORDER BY delivery_id, attempt",
            list(delivery_ids),
        )
        found: dict[int, list[dict[str, Any]]] = {i: [] for i in delivery_ids}
        for row in rows:
            found[int(row[0])].append(dict(row))
        return found

    async def events_per_hour(self, since: datetime) -> dict[str, int]:
        """Events observed at or after ``since``, counted per UTC hour (``2026-11-23T10``)."""
        rows = await self._select(
            "SELECT substr(observed_at, 1, 13), COUNT(*) FROM events WHERE observed_at >= ?"
            " GROUP BY substr(observed_at, 1, 13)",
            [iso_ms(since)],
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def delivered_since(self, since: datetime) -> list[DeliveredRow]:
        """Deliveries delivered at or after ``since`` (the newest ``LATENCY_ROWS_MAX``), with
        their successful attempt, for the latency chart."""
        rows = await self._select(
            "SELECT d.created_at, a.started_at, a.duration_ms FROM deliveries AS d"
            " JOIN attempts AS a ON a.delivery_id = d.id AND a.attempt = d.attempts"
            " WHERE d.state = 'delivered' AND d.updated_at >= ? AND a.ok = 1"
            " ORDER BY d.updated_at DESC LIMIT ?",
            [iso_ms(since), LATENCY_ROWS_MAX],
        )
        return [DeliveredRow(str(r[0]), str(r[1]), float(r[2])) for r in rows]
