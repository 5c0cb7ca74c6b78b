"""What every tier observer reads with: the run's context, the newest-first list sweep, and the
step from a detection to the observation to store.

Owns the polling rules (``PollSettings``), paging (stop once every wanted id is seen, dedupe by
id, count each page in the run's progress) and the rule that an unchanged entity stores
nothing. It holds no tier's own rules (which ids a tier wants, when an entity leaves it: the
``*_tiers`` modules) and writes nothing: the poller commits what the observers return.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from drgreen_poller.api import ApiClient
from drgreen_poller.changes import ORDER_TERMINAL_STATUSES, Detection, Snapshot
from drgreen_poller.events import Resource
from drgreen_poller.models import Page
from drgreen_poller.progress import ProgressPolicy, TierProgress
from drgreen_poller.store import TRACKED, Entity, Observation
from drgreen_poller.store.roles import PollerStore

# An entity tracked by id (``drgreen-poller track``) before any poll saw it: its snapshot holds
# only this mark, and its first observation counts as first seen (``*.created`` and so on).
TRACKED_MARK = TRACKED


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How a holder is polled (from ``[daemon]`` and ``[schedule]``)."""

    first_sync: str = "seed"
    stale_after_s: float = 7 * 86400.0
    order_terminal_statuses: frozenset[str] = ORDER_TERMINAL_STATUSES
    take: int = 100
    max_detail_fallbacks: int = 50
    progress: ProgressPolicy = field(default_factory=ProgressPolicy)


@dataclass(frozen=True, slots=True)
class TierRead:
    """One tier run's reading side: whose records, from which API and store, by which rules.

    Attributes:
        progress: the run's progress, fed one count per page read.
        first_sync: no run of this tier was committed yet (design §3.5).
        stale_cutoff: orders created before this belong to the stale tier.
    """

    holder: str
    countries: tuple[str, ...]
    api: ApiClient
    store: PollerStore
    settings: PollSettings
    progress: TierProgress
    first_sync: bool
    stale_cutoff: datetime

    @property
    def seeding(self) -> bool:
        """Whether records this run sees first are recorded without events (``seed``)."""
        return self.first_sync and self.settings.first_sync == "seed"


class Record(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Record)


async def sweep(
    run: TierRead,
    pages: AsyncIterator[Page[R]],
    kind: str,
    wanted: Mapping[str, Entity],
    *,
    discover: bool,
    full: bool,
) -> tuple[dict[str, R], dict[str, Entity]]:
    """Read pages newest first until every wanted id is seen (and, when discovering, until a
    page holds something already known: new records sit above known ones).

    ``wanted`` holds the tier's entities as this run already read them; only the other ids of a
    page are looked up. Returns the records seen (deduplicated by id: offset pages can shift)
    and the stored entities among them.
    """
    seen: dict[str, R] = {}
    stored: dict[str, Entity] = {}
    async for page in counted(run, pages, full=full):
        ids = [item.id for item in page.items]
        known = {i: wanted[i] for i in ids if i in wanted}
        others = [f"{kind}:{i}" for i in ids if i not in known]
        if others:
            found = await run.store.entities_by_key(run.holder, others)
            known.update({e.resource.id: e for e in found.values()})
        stored.update(known)
        for item in page.items:
            seen.setdefault(item.id, item)
        all_new = bool(ids) and not known
        if not full and wanted.keys() <= seen.keys() and not (discover and all_new):
            break
    return seen, stored


async def counted(
    run: TierRead, pages: AsyncIterator[Page[R]], *, full: bool
) -> AsyncIterator[Page[R]]:
    """``pages``, each counted in the run's progress before it is handed on.

    A ``full`` sweep reads the whole list, so the list's own count is what it expects.
    """
    async for page in pages:
        await run.progress.page(len(page.items), page.meta.item_count if full else None)
        yield page


def previous(stored: Entity | None) -> Snapshot | None:
    """The snapshot to compare with: none for an unknown or merely tracked entity."""
    if stored is None or TRACKED_MARK in stored.snapshot:
        return None
    return stored.snapshot


def observation(
    resource: Resource,
    detection: Detection,
    stored: Entity | None,
    tier: str | None,
    obj: Mapping[str, Any],
    created_at: str | None,
    *,
    silent: bool,
) -> Observation | None:
    """The observation to store, or None when nothing about the entity changed.

    The object events show is the record as fetched with the snapshot's normalized values over
    it (an approval the detail endpoint lacks, a country's stock, the USD totals).
    """
    changes = [] if silent else detection.changes
    if stored and not changes and stored.snapshot == detection.snapshot and stored.tier == tier:
        return None
    expected = stored.sequence if stored else 0
    shown = {**obj, **detection.shown}
    return Observation(resource, detection.snapshot, tier, shown, created_at, changes, expected)


def leaving(entity: Entity) -> Observation:
    """``entity`` leaves the active set as it was stored: no event, the same snapshot."""
    return Observation(
        entity.resource,
        entity.snapshot,
        tier=None,
        created_at=entity.created_at,
        expected_sequence=entity.sequence,
    )
