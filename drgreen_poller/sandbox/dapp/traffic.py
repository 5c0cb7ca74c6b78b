"""What the simulated Dr Green service does to requests and what it saw: faults and counts.

Owns one sandbox's active faults (``FaultBook``) and request counts (``RequestLog``), and checks
a new fault's endpoint filter against the route table. Pure bookkeeping, no aiohttp: the gateway
applies faults and ``app.py`` records requests; the control API drives both through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drgreen_poller.sandbox.dapp.counters import RequestLog, RequestRecord
from drgreen_poller.sandbox.dapp.faults import Fault, FaultBook
from drgreen_poller.sandbox.dapp.routes import ENDPOINTS
from drgreen_poller.sandbox.world.model import iso, to_ms


class Traffic:
    """The faults waiting for requests and the counts of requests served."""

    def __init__(self) -> None:
        self.faults = FaultBook()
        self.requests = RequestLog()

    def clear(self) -> None:
        """Deactivate every fault and count from zero."""
        self.faults.clear()
        self.requests.clear()

    def add_fault(self, spec: Mapping[str, Any]) -> Fault:
        """Activate a fault (see ``faults.parse_fault``); it applies to ``/api/v1`` requests."""
        return self.faults.add(spec, ENDPOINTS)

    def remove_fault(self, fault_id: int) -> None:
        """Deactivate one fault (``UnknownEntity`` when no active fault has that id)."""
        self.faults.remove(fault_id)

    def clear_faults(self) -> None:
        """Deactivate every fault."""
        self.faults.clear()

    def record_request(
        self, *, arrival_s: float, arrived_at: datetime, holder: str, endpoint: str, status: int
    ) -> None:
        """Count a request to the Dr Green API.

        Args:
            arrival_s: the clock's monotonic time when the request arrived.
            arrived_at: the clock's wall time when it arrived.
            holder: the holder whose key it carried, or ``anonymous``.
            endpoint: the route template (``GET /dapp/orders/{orderId}``) or ``unmatched``.
            status: the HTTP status it got.
        """
        entry = RequestRecord(arrival_s, iso(to_ms(arrived_at)), holder, endpoint, status)
        self.requests.record(entry)

    def request_counts(self, holder: str | None = None) -> dict[str, Any]:
        """Request counts since the last reset (see ``RequestLog.snapshot``)."""
        return self.requests.snapshot(holder)

    def reset_request_counts(self) -> None:
        """Start counting from zero."""
        self.requests.clear()
