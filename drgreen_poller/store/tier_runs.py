"""Holders and the run state of each holder × tier: due times, failures, the refused-key mark.

Owns the ``holders`` and ``tier_runs`` rows as the runner and ``status`` read and move them
outside a poll's commit (a failure, a pause, a refusal). A successful run's row is written by
``polling``'s commit, in the same transaction as its snapshots and events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from drgreen_poller.events import iso_ms
from drgreen_poller.store.connection import Connection


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


class TierRuns(Connection):
    """The holders and their tiers' run state."""

    async def ensure_holders(self, names: Iterable[str], now: datetime) -> None:
        """Record the configured holders (rows stay when a holder leaves the config)."""
        await self._write(
            "INSERT INTO holders (name, added_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(name, iso_ms(now)) for name in names],
        )

    async def unauthorized_holders(self) -> dict[str, str]:
        rows = await self._rows(
            "SELECT name, unauthorized_since FROM holders WHERE unauthorized_since IS NOT NULL"
        )
        return {row["name"]: row["unauthorized_since"] for row in rows}

    async def postpone(self, holder: str, next_due_at: float) -> None:
        """Move every tier of ``holder`` to no earlier than ``next_due_at`` (a pause)."""
        later = f"{self.dialect.greatest}(COALESCE(next_due_at, 0), ?)"
        await self._write(
            f"UPDATE tier_runs SET next_due_at = {later} WHERE holder = ?",  # noqa: S608 - an engine's function name
            [(next_due_at, holder)],
            holder=holder,
        )

    async def tier_runs(self, holder: str | None = None) -> list[TierRun]:
        where = " WHERE holder = ?" if holder else ""
        rows = await self._fetch(
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
            holder=holder,
        )
        runs = await self._rows(
            "SELECT consecutive_failures FROM tier_runs WHERE holder = ? AND tier = ?",
            [holder, tier],
        )
        return int(runs[0]["consecutive_failures"])
