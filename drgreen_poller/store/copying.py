"""Copying a SQLite state into a PostgreSQL database row for row, every id kept (``migrate-state``).

Owns the bulk copy: one read transaction on the SQLite file that holds its writers off (``BEGIN
IMMEDIATE``), one transaction on PostgreSQL (its migrations, the emptiness check, a ``COPY`` per
table, the identity sequences moved past the copied ids, the copied tables' statistics gathered
with ``ANALYZE``): all or nothing. It must not decide what to poll or deliver, and writes no
SQLite; ``migrate_state`` owns the locks and messages.

Every table of the SQLite schema is copied (``TABLES``), each row as it is, with two
exceptions: a delivery ``delivering`` (in flight when the daemon stopped) arrives ``pending``,
updated at the copy's time, as the daemon's own start makes it (same id, attempts and due
time); and ``lineage`` keeps the higher sequence floor when the target already had a lineage
row (a database opened without a state). What one engine has and the other has not is decided
in ``NOT_COPIED`` (tables) and ``PG_ONLY_COLUMNS``: SQLite's AUTOINCREMENT counters become
PostgreSQL's identity sequences; PostgreSQL's schema version, its instances and leases (several
daemons sharing the database) and a delivery's claiming instance start as a new database has
them, as no daemon runs on a copy yet and no row arrives in flight.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from drgreen_poller.errors import StoreError
from drgreen_poller.store.postgres import PgConnection, connect, error_line, migrate
from drgreen_poller.store.sqlite import BUSY_TIMEOUT_MS

if TYPE_CHECKING:
    from drgreen_poller.config import StoreConfig

# Every table of the SQLite schema, in an order that satisfies the foreign keys, with its
# columns (both schemas have these; tests/test_migrate_state.py checks it).
TABLES: dict[str, tuple[str, ...]] = {
    "holders": ("name", "added_at", "unauthorized_since"),
    "tier_runs": (
        "holder", "tier", "seeded_at", "last_attempt_at", "last_success_at",
        "consecutive_failures", "last_error", "next_due_at",
    ),
    "entities": (
        "holder", "key", "kind", "id", "country", "tier", "snapshot", "object", "sequence",
        "created_at", "first_seen_at", "updated_at",
    ),
    "events": (
        "seq", "id", "type", "holder", "resource_key", "sequence", "observed_at", "body",
    ),
    "deliveries": (
        "id", "event_id", "sink", "state", "resource_key", "sequence", "attempts",
        "next_attempt_at", "created_at", "updated_at", "last_outcome", "schedule_offset",
    ),
    "attempts": (
        "delivery_id", "attempt", "started_at", "duration_ms", "ok", "status", "error_class",
        "response_excerpt",
    ),
    "sweep_progress": (
        "holder", "tier", "started_at", "updated_at", "pages", "records", "expected_records",
    ),
    "lineage": (
        "one", "lineage", "began_at", "sequence_floor", "generation", "backup_taken_at",
        "rebased_at", "rebase_reason",
    ),
}  # fmt: skip

# Tables one engine has and the other has not, and why nothing is copied into or from them.
NOT_COPIED: dict[str, str] = {
    "sqlite_sequence": "SQLite's AUTOINCREMENT counters: they set PostgreSQL's identity "
    "sequences instead (``IDENTITIES``), so no id SQLite handed out, even of a pruned row, is "
    "handed out again",
    "schema_version": "PostgreSQL's own schema version (SQLite's is PRAGMA user_version): "
    "written by its migrations, which run in the copy's transaction",
    "instances": "PostgreSQL's registry of running daemons: none runs on the copy yet; each "
    "registers as it starts",
    "leases": "which running daemon polls each holder: taken by the daemons as they start",
}

# Columns only PostgreSQL's schema has, left to their defaults by the copy, and why.
PG_ONLY_COLUMNS: dict[tuple[str, str], str] = {
    ("deliveries", "claimed_by"): "the instance that claimed a row in flight: no row arrives "
    "in flight (``delivering`` is copied as ``pending``), so none is claimed",
}

# PostgreSQL's identity columns and the SQLite AUTOINCREMENT counter behind each.
IDENTITIES = {"events": "seq", "deliveries": "id"}

# The tables whose rows make a database "a state": a target with any is refused.
STATE_TABLES = ("holders", "entities", "events", "deliveries", "tier_runs")
BATCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What was copied: rows per table (``TABLES``' order), rows ``delivering`` made
    ``pending``, and the next id each identity sequence hands out."""

    rows: dict[str, int] = field(default_factory=dict)
    requeued_in_flight: int = 0
    next_ids: dict[str, int] = field(default_factory=dict)


def copy_state(source: Path, target: StoreConfig, now_text: str) -> CopyReport:
    """Copy the SQLite state at ``source`` (migrated to the current schema) into ``target``.

    Blocking: run it in a thread. ``now_text``: the time a row in flight is requeued at.

    Raises:
        StoreError: the target cannot be reached, already holds a state, or the copy failed
            on either side (then nothing was written to it), in one line.
    """
    with contextlib.closing(_open_reading(source)) as lite, connect(target) as pg:
        try:
            return _copy_in_one_transaction(lite, pg, target.shown, now_text)
        except psycopg.Error as exc:
            raise StoreError(
                f"copying into {target.shown} failed, nothing was written: {error_line(exc)}"
            ) from None
        except sqlite3.Error as exc:  # a damaged file: rolled back on PostgreSQL's side
            raise StoreError(
                f"reading the state database {source} failed, nothing was written to"
                f" {target.shown}: {exc}"
            ) from None


def _open_reading(source: Path) -> sqlite3.Connection:
    """The SQLite file opened for the copy, inside ``BEGIN IMMEDIATE``: no writer (a CLI
    command) commits meanwhile, so the copy is the state as it stands; closing ends it."""
    conn = sqlite3.connect(source, isolation_level=None)  # the file exists: opened before
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read the state database {source}: {exc}") from None
    return conn


def _copy_in_one_transaction(
    lite: sqlite3.Connection, pg: PgConnection, shown: str, now_text: str
) -> CopyReport:
    check_tables(lite)
    with pg.transaction():
        migrate(pg, shown, writer=True)  # a savepoint of this transaction, under its lock
        _refuse_a_state(pg, shown)
        floor = pg.execute("SELECT MAX(sequence_floor) FROM lineage").fetchone()
        pg.execute("DELETE FROM lineage")  # a row left by an open that wrote no state
        rows = {table: _copy_table(lite, pg, table, now_text) for table in TABLES}
        if floor is not None and floor[0] is not None:
            pg.execute(
                "UPDATE lineage SET sequence_floor = GREATEST(sequence_floor, %s)", (floor[0],)
            )
        next_ids = {table: _advance_identity(lite, pg, table) for table in IDENTITIES}
        # The planner's statistics of the copied rows, committed with them: without, the
        # daemon's first statements would be planned for empty tables until autovacuum came.
        pg.execute(f"ANALYZE {', '.join(TABLES)}")
    requeued = lite.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'delivering'")
    return CopyReport(rows, int(requeued.fetchone()[0]), next_ids)


def check_tables(lite: sqlite3.Connection) -> None:
    """Refuse a source whose tables are not exactly ``TABLES`` (with ``NOT_COPIED``'s).

    Raises:
        StoreError: a table or column this copy does not know (it would be left behind).
    """
    found = {
        row[0]
        for row in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if row[0] not in NOT_COPIED and not row[0].startswith("sqlite_stat")
    }
    unknown = sorted(found - set(TABLES)) + [
        f"{table}.{column}"
        for table in sorted(found & set(TABLES))
        for column in _sqlite_columns(lite, table)
        if column not in TABLES[table]
    ]
    if unknown:
        raise StoreError(
            f"the state has what migrate-state cannot copy ({', '.join(unknown)}): is this"
            " drgreen-poller older than the one that wrote the state?"
        )


def _sqlite_columns(lite: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in lite.execute(f"PRAGMA table_info({table})")]


def _refuse_a_state(pg: PgConnection, shown: str) -> None:
    counts = {
        table: int(row[0])
        for table in STATE_TABLES
        if (row := pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()) is not None  # noqa: S608 - a constant table name
    }
    held = {table: n for table, n in counts.items() if n}
    if held:
        shown_counts = ", ".join(f"{n} {table}" for table, n in held.items())
        raise StoreError(
            f"{shown} already holds a drgreen-poller state ({shown_counts}); migrate-state"
            " copies only into an empty database: to start over, drop and create the database"
            " (dropdb/createdb, or DROP SCHEMA public CASCADE; CREATE SCHEMA public)"
        )


# How a column is read where it is not copied as it is: a delivery in flight when the daemon
# stopped arrives pending, updated at the copy's time (the one parameter), as its next start does.
_READ_AS = {
    ("deliveries", "state"): "CASE state WHEN 'delivering' THEN 'pending' ELSE state END",
    ("deliveries", "updated_at"): "CASE state WHEN 'delivering' THEN ? ELSE updated_at END",
}


def _source_rows(lite: sqlite3.Connection, table: str, now_text: str) -> Iterator[Any]:
    """The rows of ``table`` in ``TABLES``' column order and key order, a batch at a time."""
    columns = ", ".join(_READ_AS.get((table, column), column) for column in TABLES[table])
    params = (now_text,) if table == "deliveries" else ()
    sql = f"SELECT {columns} FROM {table} ORDER BY {TABLES[table][0]}"  # noqa: S608 - constant names
    cursor = lite.execute(sql, params)
    while batch := cursor.fetchmany(BATCH_ROWS):
        yield from batch


def _copy_table(lite: sqlite3.Connection, pg: PgConnection, table: str, now_text: str) -> int:
    copied = 0
    with (
        pg.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(TABLES[table])}) FROM STDIN") as copy,
    ):
        for row in _source_rows(lite, table, now_text):
            copy.write_row(row)
            copied += 1
    return copied


def _advance_identity(lite: sqlite3.Connection, pg: PgConnection, table: str) -> int:
    """Move ``table``'s identity past every id SQLite handed out; returns the next one."""
    column = IDENTITIES[table]
    counter = lite.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    highest = lite.execute(f"SELECT MAX({column}) FROM {table}").fetchone()  # noqa: S608 - constant names
    last = max(int(counter[0]) if counter else 0, int(highest[0] or 0))
    pg.execute(
        "SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)",
        (table, column, max(last, 1), last > 0),
    )
    return last + 1
