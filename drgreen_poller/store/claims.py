"""The delivery loop's batch statements in each engine's spelling, and the Python around them.

Owns how one turn of the delivery loop claims (a sink at a time, up to each sink's room, keeping
the per-sink, per-resource order rule), records ended attempts, finds when the next row falls
due and finds the rows of sinks no longer configured: the SQL, and the functions that run it in
the engine's own thread inside the turn's one transaction (``Outbox.settle``). It opens no
transaction and decides nothing about retries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from drgreen_poller.events import iso_ms
from drgreen_poller.store import postgres_schema as pg
from drgreen_poller.store.delivery_rows import AttemptRecord, DueDelivery
from drgreen_poller.store.dialect import Db

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


Statements = list[tuple[str, tuple[Any, ...]]]
# What neither engine keeps in a text (see ``_valid``).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ClaimStatements:
    """The delivery loop's batch statements in one engine's spelling.

    ``choose`` takes a sink, now and a limit; where ``mark_delivering`` and ``claimed`` are None
    it also marks the rows it chose (after the limit: the stamp and the claiming instance) and
    returns them as ``claimed`` would (one statement: PostgreSQL's), else it returns their ids.
    """

    choose: str
    claimed: str | None
    mark_delivering: str | None
    insert_attempts: str
    move_on: str
    unrouted: str
    claims_by: bool = False  # attempts are recorded only on rows still the claiming instance's


CLAIMS = {
    "sqlite": ClaimStatements(
        _CHOOSE_SQL, _CLAIMED_SQL, _MARK_DELIVERING_SQL, _INSERT_ATTEMPTS_SQL, _MOVE_ON_SQL,
        _UNROUTED_SQL,
    ),
    "postgresql": ClaimStatements(
        pg.CLAIM_SQL, None, None, pg.INSERT_ATTEMPTS_SQL, pg.MOVE_ON_SQL, pg.UNROUTED_SQL,
        claims_by=True,
    ),
}  # fmt: skip


def claim(
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
        rows, count = _claim_sink(conn, sql, (sink, now_s, room), stamp, claimer)
        short = short or count < room
        if count:
            found.append(rows)
    return found, short


def _claim_sink(
    conn: Db, sql: ClaimStatements, due: tuple[str, float, int], stamp: str, claimer: str | None
) -> tuple[str, int]:
    """One sink's claim: its rows as one JSON text (when any), and how many."""
    if sql.mark_delivering is None or sql.claimed is None:  # one statement does it all
        rows, count = conn.execute(sql.choose, (*due, stamp, claimer)).fetchone()
        return rows, int(count)
    ids, count = conn.execute(sql.choose, due).fetchone()
    if not count:
        return "[]", 0
    conn.execute(sql.mark_delivering, (stamp, ids))
    return conn.execute(sql.claimed, (ids,)).fetchone()[0], int(count)


def due_rows(found: Sequence[str]) -> list[DueDelivery]:
    """The claimed rows of ``_claim``'s JSON texts, in due order."""
    rows = sorted((row for text in found for row in orjson.loads(text)), key=lambda r: (r[7], r[0]))
    return [DueDelivery(r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6])) for r in rows]


def record_statements(
    records: Sequence[AttemptRecord], now: datetime, sql: ClaimStatements, claimer: str | None
) -> Statements:
    """The statements that log ``records`` and move their rows on (where the engine's claims
    record their instance, only rows still ``claimer``'s: see ``postgres_schema``)."""
    if not records:
        return []
    attempts = [
        [r.delivery_id, r.attempt, iso_ms(r.started_at), r.duration_ms, int(r.ok),
         r.status, _valid_or_none(r.error_class), _valid_or_none(r.excerpt)]
        for r in records
    ]  # fmt: skip
    ours: tuple[str | None, ...] = (claimer,) if sql.claims_by else ()
    statements: Statements = [(sql.insert_attempts, (_json_text(attempts), *ours))]
    # One statement per distinct outcome: a batch of successes is one UPDATE.
    moves: dict[tuple[str, int, float | None, str], list[int]] = {}
    for r in records:
        moves.setdefault((r.state, r.attempt, r.next_attempt_at, _valid(outcome_of(r))), []).append(
            r.delivery_id
        )
    stamp = iso_ms(now)
    statements.extend(
        (
            sql.move_on,
            (state, attempt, next_at, outcome, stamp, _json_text(ids))
            + ((attempt, claimer) if sql.claims_by else ()),
        )
        for (state, attempt, next_at, outcome), ids in moves.items()
    )
    return statements


def _json_text(batch: list[Any]) -> str:
    """A batch parameter's JSON text: orjson, several times faster than the stdlib, and it runs
    holding the GIL the event loop waits for."""
    return orjson.dumps(batch).decode()


def _valid(text: str) -> str:
    """``text`` as both engines store it whole: each NUL (a receiver's binary answer, a
    program's stderr) and each lone surrogate (an undecodable byte of an OS message or path, as
    Python keeps it) becomes U+FFFD. PostgreSQL refuses either, failing the turn's write, and
    SQLite's JSON cuts a text at a NUL."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def _valid_or_none(text: str | None) -> str | None:
    return None if text is None else _valid(text)


def run_statements(conn: Db, statements: Statements) -> None:
    for sql, params in statements:
        conn.execute(sql, params)


def next_attempt_at(conn: Db, sinks: Iterable[str], now_s: float) -> float | None:
    """When the earliest pending row of ``sinks`` falls due after ``now_s`` (None: none)."""
    due = [conn.execute(_NEXT_OF_SINK_SQL, (sink, now_s)).fetchone()[0] for sink in sinks]
    known = [float(value) for value in due if value is not None]
    return min(known) if known else None


def outcome_of(record: AttemptRecord) -> str:
    if record.ok:
        return f"{record.status}" if record.status is not None else "ok"
    return f"{record.status}" if record.status is not None else (record.error_class or "error")
