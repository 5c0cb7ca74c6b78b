"""A delivery row as the worker and the operator's tools see it: its states, and what moves it.

Owns the plain values the outbox hands out and takes in (``DueDelivery`` claimed, an
``AttemptRecord`` finished, ``Settled`` per turn, ``DeliveryRow`` listed, ``SinkBacklog``
counted) and the ``DeliveryState`` names. No SQL, no I/O: ``outbox`` reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeliveryState(StrEnum):
    """A delivery row's state: ``pending → delivering → delivered | pending (retry) | failed``.

    The values are the text in the ``state`` column (its CHECK constraint lists the same four).
    """

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: dead until an operator requeues it


# The states of a delivery not (yet) delivered: the backlog of a sink.
UNDELIVERED_STATES = (DeliveryState.PENDING, DeliveryState.DELIVERING, DeliveryState.FAILED)
# The states ``deliveries retry`` requeues.
REQUEUEABLE_STATES = (DeliveryState.FAILED, DeliveryState.PENDING)


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for an attempt: the exact event text to send and where."""

    id: int
    event_id: str
    event_type: str
    sink: str
    attempts: int
    body: str
    schedule_offset: int = 0  # attempts made before the last requeue

    @property
    def scheduled_attempts(self) -> int:
        """Attempts made since the retry schedule last (re)started."""
        return self.attempts - self.schedule_offset


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt and what it decides for its delivery row."""

    delivery_id: int
    attempt: int
    started_at: datetime
    duration_ms: float
    ok: bool
    status: int | None
    error_class: str | None
    excerpt: str | None
    state: DeliveryState  # delivered, pending (a retry is scheduled) or failed
    next_attempt_at: float | None = None
    sink: str = ""  # for the caller's logs; not stored (the delivery row has them)
    event_id: str = ""

    @property
    def outcome(self) -> str:
        """What the attempt came to: ``delivered``, ``retrying`` (a later attempt is scheduled)
        or ``failed`` (given up: the row is dead until requeued)."""
        if self.ok:
            return "delivered"
        return "retrying" if self.state == DeliveryState.PENDING else "failed"


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """A sink's deliveries not delivered: counts by state, and the oldest still owed.

    ``oldest_due_at`` is when the oldest ``pending`` or ``delivering`` row was created (ISO
    text; None when nothing is owed). ``failed`` rows are dead until requeued, not owed.
    """

    counts: dict[str, int]
    oldest_due_at: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery as the operator sees it."""

    id: int
    event_id: str
    event_type: str
    sink: str
    state: str
    attempts: int
    next_attempt_at: float
    created_at: str
    updated_at: str
    last_outcome: str | None


@dataclass(frozen=True, slots=True)
class Settled:
    """What one turn of the delivery loop got back: the rows it claimed, and when the earliest
    pending row falls due (None when it claimed all it asked for, or nothing is pending)."""

    claimed: list[DueDelivery]
    next_attempt_at: float | None
