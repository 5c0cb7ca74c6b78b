"""The delivery loop's claimed rows waiting for a slot: one queue per sink, and which goes next.

Owns the fairness between sinks: how many rows each sink may claim ahead (its room), and which
sink's row takes a freed slot (the one with the fewest attempts under way), so a receiver that
hangs holds up its own rows only; and, where instances share the database, which claimed rows go
back unsent (claimed in an earlier epoch of the lease loop's gate). It knows nothing of the
database, HTTP or retries; the delivery worker (``delivery.py``) claims, starts and records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from drgreen_poller.store import DueDelivery


class ClaimQueue:
    """Claimed rows not started yet, per sink, and the attempts under way per sink."""

    def __init__(self) -> None:
        self._rows: dict[str, deque[DueDelivery]] = {}
        self._busy: dict[str, int] = {}  # attempts under way per sink
        self._last_start: dict[str, int] = {}  # per sink: when it last got a slot (a count)
        self._starts = 0
        self.count = 0  # rows queued, all sinks
        # Where instances share the database: the epoch of the lease loop's gate the queued rows
        # were claimed in, and claimed rows the gate kept from being sent, to hand back.
        self.epoch: int | None = 0
        self.held: list[int] = []

    def extend(self, rows: Sequence[DueDelivery]) -> None:
        """Queue claimed rows (in due order) behind their sink's."""
        for row in rows:
            queue = self._rows.get(row.sink)
            if queue is None:
                queue = self._rows[row.sink] = deque()
            queue.append(row)
        self.count += len(rows)

    def start_next(self) -> DueDelivery:
        """The row to start in a freed slot, counted as under way: of the sink with the fewest
        attempts under way (ties: the one that waited longest for a slot). Only when ``count``."""
        if len(self._rows) == 1:
            sink = next(iter(self._rows))
        else:
            sink = min(self._rows, key=self._precedence)
        queue = self._rows[sink]
        row = queue.popleft()
        if not queue:
            del self._rows[sink]
        self.count -= 1
        self._starts += 1
        self._last_start[sink] = self._starts
        self._busy[sink] = self._busy.get(sink, 0) + 1
        return row

    def ended(self, sink: str) -> None:
        """An attempt of ``sink`` (started by ``start_next``) ended."""
        self._busy[sink] -= 1

    def rooms(self, sinks: Iterable[str], window: int) -> dict[str, int]:
        """How many more rows each of ``sinks`` may claim: ``window`` less its rows under way
        and queued; sinks with none left are not named."""
        rooms = {}
        for sink in sinks:
            queue = self._rows.get(sink)
            room = window - self._busy.get(sink, 0) - (len(queue) if queue else 0)
            if room > 0:
                rooms[sink] = room
        return rooms

    def take_all(self) -> list[int]:
        """Empty the queues and the held rows (a stop); the ids of the rows that were in them."""
        ids = [*self.held, *(row.id for queue in self._rows.values() for row in queue)]
        self._rows.clear()
        self.held = []
        self.count = 0
        return ids

    def stale(self, epoch: int | None) -> bool:
        """Whether claimed rows are to be handed back under ``epoch``, the gate's now."""
        return bool(self.held) or epoch != self.epoch

    def hand_back(self, epoch: int | None) -> list[int]:
        """The claimed rows not to be sent under ``epoch``, removed: those held back, and every
        queued one once the epoch changed (claimed before the gate closed or lapsed)."""
        if epoch != self.epoch:
            self.epoch = epoch
            return self.take_all()
        ids, self.held = self.held, []
        return ids

    def _precedence(self, sink: str) -> tuple[int, int]:
        return self._busy.get(sink, 0), self._last_start.get(sink, -1)
