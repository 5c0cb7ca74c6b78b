"""What the simulated Dr Green service does to requests and what it saw: faults and counts.

Owns one sandbox's active faults (a ``FaultBook``), the request counts for tests and benchmarks
(totals by endpoint template, holder and status, and a capped log of recent requests), and
checks a new fault's endpoint filter against the route table. It must not build responses nor
touch aiohttp: the gateway applies faults and ``app.py`` records requests; the control API drives
both through here.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.sandbox.dapp.faults import Fault, FaultBook
from drgreen_poller.sandbox.dapp.routes import ENDPOINTS
from drgreen_poller.sandbox.world.model import iso, to_ms

LOG_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: when it arrived, who sent it, which endpoint, what status it got."""

    t: float
    at: str
    holder: str
    endpoint: str
    status: int
    user_agent: str = ""  # which client sent it (several daemons put their instance id in it)

    def as_dict(self) -> dict[str, Any]:
        """The record as the control API lists it."""
        return {
            "t": self.t,
            "at": self.at,
            "holder": self.holder,
            "endpoint": self.endpoint,
            "status": self.status,
            "user_agent": self.user_agent,
        }


class RequestLog:
    """Totals since the last reset plus the most recent ``LOG_CAPACITY`` requests."""

    def __init__(self) -> None:
        self.total = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_holder: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_holder_endpoint: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.by_holder_status: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.log: deque[RequestRecord] = deque(maxlen=LOG_CAPACITY)

    def record(self, entry: RequestRecord) -> None:
        """Count one request."""
        self.total += 1
        self.by_endpoint[entry.endpoint] += 1
        self.by_holder[entry.holder] += 1
        self.by_status[entry.status] += 1
        self.by_holder_endpoint[entry.holder][entry.endpoint] += 1
        self.by_holder_status[entry.holder][entry.status] += 1
        self.log.append(entry)

    def clear(self) -> None:
        """Forget everything."""
        self.total = 0
        for counter in (self.by_endpoint, self.by_holder, self.by_status):
            counter.clear()
        self.by_holder_endpoint.clear()
        self.by_holder_status.clear()
        self.log.clear()

    def snapshot(self, holder: str | None = None) -> dict[str, Any]:
        """The counts as JSON; with ``holder``, only that holder's requests.

        Shape: ``{"total", "by_endpoint", "by_holder", "by_status", "by_holder_endpoint",
        "log"}``; ``by_status`` keys are status codes as strings.
        """
        if holder is None:
            return {
                "total": self.total,
                "by_endpoint": dict(self.by_endpoint),
                "by_holder": dict(self.by_holder),
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "by_holder_endpoint": {h: dict(c) for h, c in self.by_holder_endpoint.items()},
                "log": [entry.as_dict() for entry in self.log],
            }
        endpoints = dict(self.by_holder_endpoint.get(holder, {}))
        return {
            "total": self.by_holder.get(holder, 0),
            "by_endpoint": endpoints,
            "by_holder": {holder: self.by_holder[holder]} if holder in self.by_holder else {},
            "by_status": {str(k): v for k, v in self.by_holder_status.get(holder, {}).items()},
            "by_holder_endpoint": {holder: endpoints} if endpoints else {},
            "log": [entry.as_dict() for entry in self.log if entry.holder == holder],
        }


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
        self,
        *,
        arrival_s: float,
        arrived_at: datetime,
        holder: str,
        endpoint: str,
        status: int,
        user_agent: str = "",
    ) -> None:
        """Count a request to the Dr Green API.

        Args:
            arrival_s: the clock's monotonic time when the request arrived.
            arrived_at: the clock's wall time when it arrived.
            holder: the holder whose key it carried, or ``anonymous``.
            endpoint: the route template (``GET /dapp/orders/{orderId}``) or ``unmatched``.
            status: the HTTP status it got.
            user_agent: its User-Agent header ("" when it sent none).
        """
        at = iso(to_ms(arrived_at))
        entry = RequestRecord(arrival_s, at, holder, endpoint, status, user_agent)
        self.requests.record(entry)

    def request_counts(self, holder: str | None = None) -> dict[str, Any]:
        """Request counts since the last reset (see ``RequestLog.snapshot``)."""
        return self.requests.snapshot(holder)

    def reset_request_counts(self) -> None:
        """Start counting from zero."""
        self.requests.clear()
