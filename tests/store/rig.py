"""The store tests' plain helpers: a fixed time, an order, the sinks the ``store`` fixture routes
to (and what a claim may take of each), and an observation of that order being approved.

Holds no fixture (those are in this package's conftest.py) and no test of its own."""

from __future__ import annotations

from datetime import UTC, datetime

from drgreen_poller.changes import Change
from drgreen_poller.events import Resource
from drgreen_poller.store import Observation, SinkRoute

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")
SINKS = [
    SinkRoute("store", ("order.*",)),
    SinkRoute("audit", ("*",)),
    SinkRoute("kyc", ("client.*",)),
]
ROOMS = {route.name: 10 for route in SINKS}  # what a claim may take of each sink


def approved(snapshot_status: str = "VERIFIED") -> Observation:
    """ORDER seen with ``adminApproval`` at ``snapshot_status``, having been PENDING."""
    return Observation(
        ORDER,
        {"adminApproval": snapshot_status},
        "active_orders",
        obj={"id": ORDER.id},
        changes=[Change("order.approved", {"adminApproval": "PENDING"})],
    )
