"""The SQLite backend: the state file opened through aiosqlite, migrated, one transaction per call.

Owns opening the file (after ``files`` has checked and created what is on disk: WAL,
``busy_timeout``, ``synchronous = FULL``, foreign keys), applying ``migrations`` keyed on
``PRAGMA user_version``, and running a transaction's work in SQLite's own thread. It checks
before every write that the file is still the one opened (``FileIdentity``). It holds no
knowledge of polling or delivery.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from drgreen_poller.errors import StoreError
from drgreen_poller.store.dialect import SQLITE, Db
from drgreen_poller.store.files import (
    check_single_name,
    check_sqlite,
    check_writable,
    create_private,
    exclusive_lock,
)
from drgreen_poller.store.lineage import FileIdentity, Lineage, open_lineage
from drgreen_poller.store.migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 5000

T = TypeVar("T")


def _probe(path: Path) -> None:
    """Open and close ``path`` with plain sqlite3 (raises what opening it would raise), and
    check the SQLite library (``check_sqlite``)."""
    probe = sqlite3.connect(path)
    try:
        try:
            probe.execute("SELECT json_array()")
            has_json = True
        except sqlite3.OperationalError:  # no such function: json_array
            has_json = False
    finally:
        probe.close()
    check_sqlite(sqlite3.sqlite_version_info, has_json)


class SqliteBackend:
    """An open state file: one aiosqlite connection (its thread runs every statement)."""

    dialect = SQLITE
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, db: aiosqlite.Connection, identity: FileIdentity) -> None:
        self._db = db
        self._identity = identity

    async def atomically(self, work: Callable[[Db], T]) -> T:
        """``work`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` as ONE call into SQLite's thread.

        Handing every statement to aiosqlite's thread and back costs a queue put, a thread
        switch and a loop wake-up each; on the delivery path those round trips cost more than
        SQLite itself. ``work`` gets the plain ``sqlite3`` connection and runs in that thread, so
        it must be short, synchronous SQL only. A cancelled caller does not cut it: it commits
        or rolls back whole before the next queued statement runs.
        """
        self._identity.check()  # a stat: the file deleted or replaced stops every write
        # aiosqlite's private ``_execute(fn, *args)`` queues ``fn`` on the connection's own
        # thread (the public API offers only one statement per hand-off); this is the one place
        # that relies on it (tests/test_store.py TestAtomically).
        result: T = await self._db._execute(_run_atomically, self._db._conn, work)  # type: ignore[no-untyped-call]  # aiosqlite leaves _execute unannotated
        return result

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query in ONE hand-off to SQLite's thread (``execute_fetchall``)."""
        return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def close(self) -> None:
        await self._db.close()

    def problem(self, exc: Exception) -> str:
        return str(exc)


def _run_atomically(conn: sqlite3.Connection, work: Callable[[Db], T]) -> T:
    """In SQLite's thread: ``work(conn)`` in one transaction, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


async def open_sqlite(path: Path, now: datetime, *, writer: bool) -> tuple[SqliteBackend, Lineage]:
    """Open (creating 0600 if needed) and migrate the state file at ``path``; read or record
    its lineage (a ``writer`` records the open, ``lineage.open_lineage``).

    Raises:
        StoreError: the file cannot be opened, or its schema is newer than this program.
    """
    check_writable(path)
    check_single_name(path)
    try:
        create_private(path)
        identity = FileIdentity.of(path)
        # A file SQLite cannot open is reported from a plain probe: a failing
        # aiosqlite.connect leaves its worker thread answering a loop that may be gone.
        await asyncio.to_thread(_probe, path)
        db = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the state database {path}: {exc}") from exc
    backend = SqliteBackend(db, identity)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Switching to WAL and migrating do not wait on SQLite's busy handler, so two
        # processes opening a new file at once take turns on a lock file instead.
        setup_lock = await asyncio.to_thread(exclusive_lock, path.with_name(path.name + ".setup"))
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await _migrate(db, path)
            lineage = await open_lineage(backend, now, record=writer, path=path)
        finally:
            os.close(setup_lock)
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
    except (OSError, sqlite3.Error) as exc:
        await db.close()
        raise StoreError(f"cannot use the state database {path}: {exc}") from exc
    except BaseException:
        await db.close()
        raise
    return backend, lineage


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Apply pending migrations, one transaction each.

    The version is read inside the write lock, so two processes opening a new file at once
    (the daemon and a CLI command) never apply the same migration twice.
    """
    while True:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{path} has schema version {version}, newer than this drgreen-poller "
                    f"knows ({len(MIGRATIONS)}); upgrade drgreen-poller or use another state_path"
                )
            if version == len(MIGRATIONS):
                await db.execute("COMMIT")
                return
            for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
