"""The delivery outbox in the database: claiming due rows in order, attempts, operator actions.

Owns the per-sink, per-resource ordering rule (a later event waits while an earlier one is
pending or in flight), the attempt log, requeue, replay and pruning. It decides nothing about
retry timing (``delivery.py`` does) and knows nothing of HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.events import iso_ms
from drgreen_poller.store import postgres_schema as pg
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.delivery_rows import (
    REQUEUEABLE_STATES,
    UNDELIVERED_STATES,
    AttemptRecord,
    DeliveryRow,
    DeliveryState,
    DueDelivery,
    Settled,
    SinkBacklog,
)
from drgreen_poller.store.dialect import Db, Dialect

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


# The delivery loop's statements take a whole batch as one JSON array and return one as text:
# each statement is one step in SQLite's thread, where a statement or a result row per delivery
# would trade the GIL with the event loop once per row. The Python that builds and reads those
# arrays runs in that thread too, beside the transaction, not in the event loop's thread, which
# is what limits delivery (bench/delivery_throughput.py prints each thread's CPU per event).
# json_each and json_group_array: SQLite's JSON1, built in since 3.38 and compiled into the
# sqlite3 of common Python builds before that; MATERIALIZED: SQLite 3.35 (``check_sqlite``).

# The rows of one sink to claim: at most ``limit`` due ones in due order, whose earlier events
# (same sink and resource) are done, and one per event in flight, even after a replay left two
# due: their ids as a JSON array, and how many. One sink at a time (migration 7's index), so a
# sink with many rows due cannot take another sink's share of the claim.
_CHOOSE_SQL = """
    WITH due AS MATERIALIZED (
        SELECT d.id, d.event_id, d.next_attempt_at FROM deliveries AS d
        WHERE d.state = 'pending' AND d.sink = ? AND d.next_attempt_at <= ?
          AND NOT EXISTS (
              SELECT 1 FROM deliveries AS p
              WHERE p.sink = d.sink AND p.resource_key = d.resource_key
                AND p.sequence < d.sequence AND p.state IN ('pending', 'delivering'))
          AND NOT EXISTS (
              SELECT 1 FROM deliveries AS q
              WHERE q.sink = d.sink AND q.event_id = d.event_id AND q.state = 'delivering')
        ORDER BY d.next_attempt_at, d.id
        LIMIT ?)
    SELECT json_group_array(id), count(*) FROM due
    WHERE NOT EXISTS (
        SELECT 1 FROM due AS earlier
        WHERE earlier.event_id = due.event_id
          AND (earlier.next_attempt_at, earlier.id) < (due.next_attempt_at, due.id))
"""
# The claimed rows with their events, as one JSON array (in no particular order).
_CLAIMED_SQL = """
    SELECT json_group_array(json_array(
        d.id, d.event_id, e.type, d.sink, d.attempts, e.body, d.schedule_offset,
        d.next_attempt_at))
    FROM deliveries AS d JOIN events AS e ON e.id = d.event_id
    WHERE d.id IN (SELECT value FROM json_each(?))
"""
# When a sink's next pending row falls due, after ``now``: a row already due that the claim
# left is held back behind its resource's earlier event in flight, whose end wakes the loop.
_NEXT_OF_SINK_SQL = (
    "SELECT MIN(next_attempt_at) FROM deliveries"
    " WHERE state = 'pending' AND sink = ? AND next_attempt_at > ?"
)
# Pending rows of sinks no longer configured (the delivery loop fails them at once). The sinks
# with pending rows are found by skipping through migration 7's index, a seek per sink, so the
# cost follows the sinks, not the rows pending (about 0.04 ms against 90 ms for a scan of 200,000
# pending rows): the loop can look again every few seconds.
_UNROUTED_SQL = """
    WITH RECURSIVE pending(sink) AS (
        SELECT MIN(sink) FROM deliveries WHERE state = 'pending'
        UNION ALL
        SELECT (SELECT MIN(sink) FROM deliveries WHERE state = 'pending' AND sink > pending.sink)
        FROM pending WHERE pending.sink IS NOT NULL)
    SELECT d.id, d.sink, d.event_id, d.attempts FROM pending
    JOIN deliveries AS d ON d.state = 'pending' AND d.sink = pending.sink
    WHERE pending.sink NOT IN (SELECT value FROM json_each(?))
    LIMIT ?
"""
UNROUTED = "sink no longer configured"
_MARK_DELIVERING_SQL = (
    "UPDATE deliveries SET state = 'delivering', updated_at = ?"
    " WHERE id IN (SELECT value FROM json_each(?))"
)
_INSERT_ATTEMPTS_SQL = """
    INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms,
        ok, status, error_class, response_excerpt)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]')
    FROM json_each(?)
"""
_MOVE_ON_SQL = (
    "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at ="
    " COALESCE(?, next_attempt_at), last_outcome = ?, updated_at = ?"
    " WHERE id IN (SELECT value FROM json_each(?))"
)


# PostgreSQL shared by instances: the rows in flight on no live instance.
_RESET_GONE_SQL = """
    UPDATE deliveries SET state = 'pending', claimed_by = NULL, updated_at = ?
    WHERE state = 'delivering' AND (claimed_by IS NULL OR claimed_by NOT IN (
        SELECT id FROM instances WHERE heartbeat_at >= clock_timestamp() - ? * interval '1 second'))
"""

Statements = list[tuple[str, tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class ClaimStatements:
    """The delivery loop's batch statements in one engine's spelling."""

    choose: str
    claimed: str
    mark_delivering: str
    insert_attempts: str
    move_on: str
    unrouted: str
    claims_by: bool = False  # mark_delivering takes the claiming instance (after the stamp)


CLAIMS = {
    "sqlite": ClaimStatements(
        _CHOOSE_SQL, _CLAIMED_SQL, _MARK_DELIVERING_SQL, _INSERT_ATTEMPTS_SQL, _MOVE_ON_SQL,
        _UNROUTED_SQL,
    ),
    "postgresql": ClaimStatements(
        pg.CHOOSE_SQL, pg.CLAIMED_SQL, pg.MARK_DELIVERING_SQL, pg.INSERT_ATTEMPTS_SQL,
        pg.MOVE_ON_SQL, pg.UNROUTED_SQL, claims_by=True,
    ),
}  # fmt: skip


def _claim(
    conn: Db,
    sql: ClaimStatements,
    now_s: float,
    stamp: str,
    rooms: Mapping[str, int],
    claimer: str | None = None,
) -> tuple[list[str], bool]:
    """In the engine's thread, inside a transaction: choose each sink's due rows (up to its
    room), mark them ``delivering`` (by ``claimer``, the instance, where the engine says).

    Returns the claimed rows as JSON texts (``_due_rows`` reads them), and whether some sink got
    fewer than its room (then when the next row falls due is worth knowing).
    """
    found: list[str] = []
    short = False
    for sink, room in rooms.items():
        if room <= 0:
            continue
        ids, count = conn.execute(sql.choose, (sink, now_s, room)).fetchone()
        short = short or count < room
        if count:
            marks = (stamp, claimer, ids) if sql.claims_by else (stamp, ids)
            conn.execute(sql.mark_delivering, marks)
            found.append(conn.execute(sql.claimed, (ids,)).fetchone()[0])
    return found, short


def _due_rows(found: Sequence[str]) -> list[DueDelivery]:
    """The claimed rows of ``_claim``'s JSON texts, in due order."""
    rows = sorted((row for text in found for row in json.loads(text)), key=lambda r: (r[7], r[0]))
    return [DueDelivery(r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6])) for r in rows]


def _record_statements(
    records: Sequence[AttemptRecord], now: datetime, sql: ClaimStatements, claimer: str | None
) -> Statements:
    """The statements that log ``records`` and move their rows on (where the engine's claims
    record their instance, only rows still ``claimer``'s: see ``postgres_schema``)."""
    if not records:
        return []
    attempts = [
        [r.delivery_id, r.attempt, iso_ms(r.started_at), r.duration_ms, int(r.ok),
         r.status, r.error_class, r.excerpt]
        for r in records
    ]  # fmt: skip
    ours: tuple[str | None, ...] = (claimer,) if sql.claims_by else ()
    statements: Statements = [(sql.insert_attempts, (json.dumps(attempts), *ours))]
    # One statement per distinct outcome: a batch of successes is one UPDATE.
    moves: dict[tuple[str, int, float | None, str], list[int]] = {}
    for r in records:
        moves.setdefault((r.state, r.attempt, r.next_attempt_at, _outcome(r)), []).append(
            r.delivery_id
        )
    stamp = iso_ms(now)
    statements.extend(
        (
            sql.move_on,
            (state, attempt, next_at, outcome, stamp, json.dumps(ids))
            + ((attempt, claimer) if sql.claims_by else ()),
        )
        for (state, attempt, next_at, outcome), ids in moves.items()
    )
    return statements


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


def _run(conn: Db, statements: Statements) -> None:
    for sql, params in statements:
        conn.execute(sql, params)


def _next_attempt_at(conn: Db, sinks: Iterable[str], now_s: float) -> float | None:
    """When the earliest pending row of ``sinks`` falls due after ``now_s`` (None: none)."""
    due = [conn.execute(_NEXT_OF_SINK_SQL, (sink, now_s)).fetchone()[0] for sink in sinks]
    known = [float(value) for value in due if value is not None]
    return min(known) if known else None


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
        """Claimed rows never attempted (a stop) go back to ``pending``, due as they were.
        Where instances share the database, only rows still claimed by this one: another may
        have claimed them again while this one was taken for gone."""
        stamp, instance = iso_ms(now), self.instance
        if instance is None:
            await self._write(
                "UPDATE deliveries SET state = 'pending', updated_at = ?"
                " WHERE id = ? AND state = 'delivering'",
                [(stamp, delivery_id) for delivery_id in ids],
            )
            return
        await self._write(
            "UPDATE deliveries SET state = 'pending', updated_at = ?"
            " WHERE id = ? AND state = 'delivering' AND claimed_by = ?",
            [(stamp, delivery_id, instance) for delivery_id in ids],
        )

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
            _run(conn, _record_statements(records, now, sql, self.instance))
            found, short = _claim(conn, sql, now_s, stamp, rooms, self.instance)
            upcoming = (
                _next_attempt_at(conn, [s for s, n in rooms.items() if n > 0], now_s)
                if short
                else None
            )
            return Settled(_due_rows(found), upcoming)

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


def _outcome(record: AttemptRecord) -> str:
    if record.ok:
        return f"{record.status}" if record.status is not None else "ok"
    return f"{record.status}" if record.status is not None else (record.error_class or "error")
