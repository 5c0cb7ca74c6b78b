"""The rows one poll's commit writes, as statements run in the engine's thread inside it.

Owns the SQL of a tier run's success mark, an event, an entity's upsert, and how a stored entity
row is read back (``entity_of``). Callers hold the transaction (``polling``); nothing here
decides what changed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drgreen_poller.events import Resource, encode, iso_ms
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.snapshots import Entity

if TYPE_CHECKING:  # polling imports this module; the type is only named here
    from drgreen_poller.store.polling import Observation

# What ``entity_of`` reads: not ``object`` (the last record, the largest column, which only
# events read, inside their commit).
ENTITY_COLUMNS = "holder, key, kind, id, country, tier, snapshot, sequence, created_at"


def canonical_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def record_success(conn: Db, holder: str, tier: str, now: datetime, next_due_at: float) -> None:
    stamp = iso_ms(now)
    conn.execute(
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


def insert_event(
    conn: Db,
    holder: str,
    resource: Resource,
    sequence: int,
    event: dict[str, Any],
    now: datetime,
) -> None:
    conn.execute(
        "INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event["id"], event["type"], holder, resource.key, sequence, iso_ms(now), encode(event)),
    )


def upsert_entity(
    conn: Db,
    holder: str,
    observation: Observation,
    snapshot: str,
    sequence: int,
    stamp: str,
) -> None:
    resource = observation.resource
    conn.execute(
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
            snapshot,
            None if observation.obj is None else encode(observation.obj),
            sequence,
            observation.created_at,
            stamp,
            stamp,
        ),
    )


def entity_of(row: Any) -> Entity:
    """An ``Entity`` from a row of ``ENTITY_COLUMNS``, read by column name (read once per tier
    and then kept in memory, so a lookup per column costs nothing a run would notice)."""
    resource = Resource(row["kind"], row["id"], row["country"])
    return Entity(
        row["holder"], resource, row["tier"], json.loads(row["snapshot"]), int(row["sequence"]),
        row["created_at"],
    )  # fmt: skip
