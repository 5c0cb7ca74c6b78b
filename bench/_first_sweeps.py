"""The scale bench's first sweeps: every holder × tier's first ``poll_finished`` line, read from
the log of each instance (one daemon, or two sharing one PostgreSQL database).

Owns when "every first sweep" happened and telling a second instance refused at start from a
daemon that failed. It starts nothing and judges nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from _pg import REFUSAL

from drgreen_poller.clock import SystemClock

CLOCK = SystemClock()
TIERS = 5  # active_orders, stale_orders, pending_kyc, commissions, strains


class InstanceRefused(Exception):
    """The second daemon on one database stopped at start, saying it was refused."""


class FirstSweeps:
    """Every holder × tier's first sweep, from the ``poll_finished`` lines of every instance:
    when the last holder's active_orders sweep and the last sweep of all were logged."""

    def __init__(self, holders: int) -> None:
        self.holders = holders
        self.started = CLOCK.monotonic()
        self.seen: set[tuple[str, str]] = set()
        self.active = 0
        self.first_active = 0.0
        self.done = asyncio.Event()

    def record(self, line: bytes) -> None:
        record = json.loads(line) if line.startswith(b"{") else {}
        if record.get("event") != "poll_finished" or not record.get("first_sync"):
            return
        key = (str(record.get("holder")), str(record.get("tier")))
        if key in self.seen:  # a holder taken over by the other instance, synced again
            return
        self.seen.add(key)
        if key[1] == "active_orders":
            self.active += 1
            if self.active == self.holders:
                self.first_active = CLOCK.monotonic() - self.started
        if len(self.seen) == self.holders * TIERS:
            self.done.set()


async def read_first_sweeps(daemon: asyncio.subprocess.Process, sweeps: FirstSweeps) -> None:
    """Feed one instance's lines to ``sweeps`` until every first sweep is done.

    Raises:
        InstanceRefused: it stopped saying another instance holds the database.
        SystemExit: it stopped for another reason.
    """
    assert daemon.stdout is not None
    said = b""
    while not sweeps.done.is_set():
        line = await daemon.stdout.readline()
        if not line:
            if REFUSAL.encode() in said:
                raise InstanceRefused
            raise SystemExit("the daemon stopped during its first sweeps")
        said = line if line.startswith(b"{") else said + line
        sweeps.record(line)


async def first_sweeps(
    daemons: Sequence[asyncio.subprocess.Process], holders: int
) -> tuple[float, float]:
    """Seconds from now until every holder's first active_orders sweep, and every tier's, on
    whichever instance ran it."""
    sweeps = FirstSweeps(holders)
    readers = [asyncio.create_task(read_first_sweeps(d, sweeps)) for d in daemons]
    try:
        done = asyncio.create_task(sweeps.done.wait())
        await asyncio.wait([done, *readers], return_when=asyncio.FIRST_COMPLETED)
        for reader in readers:
            if reader.done():
                reader.result()  # raises its InstanceRefused or SystemExit
        await done
    finally:
        for reader in readers:
            reader.cancel()
    return sweeps.first_active, CLOCK.monotonic() - sweeps.started


async def drain(stream: asyncio.StreamReader) -> None:
    """Read and drop the daemon's log lines (a full pipe would stall it)."""
    while await stream.readline():
        pass
