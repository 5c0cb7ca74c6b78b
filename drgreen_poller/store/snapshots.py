"""The tiers' stored entities kept in memory, so that a tier run that changes nothing reads none.

Owns ``TierEntities``: for each (holder, kind, tier) read once, the entities exactly as the
database holds them, kept so by the only writes that can change them: this connection's commits
(``committed``, with what they wrote) and another connection's (any at all: ``PRAGMA
data_version`` moved, ``foreign_writes``), which empty it; a holder's commit checks the
data_version its read relied on (``relied_on``). It runs no SQL itself and decides nothing about
polling; a snapshot handed out is shared and must not be changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drgreen_poller.changes import Snapshot
from drgreen_poller.events import Resource

# Distinct snapshot texts kept to share one dict between entities in the same state (orders in a
# tier mostly are: ``{"adminApproval": "PENDING", ...}``); past this the table starts over.
SHARED_SNAPSHOTS_MAX = 4096


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
class Written:
    """One entity as a commit left it (its row's values), for ``TierEntities.committed``."""

    resource: Resource
    tier: str | None
    snapshot_json: str
    sequence: int
    created_at: str | None


class TierEntities:
    """The entities of the (holder, kind, tier)s read so far, as the database holds them.

    Memory: one ``Entity`` per entity of a tier read (about 370 bytes with its id and creation
    time), the snapshots shared between entities whose snapshot text is the same.
    """

    def __init__(self) -> None:
        # holder → (kind, tier) → resource → entity, each tier's in ascending key order (the
        # database's: its primary key). Keyed by the entity's own ``Resource``: no key string.
        self._holders: dict[str, dict[tuple[str, str], dict[Resource, Entity]]] = {}
        self._data_version: int | None = None
        self._shared: dict[str, Snapshot] = {}
        # holder → the data_version its last tier read relied on (``relied_on``).
        self._relied: dict[str, int | None] = {}

    def foreign_writes(self, data_version: int) -> None:
        """SQLite's ``PRAGMA data_version`` of this connection, read before a tier's rows and in
        the commit of a run that used kept entities: it moves when another connection committed
        (the CLI's ``track``, a repair, a restore into the file), and everything kept is then
        forgotten."""
        if data_version != self._data_version:
            self._holders.clear()
            self._data_version = data_version

    def relied_on(self, holder: str) -> int | None:
        """The data_version the holder's tier read relied on since its last commit (its
        entities were what the database held then), once; None when it read none."""
        return self._relied.pop(holder, None)

    def get(self, holder: str, kind: str, tier: str) -> list[Entity] | None:
        """The tier's entities in key order, or None when they must be read."""
        entities = self._holders.get(holder, {}).get((kind, tier))
        if entities is None:
            return None
        self._relied[holder] = self._data_version
        return list(entities.values())

    def fill(
        self, holder: str, kind: str, tier: str, rows: Iterable[Sequence[Any]]
    ) -> list[Entity]:
        """Keep (and return) the tier's entities from its rows ``(id, country, snapshot JSON,
        sequence, created_at)`` in key order, read after ``foreign_writes`` with no await since."""
        entities = self._entities(holder, kind, tier, rows)
        self._holders.setdefault(holder, {})[kind, tier] = entities
        self._relied[holder] = self._data_version
        return list(entities.values())

    def read(
        self, holder: str, kind: str, tier: str, rows: Iterable[Sequence[Any]]
    ) -> list[Entity]:
        """The tier's entities from its rows as ``fill`` reads them, none kept (an engine that
        cannot tell another connection's commits: PostgreSQL)."""
        return list(self._entities(holder, kind, tier, rows).values())

    def _entities(
        self, holder: str, kind: str, tier: str, rows: Iterable[Sequence[Any]]
    ) -> dict[Resource, Entity]:
        entities: dict[Resource, Entity] = {}
        for entity_id, country, snapshot, sequence, created_at in rows:
            resource = Resource(kind, entity_id, country)
            entities[resource] = Entity(
                holder, resource, tier, self.snapshot(snapshot), int(sequence), created_at
            )
        return entities

    def committed(self, holder: str, written: Iterable[Written]) -> None:
        """This connection committed ``written``: each entity leaves the tier it was kept in and
        joins the kept tier it is in now (a tier not kept is read when first asked for)."""
        tiers = self._holders.get(holder)
        if not tiers:
            return
        joined: set[tuple[str, str]] = set()
        for row in written:
            kind = row.resource.type
            for (kept_kind, _), entities in tiers.items():
                if kept_kind == kind:
                    entities.pop(row.resource, None)
            kept = tiers.get((kind, row.tier)) if row.tier is not None else None
            if kept is not None and row.tier is not None:
                kept[row.resource] = Entity(
                    holder, row.resource, row.tier, self.snapshot(row.snapshot_json),
                    row.sequence, row.created_at,
                )  # fmt: skip
                joined.add((kind, row.tier))
        for kind_tier in joined:
            tiers[kind_tier] = dict(sorted(tiers[kind_tier].items(), key=_by_key))

    def forget(self, holder: str) -> None:
        """Read the holder's tiers again (a write whose effect is not worked out here)."""
        self._holders.pop(holder, None)

    def snapshot(self, text: str) -> Snapshot:
        """The snapshot stored as ``text``, one dict shared by every entity stored the same."""
        shared = self._shared.get(text)
        if shared is None:
            if len(self._shared) >= SHARED_SNAPSHOTS_MAX:
                self._shared.clear()
            shared = self._shared[text] = json.loads(text)
        return shared


def _by_key(item: tuple[Resource, Entity]) -> str:
    """The database's order of a tier's entities: by primary key."""
    return item[0].key
