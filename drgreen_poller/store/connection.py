"""The state database's connection: opening (0600, WAL), migrations, locking, transactions.

Owns the schema (numbered migrations keyed on ``PRAGMA user_version``), the exclusive
``StateLock`` that keeps a second daemon off a database, and the transaction helpers the other
store modules build on. It holds no knowledge of polling or delivery.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import pwd
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import StateLocked, StoreError
from drgreen_poller.store.lineage import LINEAGE_MIGRATION, FileIdentity, Lineage, open_lineage

BUSY_TIMEOUT_MS = 5000

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: the polling state and the outbox
    """
    CREATE TABLE holders (
        name TEXT PRIMARY KEY,
        added_at TEXT NOT NULL,
        unauthorized_since TEXT
    );
    CREATE TABLE tier_runs (
        holder TEXT NOT NULL,
        tier TEXT NOT NULL,
        seeded_at TEXT,
        last_attempt_at TEXT,
        last_success_at TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_due_at REAL,
        PRIMARY KEY (holder, tier)
    );
    CREATE TABLE entities (
        holder TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        country TEXT,
        tier TEXT,
        snapshot TEXT NOT NULL,
        object TEXT,
        sequence INTEGER NOT NULL DEFAULT 0,
        created_at TEXT,
        first_seen_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (holder, key)
    ) WITHOUT ROWID;
    CREATE INDEX entities_by_tier ON entities (holder, tier) WHERE tier IS NOT NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        holder TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        observed_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (observed_at);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL REFERENCES events (id),
        sink TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
        resource_key TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_outcome TEXT
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_by_resource ON deliveries (sink, resource_key, sequence);
    """,
    # 2: the delivery attempt log
    """
    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        ok INTEGER NOT NULL,
        status INTEGER,
        error_class TEXT,
        response_excerpt TEXT,
        PRIMARY KEY (delivery_id, attempt)
    );
    CREATE INDEX deliveries_by_event ON deliveries (event_id);
    CREATE INDEX deliveries_by_state_time ON deliveries (state, updated_at);
    """,
    # 3: a requeued delivery restarts its retry schedule but keeps numbering its attempts
    """
    ALTER TABLE deliveries ADD COLUMN schedule_offset INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: where the state came from, and the floor under every new sequence (lineage.py)
    LINEAGE_MIGRATION,
    # 5: long tier runs in progress, for `status` (progress.py)
    """
    CREATE TABLE sweep_progress (
        holder TEXT NOT NULL,
        tier TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        pages INTEGER NOT NULL,
        records INTEGER NOT NULL,
        expected_records INTEGER,
        PRIMARY KEY (holder, tier)
    );
    """,
    # 6: the backlog every scrape reads (outbox.py _UNDELIVERED_SQL repeats this WHERE word for
    # word, as SQLite needs to use a partial index). Rows in flight (`delivering`, at most the
    # claimed ones) are left out so that a delivery's life costs two index writes, not four.
    """
    CREATE INDEX deliveries_owed ON deliveries (state, sink, created_at)
        WHERE state IN ('pending', 'failed');
    """,
)


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """A sink's name and the event patterns it takes (for writing outbox rows)."""

    name: str
    patterns: tuple[str, ...]


# The files SQLite and our locks keep beside the database, as suffixes of its name.
STATE_FILE_SUFFIXES = ("", "-wal", "-shm", ".lock", ".setup")


def _user() -> str:
    """This process's user, as the operator knows it (``nobody``), else its uid."""
    uid = os.geteuid()
    return {entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}.get(uid, f"uid {uid}")


def _open_writable(path: Path, flags: int = 0) -> int:
    """``os.open`` for reading and writing; a refusal becomes a one-line ``StoreError``."""
    try:
        return os.open(path, os.O_RDWR | flags, 0o600)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def _unwritable(path: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    return StoreError(f"daemon.state_path: {path} cannot be written: {reason} (as user {_user()})")


def check_writable(state_path: Path) -> None:
    """Check, changing nothing, that this process can create and write the state's files.

    The directory (or its nearest existing ancestor, when it is still to be created) gets a
    probe file created and removed at once; the database, its ``-wal``/``-shm`` journal and the
    lock files, where they exist, are opened for writing.

    Raises:
        StoreError: one line naming the first path that cannot be written and why.
    """
    directory = state_path.parent
    while not directory.exists():
        directory = directory.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".drgreen-poller-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _unwritable(directory, exc) from None
    for suffix in STATE_FILE_SUFFIXES:
        path = state_path.with_name(state_path.name + suffix)
        if path.exists():
            os.close(_open_writable(path))


def check_single_name(state_path: Path) -> None:
    """Refuse a database file with several names (hard links).

    SQLite keeps the journal beside the name it was opened by, so two names of one file get
    two journals, and the lock file beside each name would let two daemons in: corruption.
    A symbolic link is fine (both the lock and SQLite follow it).
    """
    try:
        links = state_path.stat().st_nlink
    except OSError:
        return  # not there yet (or unreadable: opening it says why)
    if links > 1:
        raise StoreError(
            f"the state database {state_path} has {links} names (hard links); SQLite would"
            " keep a separate journal per name and corrupt it: use one path (a symlink is fine)"
        )


class StateLock:
    """An exclusive lock on ``<state>.lock`` held for the daemon's lifetime (kernel-released).

    The lock file sits beside the database's real path (symbolic links followed), so every
    path that reaches the database takes the same lock.
    """

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        real = state_path.resolve()
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``StateLocked`` (another daemon holds it) or ``StoreError``."""
        check_writable(self.state_path)
        check_single_name(self.state_path)
        fd = _open_writable(self.path, os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"another drgreen-poller is already running on {self.state_path}"
                " (one daemon per database; stop it first)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _exclusive(lock_path: Path) -> int:
    """Block until an exclusive lock on ``lock_path`` is ours; returns the descriptor to close."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


# The delivery loop's claim needs MATERIALIZED (SQLite 3.35) and JSON1 (built in since 3.38,
# compiled into common Python builds before that): an older library fails at the first claim.
MIN_SQLITE = (3, 35, 0)


def check_sqlite(version: tuple[int, int, int], has_json: bool) -> None:
    """Refuse, in one line, an SQLite library the store's statements cannot run on.

    Raises:
        StoreError: older than ``MIN_SQLITE``, or without the JSON functions.
    """
    needed = ".".join(map(str, MIN_SQLITE))
    found = ".".join(map(str, version))
    if version < MIN_SQLITE:
        raise StoreError(
            f"this Python's SQLite library is {found}; drgreen-poller needs {needed} or newer "
            "(use a Python built against a newer SQLite, e.g. Debian 12's or Ubuntu 24.04's)"
        )
    if not has_json:
        raise StoreError(
            f"this Python's SQLite library ({found}) was built without the JSON functions, "
            "which drgreen-poller needs"
        )


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


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would honour the umask)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


class Connection:
    """Async access to the state database. Use ``await Store.open(path)``; ``close()`` last.

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
        sinks: Sequence[SinkRoute] = (),
        clock: Clock | None = None,
        writer: bool = True,
    ) -> Self:
        """Open (creating 0600 if needed) and migrate the database at ``path``.

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
            _create_private(path)
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
            setup_lock = await asyncio.to_thread(_exclusive, path.with_name(path.name + ".setup"))
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
