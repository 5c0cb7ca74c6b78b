"""The lease loop tests' constants: the lease times of the instances they stand up."""

from __future__ import annotations

from datetime import UTC, datetime

from drgreen_poller.events import Resource

TTL = "2s"
LONG_TTL_S = 30.0  # its lease rounds come every 10 s, unless an expiry comes sooner
DEAD_TTL_S = 3.0  # the lease a dead instance left
LATE_S = 0.05  # how late after the expiry the round may come
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")
