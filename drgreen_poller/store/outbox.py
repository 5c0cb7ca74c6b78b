"""The delivery outbox in the database: the delivery loop's turn, operator actions, upkeep.

Owns writing new outbox rows, the delivery loop's one transaction per turn (``settle``, over the
statements of ``claims``, where the per-sink, per-resource ordering rule is), returning rows in
flight to pending (a start, a stop, a gone instance), the backlog counts, requeue, replay and
pruning. It decides nothing about retry timing (``delivery.py`` does) and knows nothing of HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from drgreen_poller.events import iso_ms
from drgreen_poller.store.claims import (
    CLAIMS,
    claim,
    due_rows,
    next_attempt_at,
    record_statements,
    run_statements,
)
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.delivery_rows import (
    REQUEUEABLE_STATES,
    UNDELIVERED_STATES,
    AttemptRecord,
    DeliveryRow,
    DeliveryState,
    Settled,
    SinkBacklog,
)
from drgreen_poller.store.dialect import Db, Dialect
from drgreen_poller.store.postgres_schema import IDS_SQL

# Pending and failed rows are counted in migration 6's index alone (``deliveries_owed``, whose
# WHERE the first part repeats word for word, as SQLite needs to use a partial index); rows in
# flight, at most the claimed ones, are found by ``deliveries_by_state_time``. The cost follows
# the rows not delivered, never the delivered ones kept, and grouping in the index's order needs
# no sort.
_UNDELIVERED_SQL = """
    SELECT state, sink, COUNT(*), MIN(created_at) FROM deliveries
    WHERE state IN ('pending', 'failed') GROUP BY state, sink
    UNION ALL
    SELECT state, sink, COUNT(*), MIN(created_at) FROM deliveries
    WHERE state = 'delivering' GROUP BY state, sink
"""
# The same, after every row per sink (NULL state), counted in the smallest index that starts
# with the sink: one statement, so one snapshot, and the delivered rows are the difference.
_BACKLOG_SQL = f"""
    SELECT NULL, sink, COUNT(*), NULL FROM deliveries GROUP BY sink
    UNION ALL {_UNDELIVERED_SQL}"""  # noqa: S608 - constant text, no value in it
# A new pending delivery of (event_id, sink, resource_key, sequence) due ``now``: the only way
# rows enter the outbox (a poll's commit, a replay).
_INSERT_DELIVERY_SQL = (
    "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence, next_attempt_at,"
    " created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)"
)


# PostgreSQL shared by instances: the rows in flight on no live instance.
_RESET_GONE_SQL = """
    UPDATE deliveries SET state = 'pending', claimed_by = NULL, updated_at = ?
    WHERE state = 'delivering' AND (claimed_by IS NULL OR claimed_by NOT IN (
        SELECT id FROM instances WHERE heartbeat_at >= clock_timestamp() - ? * interval '1 second'))
"""

# PostgreSQL shared by instances: claimed rows handed back unsent (a stop, a gate that closed),
# in one statement, only those still claimed by this instance.
_RELEASE_MINE_SQL = f"""
    UPDATE deliveries SET state = 'pending', updated_at = ?
    WHERE id IN ({IDS_SQL}) AND state = 'delivering' AND claimed_by = ?
"""  # noqa: S608 - constant text


def insert_deliveries(conn: Db, rows: Sequence[tuple[str, str, str, int]], now: datetime) -> None:
    """In the engine's thread, inside a transaction: pending deliveries, each ``(event_id,
    sink, resource_key, sequence)``, due ``now``."""
    stamp = iso_ms(now)
    conn.executemany(_INSERT_DELIVERY_SQL, [(*row, now.timestamp(), stamp, stamp) for row in rows])


def glob_clause(column: str, patterns: Sequence[str], dialect: Dialect) -> tuple[str, list[str]]:
    """SQL selecting the rows whose ``column`` matches one of ``patterns`` (the sinks' event
    globs: ``*``, ``?`` and ``[...]``, no negation, which SQLite's GLOB reads the same way and
    PostgreSQL's ``~`` as the regular expression ``Dialect.glob_pattern`` makes of each)."""
    if not patterns:
        return "1 = 0", []
    match = f"{column} {dialect.glob_operator} ?"
    return "(" + " OR ".join(match for _ in patterns) + ")", [
        dialect.glob_pattern(p) for p in patterns
    ]


class Outbox(Connection):
    """The outbox side of the state database: claims, attempts, operator actions, pruning."""

    async def reset_delivering(self, now: datetime) -> int:
        """Rows a crash left ``delivering`` go back to ``pending`` (start-up only). Where
        instances share the database, only the rows of instances gone (no heartbeat within
        ``instance_ttl_s``) and those claimed by no instance: the others' are in flight."""
        ttl_s = self.instance_ttl_s

        def work(conn: Db) -> int:
            if ttl_s is not None:
                return conn.execute(_RESET_GONE_SQL, (iso_ms(now), ttl_s)).rowcount
            return conn.execute(
                "UPDATE deliveries SET state = 'pending', updated_at = ?"
                " WHERE state = 'delivering'",
                (iso_ms(now),),
            ).rowcount

        return await self._atomically(work)

    async def release(self, ids: Sequence[int], now: datetime) -> None:
        """Claimed rows never attempted (a stop; a gate that closed while instances share the
        database) go back to ``pending``, due as they were. Where instances share the
        database, in one statement and only rows still claimed by this one: another may have
        claimed them again while this one was taken for gone."""
        stamp, instance = iso_ms(now), self.instance
        if instance is None:
            await self._write(
                "UPDATE deliveries SET state = 'pending', updated_at = ?"
                " WHERE id = ? AND state = 'delivering'",
                [(stamp, delivery_id) for delivery_id in ids],
            )
            return
        await self._write(_RELEASE_MINE_SQL, [(stamp, json.dumps(list(ids)), instance)])

    async def undelivered(self) -> dict[str, SinkBacklog]:
        """Per sink with any: rows pending, delivering and failed, and the oldest owed one."""
        counts: dict[str, dict[str, int]] = {}
        owed_since: dict[str, list[str]] = {}
        for state, sink, count, oldest in await self._rows(_UNDELIVERED_SQL):
            counts.setdefault(sink, dict.fromkeys(UNDELIVERED_STATES, 0))[state] = int(count)
            if state != DeliveryState.FAILED:  # dead until requeued: not owed
                owed_since.setdefault(sink, []).append(oldest)
        return {
            sink: SinkBacklog(counts[sink], min(owed_since[sink]) if sink in owed_since else None)
            for sink in sorted(counts)
        }

    async def backlog(self) -> dict[str, dict[str, int]]:
        """Delivery rows per sink and state (``status``)."""
        every: dict[str, int] = {}
        owed: dict[str, dict[str, int]] = {}
        for state, sink, count, _oldest in await self._rows(_BACKLOG_SQL):
            if state is None:
                every[sink] = int(count)
            else:
                owed.setdefault(sink, {})[state] = int(count)
        backlog: dict[str, dict[str, int]] = {}
        for sink, total in every.items():
            states = {**owed.get(sink, {}), "delivered": total - sum(owed.get(sink, {}).values())}
            backlog[sink] = {state: n for state, n in sorted(states.items()) if n}
        return backlog

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled:
        """Record finished attempts, then claim up to ``rooms[sink]`` due rows of each sink: one
        transaction.

        The delivery loop's whole write per turn (one commit, one trip to SQLite's thread). A
        claimed row's earlier events (same sink and resource) are all done: a later event waits
        while an earlier one is pending or in flight, so each sink receives a resource's events
        in sequence order, and other resources are not held up. Each sink is claimed for up to
        its own room, so one with many rows due (a receiver that hangs) takes no other's. The
        claim sees the attempts just recorded, so a resource's next event can follow at once.
        """
        now_s, stamp = now.timestamp(), iso_ms(now)
        sql = CLAIMS[self.dialect.name]

        def work(conn: Db) -> Settled:
            run_statements(conn, record_statements(records, now, sql, self.instance))
            found, short = claim(conn, sql, now_s, stamp, rooms, self.instance)
            upcoming = (
                next_attempt_at(conn, [s for s, n in rooms.items() if n > 0], now_s)
                if short
                else None
            )
            return Settled(due_rows(found), upcoming)

        return await self._atomically(work)

    async def unrouted(self, sinks: Collection[str], limit: int) -> list[tuple[int, str, str, int]]:
        """Up to ``limit`` pending rows of sinks not among ``sinks`` (removed from the
        configuration), which no claim takes: ``(id, sink, event_id, attempts)`` each."""
        unrouted = CLAIMS[self.dialect.name].unrouted
        rows = await self._fetch(unrouted, (json.dumps(sorted(sinks)), limit))
        return [(int(r["id"]), r["sink"], r["event_id"], int(r["attempts"])) for r in rows]

    async def deliveries(
        self, *, state: str | None = None, sink: str | None = None, limit: int = 100
    ) -> list[DeliveryRow]:
        """Deliveries, newest first, optionally of one state and/or sink."""
        where: list[str] = []
        params: list[Any] = []
        if state:
            where, params = [*where, "d.state = ?"], [*params, state]
        if sink:
            where, params = [*where, "d.sink = ?"], [*params, sink]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(
            "SELECT d.id, d.event_id, e.type, d.sink, d.state, d.attempts, d.next_attempt_at,"  # noqa: S608 - the clause holds only placeholders
            " d.created_at, d.updated_at, d.last_outcome FROM deliveries AS d"
            f" JOIN events AS e ON e.id = d.event_id {clause} ORDER BY d.id DESC LIMIT ?",
            [*params, limit],
        )
        return [DeliveryRow(*row) for row in rows]

    async def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY attempt", [delivery_id]
        )
        return [dict(row) for row in rows]

    async def requeue_failed(self, now: datetime) -> int:
        """Every failed delivery becomes pending with a fresh schedule; returns how many."""

        def work(conn: Db) -> int:
            return conn.execute(
                "UPDATE deliveries SET state = 'pending', schedule_offset = attempts,"
                " next_attempt_at = ?, updated_at = ? WHERE state = 'failed'",
                (now.timestamp(), iso_ms(now)),
            ).rowcount

        return await self._atomically(work)

    async def requeue(self, ids: Sequence[int], now: datetime) -> dict[int, str | None]:
        """Deliveries ``ids`` that are failed or pending become due now with a fresh schedule.

        Returns the state each id was in (None: no such delivery); only the ``failed`` and
        ``pending`` ones were requeued.
        """
        stamp = iso_ms(now)

        def work(conn: Db) -> dict[int, str | None]:
            found: dict[int, str | None] = {}
            for delivery_id in ids:
                row = conn.execute(
                    "SELECT state FROM deliveries WHERE id = ?", (delivery_id,)
                ).fetchone()
                found[delivery_id] = None if row is None else str(row[0])
                if found[delivery_id] in REQUEUEABLE_STATES:
                    conn.execute(
                        "UPDATE deliveries SET state = 'pending', schedule_offset = attempts,"
                        " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                        (now.timestamp(), stamp, delivery_id),
                    )
            return found

        return await self._atomically(work)

    async def replay(
        self, sink: str, patterns: Sequence[str], since: datetime, now: datetime
    ) -> int:
        """New pending deliveries to ``sink`` of every matching event since ``since`` (same ids)."""
        where, params = glob_clause("type", patterns, self.dialect)
        rows = await self._rows(
            "SELECT id, holder, resource_key, sequence FROM events"  # noqa: S608 - placeholders only
            f" WHERE observed_at >= ? AND {where} ORDER BY seq",
            [iso_ms(since), *params],
        )
        chosen = [
            (r["id"], sink, f"{r['holder']}/{r['resource_key']}", r["sequence"]) for r in rows
        ]
        notify = self.dialect.notify_deliveries

        def work(conn: Db) -> None:
            insert_deliveries(conn, chosen, now)
            if chosen and notify is not None:
                conn.execute(notify)  # a running daemon's delivery worker wakes at once

        await self._atomically(work)
        return len(chosen)

    async def prune(self, before: datetime) -> tuple[int, int]:
        """Delete delivered rows and events older than ``before``; (deliveries, events) removed.

        An event is kept while any of its deliveries is still pending, in flight or failed.
        """
        cutoff = iso_ms(before)

        def work(conn: Db) -> tuple[int, int]:
            gone = conn.execute(
                "DELETE FROM deliveries WHERE state = 'delivered' AND updated_at < ?", (cutoff,)
            ).rowcount
            events = conn.execute(
                "DELETE FROM events WHERE observed_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                (cutoff,),
            ).rowcount
            return gone, events

        return await self._atomically(work)
