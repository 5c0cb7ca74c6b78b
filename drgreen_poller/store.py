"""The SQLite state: the only module with SQL. One aiosqlite connection, WAL, numbered migrations.

Owns holders, entity snapshots (never medical data), active-set membership and tier, per holder ×
tier run state, the event log and the delivery outbox. ``commit_poll`` writes a tier run's
snapshots, events and delivery rows in **one transaction** (the transactional outbox). A
``StateLock`` keeps a second daemon off the same file. It decides nothing about polling.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from drgreen_poller.changes import Change, Snapshot
from drgreen_poller.errors import StoreError
from drgreen_poller.events import Resource, encode, envelope, iso_ms, matches

BUSY_TIMEOUT_MS = 5000

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
)


@dataclass(frozen=True, slots=True)
class Entity:
    """A stored resource: its snapshot, the tier polling it (None: left the active set)."""

    holder: str
    resource: Resource
    tier: str | None
    snapshot: Snapshot
    sequence: int
    created_at: str | None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll learnt about one resource: its new snapshot and the events it implies."""

    resource: Resource
    snapshot: Snapshot
    tier: str | None
    obj: Mapping[str, Any] | None = None
    created_at: str | None = None
    changes: Sequence[Change] = ()


@dataclass(frozen=True, slots=True)
class TierRun:
    """Run state of one holder × tier."""

    holder: str
    tier: str
    seeded_at: str | None
    last_attempt_at: str | None
    last_success_at: str | None
    consecutive_failures: int
    last_error: str | None
    next_due_at: float | None


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """A sink's name and the event patterns it takes (for writing outbox rows)."""

    name: str
    patterns: tuple[str, ...]


@dataclass(slots=True)
class CommitResult:
    """The events a commit wrote, as delivered JSON objects, and the outbox rows created."""

    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: int = 0


class StateLock:
    """An exclusive lock on ``<state>.lock`` held for the daemon's lifetime (kernel-released)."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreError`` naming the file."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another drgreen-poller is already running on {self.path.with_suffix('')}"
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


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _exclusive(lock_path: Path) -> int:
    """Block until an exclusive lock on ``lock_path`` is ours; returns the descriptor to close."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would honour the umask)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


class Store:
    """Async access to the state database. Use ``await Store.open(path)``; ``close()`` last.

    Args:
        db: an open aiosqlite connection (migrated).
        sinks: the configured sinks, to write one outbox row per matching sink.
    """

    def __init__(self, db: aiosqlite.Connection, sinks: Sequence[SinkRoute] = ()) -> None:
        self._db = db
        self.sinks = tuple(sinks)

    @classmethod
    async def open(cls, path: Path, *, sinks: Sequence[SinkRoute] = ()) -> Store:
        """Open (creating 0600 if needed) and migrate the database at ``path``.

        Raises:
            StoreError: the file cannot be opened, or its schema is newer than this program.
        """
        try:
            _create_private(path)
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
        return cls(db, sinks)

    async def close(self) -> None:
        await self._db.close()

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        try:
            async with self._db.execute(sql, tuple(params)) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"reading the state database failed: {exc}") from exc

    # --- holders and run state -----------------------------------------------------------

    async def ensure_holders(self, names: Iterable[str], now: datetime) -> None:
        """Record the configured holders (rows stay when a holder leaves the config)."""
        await self._write(
            "INSERT OR IGNORE INTO holders (name, added_at) VALUES (?, ?)",
            [(name, iso_ms(now)) for name in names],
        )

    async def set_unauthorized(self, holder: str, since: datetime | None) -> None:
        """Mark a holder's key as failing (``since``) or working again (``None``)."""
        if since is None:
            await self._write(
                "UPDATE holders SET unauthorized_since = NULL WHERE name = ?", [(holder,)]
            )
            return
        await self._write(
            "INSERT INTO holders (name, added_at, unauthorized_since) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET unauthorized_since = excluded.unauthorized_since",
            [(holder, iso_ms(since), iso_ms(since))],
        )

    async def unauthorized_holders(self) -> dict[str, str]:
        rows = await self._rows(
            "SELECT name, unauthorized_since FROM holders WHERE unauthorized_since IS NOT NULL"
        )
        return {row["name"]: row["unauthorized_since"] for row in rows}

    async def tier_runs(self, holder: str | None = None) -> list[TierRun]:
        where = " WHERE holder = ?" if holder else ""
        rows = await self._rows(
            f"SELECT * FROM tier_runs{where} ORDER BY holder, tier",  # noqa: S608 - a fixed clause
            [holder] if holder else [],
        )
        return [
            TierRun(
                holder=r["holder"],
                tier=r["tier"],
                seeded_at=r["seeded_at"],
                last_attempt_at=r["last_attempt_at"],
                last_success_at=r["last_success_at"],
                consecutive_failures=r["consecutive_failures"],
                last_error=r["last_error"],
                next_due_at=r["next_due_at"],
            )
            for r in rows
        ]

    async def record_failure(
        self, holder: str, tier: str, *, now: datetime, error: str, next_due_at: float
    ) -> int:
        """Count a failed tier run; returns the number of consecutive failures."""
        await self._write(
            """
            INSERT INTO tier_runs (holder, tier, last_attempt_at, consecutive_failures,
                                   last_error, next_due_at)
            VALUES (?, ?, ?, 1, ?, ?)
            ON CONFLICT (holder, tier) DO UPDATE SET
                last_attempt_at = excluded.last_attempt_at,
                consecutive_failures = tier_runs.consecutive_failures + 1,
                last_error = excluded.last_error,
                next_due_at = excluded.next_due_at
            """,
            [(holder, tier, iso_ms(now), error, next_due_at)],
        )
        runs = await self._rows(
            "SELECT consecutive_failures FROM tier_runs WHERE holder = ? AND tier = ?",
            [holder, tier],
        )
        return int(runs[0]["consecutive_failures"])

    async def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(sql, rows)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"writing the state database failed: {exc}") from exc

    # --- entities --------------------------------------------------------------------------

    async def entities(
        self, holder: str, *, kind: str | None = None, tier: str | None = None
    ) -> list[Entity]:
        """Stored entities of a holder, optionally of one kind and/or one tier."""
        sql, params = "SELECT * FROM entities WHERE holder = ?", [holder]
        if kind is not None:
            sql, params = sql + " AND kind = ?", [*params, kind]
        if tier is not None:
            sql, params = sql + " AND tier = ?", [*params, tier]
        return [_entity(row) for row in await self._rows(sql, params)]

    async def entities_by_key(self, holder: str, keys: Iterable[str]) -> dict[str, Entity]:
        """The stored entities among ``keys`` (absent keys are simply missing)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Entity] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._rows(
                f"SELECT * FROM entities WHERE holder = ? AND key IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                [holder, *chunk],
            )
            found.update({row["key"]: _entity(row) for row in rows})
        return found

    async def tier_sizes(self) -> dict[tuple[str, str], int]:
        rows = await self._rows(
            "SELECT holder, tier, COUNT(*) AS n FROM entities WHERE tier IS NOT NULL"
            " GROUP BY holder, tier"
        )
        return {(row["holder"], row["tier"]): int(row["n"]) for row in rows}

    async def set_tier(
        self, holder: str, resource: Resource, tier: str | None, now: datetime
    ) -> bool:
        """Put a stored entity into ``tier`` (``None``: out of the active set); False if unknown."""
        rows = await self._rows(
            "SELECT 1 FROM entities WHERE holder = ? AND key = ?", [holder, resource.key]
        )
        if rows:
            await self._write(
                "UPDATE entities SET tier = ?, updated_at = ? WHERE holder = ? AND key = ?",
                [(tier, iso_ms(now), holder, resource.key)],
            )
        return bool(rows)

    # --- the transactional outbox -----------------------------------------------------------

    async def commit_poll(
        self,
        holder: str,
        tier: str,
        observations: Sequence[Observation],
        *,
        now: datetime,
        next_due_at: float,
    ) -> CommitResult:
        """Write a successful tier run in one transaction: snapshots, events, outbox rows, state.

        Each observation's changes get the entity's next sequence numbers; event ids derive from
        them, so a run repeated after a crash (which rolled this transaction back) yields the
        same ids.
        """
        return await self._commit(holder, observations, now, run=(tier, next_due_at))

    async def commit_events(
        self, holder: str, observations: Sequence[Observation], *, now: datetime
    ) -> CommitResult:
        """Write observations (e.g. operational events) without touching any tier's run state."""
        return await self._commit(holder, observations, now, run=None)

    async def preview(
        self, holder: str, observations: Sequence[Observation], *, now: datetime
    ) -> list[dict[str, Any]]:
        """The events a commit would write, with their real ids and sequences; writes nothing."""
        keys = [o.resource.key for o in observations]
        stored = await self.entities_by_key(holder, keys)
        events = []
        for observation in observations:
            entity = stored.get(observation.resource.key)
            sequence = entity.sequence if entity else 0
            for change in observation.changes:
                sequence += 1
                events.append(
                    envelope(
                        holder=holder,
                        resource=observation.resource,
                        sequence=sequence,
                        change=change,
                        observed_at=now,
                        obj=observation.obj,
                    )
                )
        return events

    async def _commit(
        self,
        holder: str,
        observations: Sequence[Observation],
        now: datetime,
        *,
        run: tuple[str, float] | None,
    ) -> CommitResult:
        result = CommitResult()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for observation in observations:
                    await self._commit_observation(holder, observation, now, result)
                if run is not None:
                    await self._record_success(holder, run[0], now, run[1])
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"committing a poll of {holder} failed: {exc}") from exc
        return result

    async def _record_success(
        self, holder: str, tier: str, now: datetime, next_due_at: float
    ) -> None:
        stamp = iso_ms(now)
        await self._db.execute(
            """
            INSERT INTO tier_runs (holder, tier, seeded_at, last_attempt_at,
                last_success_at, consecutive_failures, last_error, next_due_at)
            VALUES (?, ?, ?, ?, ?, 0, NULL, ?)
            ON CONFLICT (holder, tier) DO UPDATE SET
                seeded_at = COALESCE(tier_runs.seeded_at, excluded.seeded_at),
                last_attempt_at = excluded.last_attempt_at,
                last_success_at = excluded.last_success_at,
                consecutive_failures = 0, last_error = NULL,
                next_due_at = excluded.next_due_at
            """,
            (holder, tier, stamp, stamp, stamp, next_due_at),
        )

    async def _commit_observation(
        self, holder: str, observation: Observation, now: datetime, result: CommitResult
    ) -> None:
        resource = observation.resource
        async with self._db.execute(
            "SELECT sequence FROM entities WHERE holder = ? AND key = ?", (holder, resource.key)
        ) as cursor:
            row = await cursor.fetchone()
        sequence = int(row[0]) if row else 0
        stamp = iso_ms(now)
        for change in observation.changes:
            sequence += 1
            event = envelope(
                holder=holder,
                resource=resource,
                sequence=sequence,
                change=change,
                observed_at=now,
                obj=observation.obj,
            )
            await self._insert_event(holder, resource, sequence, event, now)
            result.events.append(event)
            result.deliveries += await self._insert_deliveries(event, resource, sequence, now)
        await self._db.execute(
            """
            INSERT INTO entities (holder, key, kind, id, country, tier, snapshot, object,
                                  sequence, created_at, first_seen_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (holder, key) DO UPDATE SET
                tier = excluded.tier,
                snapshot = excluded.snapshot,
                object = COALESCE(excluded.object, entities.object),
                sequence = excluded.sequence,
                created_at = COALESCE(excluded.created_at, entities.created_at),
                updated_at = excluded.updated_at
            """,
            (
                holder,
                resource.key,
                resource.type,
                resource.id,
                resource.country,
                observation.tier,
                _json(observation.snapshot),
                None if observation.obj is None else encode(observation.obj),
                sequence,
                observation.created_at,
                stamp,
                stamp,
            ),
        )

    async def _insert_event(
        self, holder: str, resource: Resource, sequence: int, event: dict[str, Any], now: datetime
    ) -> None:
        await self._db.execute(
            "INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event["id"],
                event["type"],
                holder,
                resource.key,
                sequence,
                iso_ms(now),
                encode(event),
            ),
        )

    async def _insert_deliveries(
        self, event: dict[str, Any], resource: Resource, sequence: int, now: datetime
    ) -> int:
        routes = [sink.name for sink in self.sinks if matches(event["type"], sink.patterns)]
        stamp = iso_ms(now)
        await self._db.executemany(
            "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
            [
                (
                    event["id"],
                    sink,
                    f"{event['holder']}/{resource.key}",
                    sequence,
                    now.timestamp(),
                    stamp,
                    stamp,
                )
                for sink in routes
            ],
        )
        return len(routes)

    # --- the event log ---------------------------------------------------------------------

    async def events(
        self,
        *,
        patterns: Sequence[str] = ("*",),
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Logged events, oldest first, matching ``patterns``, observed at or after ``since``."""
        sql, params = "SELECT type, body FROM events", []
        if since is not None:
            sql, params = sql + " WHERE observed_at >= ?", [iso_ms(since)]
        rows = await self._rows(sql + " ORDER BY seq", params)
        chosen = [json.loads(r["body"]) for r in rows if matches(r["type"], patterns)]
        return chosen[-limit:] if limit else chosen

    async def backlog(self) -> dict[str, dict[str, int]]:
        """Delivery rows per sink and state."""
        rows = await self._rows(
            "SELECT sink, state, COUNT(*) AS n FROM deliveries GROUP BY sink, state"
        )
        backlog: dict[str, dict[str, int]] = {}
        for row in rows:
            backlog.setdefault(row["sink"], {})[row["state"]] = int(row["n"])
        return backlog


def _entity(row: aiosqlite.Row) -> Entity:
    return Entity(
        holder=row["holder"],
        resource=Resource(row["kind"], row["id"], row["country"]),
        tier=row["tier"],
        snapshot=json.loads(row["snapshot"]),
        sequence=int(row["sequence"]),
        created_at=row["created_at"],
    )


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
