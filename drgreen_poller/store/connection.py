"""The state database's connection: opening (WAL, ``busy_timeout``), migrating, transactions.

Owns opening the database (after ``files`` has checked and created what is on disk), applying
``migrations`` in order, and the transaction helpers the other store modules build on. It holds
no knowledge of polling or delivery, and no schema.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import StoreError
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


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """A sink's name and the event patterns it takes (for writing outbox rows)."""

    name: str
    patterns: tuple[str, ...]


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


class Connection:
    """Async access to the state database. Use ``await Store.open(path, sinks=...)`` (or
    ``Store.open_reader(path)``); ``close()`` last.

    Args:
        db: an open aiosqlite connection (migrated).
        sinks: the configured sinks, to write one outbox row per matching sink.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        sinks: Sequence[SinkRoute],
        lineage: Lineage,
        identity: FileIdentity,
    ) -> None:
        self._db = db
        self.sinks = tuple(sinks)
        self.lineage = lineage
        self._identity = identity
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        sinks: Sequence[SinkRoute],
        clock: Clock | None = None,
        writer: bool = True,
    ) -> Self:
        """Open (creating 0600 if needed) and migrate the database at ``path``.

        ``sinks``: where the events this connection commits are delivered, one pending row per
        matching sink; always given, so that no caller writes events without their deliveries
        by leaving it out (``()`` says, on purpose, that nothing is routed).

        A ``writer`` (the daemon, poll-once, the repairing commands) counts as a start of the
        state: it raises the sequence floor and records the open (``lineage``). A reader (a
        listing, a dry run) only reads it.

        Raises:
            StoreError: the file cannot be opened, or its schema is newer than this program.
        """
        now = (clock or SystemClock()).now()
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
        try:
            db.row_factory = aiosqlite.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Switching to WAL and migrating do not wait on SQLite's busy handler, so two
            # processes opening a new file at once take turns on a lock file instead.
            setup_lock = await asyncio.to_thread(
                exclusive_lock, path.with_name(path.name + ".setup")
            )
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                await _migrate(db, path)
                lineage = await open_lineage(db, path, now, record=writer)
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
        return cls(db, sinks, lineage, identity)

    @classmethod
    async def open_reader(cls, path: Path, *, clock: Clock | None = None) -> Self:
        """Open to read (a listing, ``status``, a backup's source): no start of the state is
        recorded and nothing is routed."""
        return await cls.open(path, sinks=(), clock=clock, writer=False)

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, ``ROLLBACK`` on any error, SQLite errors translated.

        The poller and the delivery worker share this connection: the lock keeps one task's
        transaction (and reads) from interleaving with another's.
        """
        async with self._lock, self._transaction_unlocked() as db:
            yield db

    @asynccontextmanager
    async def _transaction_unlocked(self) -> AsyncIterator[aiosqlite.Connection]:
        try:
            self._identity.check()  # a stat: the file deleted or replaced stops every write
            await self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            await self._db.execute("COMMIT")
        except BaseException as exc:
            # Also on cancellation (a stop while a statement waits): aiosqlite still runs what
            # was queued, so the rollback must not be skipped or the connection stays inside
            # a transaction and every later write fails.
            await asyncio.shield(self._abandon())
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"writing the state database failed: {exc}") from exc
            raise

    async def _atomically(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` as ONE call into SQLite's thread.

        ``_transaction`` hands every statement to aiosqlite's thread and back (a queue put, a
        thread switch and a loop wake-up each); on the delivery path those round trips cost more
        than SQLite itself. ``work`` gets the plain ``sqlite3`` connection and runs in that
        thread, so it must be short, synchronous SQL only. A cancelled caller does not cut it:
        it commits or rolls back whole before the next queued statement runs.

        Raises:
            StoreError: SQLite failed (the transaction was rolled back).
        """
        async with self._lock:
            self._identity.check()  # a stat: the file deleted or replaced stops every write
            try:
                # aiosqlite's private ``_execute(fn, *args)`` queues ``fn`` on the connection's
                # own thread (the public API offers only one statement per hand-off); this is
                # the one place that relies on it (tests/test_store.py TestAtomically).
                result: T = await self._db._execute(_run_atomically, self._db._conn, work)  # type: ignore[no-untyped-call]  # aiosqlite leaves _execute unannotated
            except sqlite3.Error as exc:
                raise StoreError(f"writing the state database failed: {exc}") from exc
            return result

    async def _abandon(self) -> None:
        """Roll back whatever transaction is open, once every queued statement has run."""
        try:
            await self._db.execute("SELECT 1")  # runs after anything still queued
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection itself is gone; the next use reports it

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """The rows of one query in ONE hand-off to SQLite's thread (aiosqlite's
        ``execute_fetchall``; ``_rows`` takes four: cursor, execute, fetch, close), for the reads
        every tier run makes."""
        try:
            async with self._lock:
                return list(await self._db.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as exc:
            raise StoreError(f"reading the state database failed: {exc}") from exc

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        try:
            async with self._lock, self._db.execute(sql, tuple(params)) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"reading the state database failed: {exc}") from exc

    async def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run ``sql`` for each row, all in one transaction."""
        async with self._transaction() as db:
            await db.executemany(sql, rows)


def _run_atomically(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
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
