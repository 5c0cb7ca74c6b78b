"""Polling state in the database: entity snapshots, and the poll's commit.

Owns the transactional outbox write: a tier run's snapshots, its events and one pending
delivery row per matching sink are committed in **one transaction** (``commit_poll``), with
event ids derived from each transition and its sequence. Never stores medical data (the API client
drops it before anything reaches here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drgreen_poller.changes import Change, Snapshot
from drgreen_poller.errors import ConcurrentUpdate, StaleTier
from drgreen_poller.events import Resource, envelope, iso_ms, matches
from drgreen_poller.store.commit_rows import (
    ENTITY_COLUMNS,
    canonical_text,
    entity_of,
    insert_event,
    record_success,
    upsert_entity,
)
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.outbox import insert_deliveries
from drgreen_poller.store.snapshots import Entity, TierEntities, Written


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll learnt about one resource: its new snapshot and the events it implies."""

    resource: Resource
    snapshot: Snapshot
    tier: str | None
    obj: Mapping[str, Any] | None = None
    created_at: str | None = None
    changes: Sequence[Change] = ()
    # The entity's sequence when its snapshot was read (0: not stored yet); None: no check.
    # If another writer moved it on meanwhile, the commit is refused: the changes were
    # detected against a stale snapshot and would repeat its events under new ids.
    expected_sequence: int | None = None


@dataclass(slots=True)
class CommitResult:
    """The events a commit wrote, as delivered JSON objects, and the outbox rows created."""

    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: int = 0


# The snapshot of an entity tracked by id before any poll saw it (see sweeps.TRACKED_MARK).
TRACKED = "_tracked"


class PollingState(Connection):
    """Entities and the poll's commit: snapshots, events and their outbox rows in one transaction.

    A tier's entities, once read, are kept in memory (``TierEntities``) as this connection's
    commits leave them; a commit by any other connection (``PRAGMA data_version``) drops them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept = TierEntities()

    # --- entities --------------------------------------------------------------------------

    async def entities(
        self, holder: str, *, kind: str | None = None, tier: str | None = None
    ) -> list[Entity]:
        """Stored entities of a holder, optionally of one kind and/or one tier.

        One kind in one tier (what every tier run reads) comes from memory while no other
        connection has committed since it was read; the holder's next commit checks that
        (``PRAGMA data_version``) and raises ``StaleTier`` when one did.
        """
        if kind is not None and tier is not None:
            return await self._tier_entities(holder, kind, tier)
        sql, params = f"SELECT {ENTITY_COLUMNS} FROM entities WHERE holder = ?", [holder]  # noqa: S608 - a fixed column list
        if kind is not None:
            sql, params = sql + " AND kind = ?", [*params, kind]
        if tier is not None:
            sql, params = sql + " AND tier = ?", [*params, tier]
        # In key order on either engine (SQLite's primary key gave it unasked).
        return [entity_of(row) for row in await self._fetch(sql + " ORDER BY key", params)]

    async def _tier_entities(self, holder: str, kind: str, tier: str) -> list[Entity]:
        """The entities of one kind in one tier, kept in memory (``TierEntities``).

        Kept ones are handed out unchecked: the run's commit (or preview) checks that no other
        connection committed since (``StaleTier`` otherwise), in the hand-off it makes anyway.
        """
        kept = self._kept.get(holder, kind, tier)
        if kept is not None:
            return kept
        version_sql = self.dialect.data_version
        if version_sql is not None:
            rows = await self._fetch(version_sql)
            self._kept.foreign_writes(int(rows[0][0]))
        rows = await self._fetch(
            "SELECT id, country, snapshot, sequence, created_at FROM entities"
            " WHERE holder = ? AND kind = ? AND tier = ? ORDER BY key",
            [holder, kind, tier],
        )
        if version_sql is None:  # nothing tells this engine's foreign commits: none is kept
            return self._kept.read(holder, kind, tier, rows)
        # No await between the read and the fill: no commit of this connection falls between.
        return self._kept.fill(holder, kind, tier, rows)

    async def entities_by_key(self, holder: str, keys: Iterable[str]) -> dict[str, Entity]:
        """The stored entities among ``keys`` (absent keys are simply missing)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Entity] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._fetch(
                f"SELECT {ENTITY_COLUMNS} FROM entities WHERE holder = ? AND key IN ({marks})",  # noqa: S608 - only placeholders and the fixed column list are interpolated
                [holder, *chunk],
            )
            found.update({row["key"]: entity_of(row) for row in rows})
        return found

    async def track(self, holder: str, resource: Resource, tier: str, now: datetime) -> bool:
        """Put an entity into ``tier``; an unknown one is stored with only the tracked mark.

        One statement, so a poll storing the entity at the same moment is never overwritten.
        Returns whether the entity was already known.
        """
        stamp = iso_ms(now)

        def work(conn: Db) -> bool:
            known = (
                conn.execute(
                    "SELECT 1 FROM entities WHERE holder = ? AND key = ?", (holder, resource.key)
                ).fetchone()
                is not None
            )
            conn.execute(
                """
                INSERT INTO entities (holder, key, kind, id, country, tier, snapshot, sequence,
                                      first_seen_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
                ON CONFLICT (holder, key) DO UPDATE SET tier = excluded.tier,
                    updated_at = excluded.updated_at
                """,
                (holder, resource.key, resource.type, resource.id, resource.country, tier,
                 canonical_text({TRACKED: True}), stamp, stamp),
            )  # fmt: skip
            return known

        try:
            known = await self._atomically(work)
        finally:
            self._kept.forget(holder)
        self._kept.forget(holder)
        return known

    async def commit_holder_event(
        self,
        holder: str,
        observation: Observation,
        *,
        now: datetime,
        unauthorized_since: datetime | None,
    ) -> CommitResult:
        """A holder's operational event and its unauthorized mark, in one transaction."""
        stamp = iso_ms(unauthorized_since) if unauthorized_since else None

        def work(conn: Db, written: list[Written]) -> CommitResult:
            result = CommitResult()
            written.append(self._commit_observation(conn, holder, observation, now, result))
            conn.execute(
                "INSERT INTO holders (name, added_at, unauthorized_since) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET unauthorized_since = excluded.unauthorized_since",
                (holder, iso_ms(now), stamp),
            )
            return result

        return await self._writing_entities(holder, work)

    async def tier_sizes(self) -> dict[tuple[str, str], int]:
        rows = await self._rows(
            "SELECT holder, tier, COUNT(*) AS n FROM entities WHERE tier IS NOT NULL"
            " GROUP BY holder, tier"
        )
        return {(row["holder"], row["tier"]): int(row["n"]) for row in rows}

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
        """The events a commit would write, with their real ids and sequences; writes nothing.

        Raises:
            StaleTier: another connection committed since the holder's tier was read.
        """
        relied = self._kept.relied_on(holder)
        version_sql = self.dialect.data_version
        if relied is not None and version_sql is not None:
            rows = await self._fetch(version_sql)
            try:
                self._check_relied(int(rows[0][0]), relied)
            except StaleTier as exc:
                self._kept.foreign_writes(exc.data_version)
                raise
        keys = [o.resource.key for o in observations]
        stored = await self.entities_by_key(holder, keys)
        events = []
        for observation in observations:
            entity = stored.get(observation.resource.key)
            sequence = self._next_base(entity.sequence if entity else 0)
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

    def _next_base(self, stored_sequence: int) -> int:
        """The number the next event of a resource counts on from (its sequence is this + 1).

        Above the resource's last sequence and above the state's floor, which moves up past
        every sequence ever emitted when the state is new or was restored (``lineage``).
        """
        return max(stored_sequence, self.lineage.sequence_floor)

    async def _commit(
        self,
        holder: str,
        observations: Sequence[Observation],
        now: datetime,
        *,
        run: tuple[str, float] | None,
    ) -> CommitResult:
        """The observations (and the run's state) in one transaction, written in SQLite's thread
        in one hand-off (``_atomically``): a run costs one round trip, not two per entity. When
        the holder's tier was read from memory, the transaction first checks that no other
        connection committed since (``StaleTier``: nothing is written)."""
        relied = self._kept.relied_on(holder)
        version_sql = self.dialect.data_version

        def work(conn: Db, written: list[Written]) -> CommitResult:
            if relied is not None and version_sql is not None:
                self._check_relied(conn.execute(version_sql).fetchone()[0], relied)
            result = CommitResult()
            for observation in observations:
                written.append(self._commit_observation(conn, holder, observation, now, result))
            if run is not None:
                record_success(conn, holder, run[0], now, run[1])
            return result

        return await self._writing_entities(holder, work)

    async def _writing_entities(
        self, holder: str, work: Callable[[Db, list[Written]], CommitResult]
    ) -> CommitResult:
        """``work`` in one transaction (``_atomically``), then the kept tiers follow what it
        wrote. If it raised, or was cancelled (it may then have committed all the same), the
        holder's tiers are read again instead."""
        written: list[Written] = []
        notify = self.dialect.notify_deliveries

        def writing(conn: Db) -> CommitResult:
            done = work(conn, written)
            if done.deliveries and notify is not None:
                conn.execute(notify)  # sent when this commits: other instances wake
            return done

        try:
            result = await self._atomically(writing, holder=holder)
        except StaleTier as exc:
            self._kept.foreign_writes(exc.data_version)
            self._kept.forget(holder)
            raise
        except BaseException:
            self._kept.forget(holder)
            raise
        self._kept.committed(holder, written)
        return result

    @staticmethod
    def _check_relied(data_version: int, relied: int) -> None:
        """Raise ``StaleTier`` when ``data_version`` moved from the one the holder's kept
        entities relied on: another connection committed since. (Also in SQLite's thread: it
        touches nothing kept; the caller drops what is kept, ``_writing_entities``.)"""
        if data_version != relied:
            raise StaleTier(data_version)

    def _commit_observation(
        self,
        conn: Db,
        holder: str,
        observation: Observation,
        now: datetime,
        result: CommitResult,
    ) -> Written:
        """Write one observation: its events, their outbox rows and the entity (SQLite's thread).
        Returns the entity as written."""
        resource = observation.resource
        row = conn.execute(
            "SELECT sequence, object, created_at FROM entities WHERE holder = ? AND key = ?",
            (holder, resource.key),
        ).fetchone()
        sequence = int(row["sequence"]) if row else 0
        # An event about a resource no longer listed (strain.removed) shows it as last seen.
        obj = observation.obj
        if obj is None and observation.changes and row and row["object"]:
            obj = json.loads(row["object"])
        if observation.expected_sequence not in (None, sequence):
            raise ConcurrentUpdate(
                f"{resource.key} of {holder} changed under this poll (sequence {sequence}, "
                f"expected {observation.expected_sequence}); it is polled again"
            )
        if observation.changes:
            sequence = self._next_base(sequence)
        for change in observation.changes:
            sequence += 1
            event = envelope(
                holder=holder,
                resource=resource,
                sequence=sequence,
                change=change,
                observed_at=now,
                obj=obj,
            )
            insert_event(conn, holder, resource, sequence, event, now)
            result.events.append(event)
            result.deliveries += self._insert_deliveries(conn, event, resource, sequence, now)
        snapshot = canonical_text(observation.snapshot)
        upsert_entity(conn, holder, observation, snapshot, sequence, iso_ms(now))
        created_at = observation.created_at  # COALESCE(excluded.created_at, created_at)
        if created_at is None and row:
            created_at = row["created_at"]
        return Written(resource, observation.tier, snapshot, sequence, created_at)

    def _insert_deliveries(
        self,
        conn: Db,
        event: dict[str, Any],
        resource: Resource,
        sequence: int,
        now: datetime,
    ) -> int:
        routes = [sink.name for sink in self.sinks if matches(event["type"], sink.patterns)]
        key = f"{event['holder']}/{resource.key}"
        insert_deliveries(conn, [(event["id"], sink, key, sequence) for sink in routes], now)
        return len(routes)

    # --- the event log ---------------------------------------------------------------------
