"""Progress of one tier run: pages and records counted as they arrive, and told to whoever asks.

Owns the ``SweepProgress`` value and the throttles around it: a ``sweep_progressed`` log line at
most every ``log_every_s``, a row in the state database (for ``status``, another process) at
most every ``write_every_s`` and only once a run has lasted that long, and a hook called on
every page (the ``poll-once`` bar). It fetches and commits nothing: the poller feeds it pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

import structlog

from drgreen_poller.clock import Clock

log = structlog.get_logger(__name__)

# A first sync of 5,000 orders reads 50 pages at 1 request/s: a line every 5 s says it is alive
# without a line per page of every minute's one-page sweep.
PROGRESS_LOG_S = 5.0
# ``status`` reads the row; one write a second at most keeps its cost negligible.
PROGRESS_WRITE_S = 1.0


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """How far one tier run of one holder has read.

    Attributes:
        expected_records: what the list said it holds, when the run reads all of it (a first
            sync); None when the run stops as soon as it has what it needs.
        done: the run has ended (committed, failed or abandoned).
    """

    holder: str
    tier: str
    started_at: datetime
    pages: int = 0
    records: int = 0
    expected_records: int | None = None
    elapsed_s: float = 0.0
    done: bool = False


class ProgressWriter(Protocol):
    """What progress needs from the state database: a row per running tier run."""

    async def record_progress(self, progress: SweepProgress, now: datetime) -> None: ...

    async def clear_progress(self, holder: str, tier: str) -> None: ...


OnProgress = Callable[[SweepProgress], None]


@dataclass(frozen=True, slots=True)
class ProgressPolicy:
    """How often progress is logged and written (0: every page, for tests)."""

    log_every_s: float = PROGRESS_LOG_S
    write_every_s: float = PROGRESS_WRITE_S


class TierProgress:
    """The progress of one tier run; ``page`` per page read, ``finish`` once it ends.

    Args:
        progress: the run's starting value (holder, tier, start time).
        clock: the time source.
        policy: the throttles.
        writer: the state database, or None (a dry run writes nothing).
        on_progress: called with every new value, the last one ``done``.
        row_left: a row for this holder and tier may be in the database (a run of an earlier
            process): ``finish`` deletes it even if this run never wrote one.
    """

    def __init__(
        self,
        progress: SweepProgress,
        clock: Clock,
        policy: ProgressPolicy,
        *,
        writer: ProgressWriter | None,
        on_progress: OnProgress | None,
        row_left: bool,
    ) -> None:
        self.value = progress
        self._clock, self._policy = clock, policy
        self._writer, self._on_progress = writer, on_progress
        self._started = self._logged = self._written = clock.monotonic()
        self._row = row_left

    async def page(self, records: int, expected_records: int | None = None) -> None:
        """Count one page of ``records`` items (and what the whole list holds, when known)."""
        now = self._clock.monotonic()
        self.value = replace(
            self.value,
            pages=self.value.pages + 1,
            records=self.value.records + records,
            expected_records=expected_records or self.value.expected_records,
            elapsed_s=round(now - self._started, 1),
        )
        if now - self._logged >= self._policy.log_every_s:
            self._logged = now
            log.info(
                "sweep_progressed",
                holder=self.value.holder,
                tier=self.value.tier,
                pages=self.value.pages,
                records=self.value.records,
                expected_records=self.value.expected_records,
                elapsed_s=self.value.elapsed_s,
            )
        if self._writer is not None and now - self._written >= self._policy.write_every_s:
            self._written, self._row = now, True
            await self._writer.record_progress(self.value, self._clock.now())
        if self._on_progress is not None:
            self._on_progress(self.value)

    async def finish(self) -> None:
        """The run has ended: its row (if any) goes, and the hook hears ``done``."""
        self.value = replace(self.value, done=True)
        if self._writer is not None and self._row:
            self._row = False
            await self._writer.clear_progress(self.value.holder, self.value.tier)
        if self._on_progress is not None:
            self._on_progress(self.value)
