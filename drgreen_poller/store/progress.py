"""Tier runs in progress, in the database, so ``status`` (another process) can show them.

Owns the ``sweep_progress`` table: one row per holder × tier while a long run reads its pages,
written outside the run's own transaction (which only begins once every page is read) and
deleted when the run ends (the table is migration 5 in ``connection``). A row is a report, never
state the daemon reads back: a crashed daemon's row stays until that tier runs again, and
readers judge it by its ``updated_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drgreen_poller.events import iso_ms
from drgreen_poller.progress import SweepProgress
from drgreen_poller.store.connection import Connection


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """A tier run's progress as last written (times as ``iso_ms`` strings)."""

    holder: str
    tier: str
    started_at: str
    updated_at: str
    pages: int
    records: int
    expected_records: int | None


class ProgressRows(Connection):
    """Writes and reads the ``sweep_progress`` rows."""

    async def record_progress(self, progress: SweepProgress, now: datetime) -> None:
        """Put the run's progress in its row (one small transaction of its own)."""
        await self._write(
            """
            INSERT INTO sweep_progress (holder, tier, started_at, updated_at, pages, records,
                                        expected_records)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (holder, tier) DO UPDATE SET
                started_at = excluded.started_at, updated_at = excluded.updated_at,
                pages = excluded.pages, records = excluded.records,
                expected_records = excluded.expected_records
            """,
            [
                (
                    progress.holder,
                    progress.tier,
                    iso_ms(progress.started_at),
                    iso_ms(now),
                    progress.pages,
                    progress.records,
                    progress.expected_records,
                )
            ],
            holder=progress.holder,
        )

    async def clear_progress(self, holder: str, tier: str) -> None:
        """The run ended: its row goes."""
        await self._write(
            "DELETE FROM sweep_progress WHERE holder = ? AND tier = ?",
            [(holder, tier)],
            holder=holder,
        )

    async def progress_rows(self) -> list[ProgressRow]:
        """Every row, by holder and tier."""
        rows = await self._rows("SELECT * FROM sweep_progress ORDER BY holder, tier")
        return [
            ProgressRow(
                holder=r["holder"],
                tier=r["tier"],
                started_at=r["started_at"],
                updated_at=r["updated_at"],
                pages=r["pages"],
                records=r["records"],
                expected_records=r["expected_records"],
            )
            for r in rows
        ]
