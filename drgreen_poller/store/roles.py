"""What each part of the daemon needs of the state database, as narrow protocols.

``Store`` has all of them; a component names the one it uses, so it depends on that and no
more, and a second backend (issue 11's PostgreSQL) knows what each caller relies on. Signatures
only: the SQL is in the modules that implement them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from drgreen_poller.progress import ProgressWriter
from drgreen_poller.store.delivery_rows import AttemptRecord, Settled
from drgreen_poller.store.polling import CommitResult, Observation
from drgreen_poller.store.snapshots import Entity
from drgreen_poller.store.tier_runs import TierRun


class DeliveryStore(Protocol):
    """The delivery worker's: claim and record in one write per turn, and the upkeep."""

    async def reset_delivering(self, now: datetime) -> int: ...

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled: ...

    async def unrouted(
        self, sinks: Collection[str], limit: int
    ) -> list[tuple[int, str, str, int]]: ...

    async def release(self, ids: Sequence[int], now: datetime) -> None: ...

    async def prune(self, before: datetime) -> tuple[int, int]: ...


class PollerStore(ProgressWriter, Protocol):
    """A holder's poller's: the stored entities, and the run's commit (or its preview)."""

    async def entities(
        self, holder: str, *, kind: str | None = None, tier: str | None = None
    ) -> list[Entity]: ...

    async def entities_by_key(self, holder: str, keys: Iterable[str]) -> dict[str, Entity]: ...

    async def tier_runs(self, holder: str | None = None) -> list[TierRun]: ...

    async def commit_poll(
        self,
        holder: str,
        tier: str,
        observations: Sequence[Observation],
        *,
        now: datetime,
        next_due_at: float,
    ) -> CommitResult: ...

    async def preview(
        self, holder: str, observations: Sequence[Observation], *, now: datetime
    ) -> list[dict[str, Any]]: ...


class RunStateStore(Protocol):
    """The tier runner's and the refused keys': failures, holds, the refusal and its events."""

    async def tier_runs(self, holder: str | None = None) -> list[TierRun]: ...

    async def record_failure(
        self, holder: str, tier: str, *, now: datetime, error: str, next_due_at: float
    ) -> int: ...

    async def postpone(self, holder: str, next_due_at: float) -> None: ...

    async def unauthorized_holders(self) -> dict[str, str]: ...

    async def commit_holder_event(
        self,
        holder: str,
        observation: Observation,
        *,
        now: datetime,
        unauthorized_since: datetime | None,
    ) -> CommitResult: ...
