"""Counts of the requests the sandbox's Dr Green API received, for tests and benchmarks.

Owns the totals by endpoint template, holder and status, and a capped log of recent requests.
Pure bookkeeping: it never decides anything about a request.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

LOG_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: when it arrived, who sent it, which endpoint, what status it got."""

    t: float
    at: str
    holder: str
    endpoint: str
    status: int

    def as_dict(self) -> dict[str, Any]:
        """The record as the control API lists it."""
        return {
            "t": self.t,
            "at": self.at,
            "holder": self.holder,
            "endpoint": self.endpoint,
            "status": self.status,
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
