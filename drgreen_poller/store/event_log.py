"""The event log as the operator reads it: ``events list``, filtered and limited in SQL.

Owns the query over logged events (type globs, a start time, the newest ``limit``). Writing
events is the poll's commit (``polling``); replaying them to a sink is the ``outbox``'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from drgreen_poller.events import iso_ms
from drgreen_poller.store.connection import Connection
from drgreen_poller.store.outbox import glob_clause


class EventLog(Connection):
    """Reading the event log."""

    async def events(
        self,
        *,
        patterns: Sequence[str] = ("*",),
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` (0: all) logged events matching ``patterns`` and observed at or
        after ``since``, oldest first."""
        where, found = glob_clause("type", patterns, self.dialect)
        params: list[str | int] = list(found)
        if since is not None:
            where, params = f"{where} AND observed_at >= ?", [*params, iso_ms(since)]
        newest = f"SELECT seq, body FROM events WHERE {where} ORDER BY seq DESC"  # noqa: S608 - placeholders only
        if limit:
            newest, params = f"{newest} LIMIT ?", [*params, limit]
        rows = await self._rows(f"SELECT body FROM ({newest}) AS newest ORDER BY seq", params)  # noqa: S608 - placeholders only
        return [json.loads(row["body"]) for row in rows]
