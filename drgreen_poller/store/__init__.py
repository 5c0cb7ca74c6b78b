"""The state database: the only package with SQL. SQLite (one aiosqlite connection, WAL) by
default, or PostgreSQL (``[store] url``: one psycopg connection in a thread of its own); numbered
migrations for each.

``Store`` combines the polling state (holders, run state, snapshots, events, the transactional
outbox write), the delivery outbox (claims, attempts, operator actions) and the progress rows of
long tier runs (for ``status``), written once for both engines over ``dialect``'s seam (the
engines' backends are ``sqlite`` and ``postgres``). ``StateLock`` (``locking.state_lock`` for
either engine) keeps a second daemon off a SQLite state, and ``poll-once`` off a PostgreSQL one
that daemons share; ``Leases`` (``leases``) is the instance registry and the holders' leases of
daemons sharing PostgreSQL. Nothing here decides what to poll or when to retry.
"""

from __future__ import annotations

from drgreen_poller.store.claims import UNROUTED
from drgreen_poller.store.connection import Connection, SinkRoute
from drgreen_poller.store.delivery_rows import (
    REQUEUEABLE_STATES,
    UNDELIVERED_STATES,
    AttemptRecord,
    DeliveryRow,
    DeliveryState,
    DueDelivery,
    Settled,
    SinkBacklog,
)
from drgreen_poller.store.event_log import EventLog
from drgreen_poller.store.files import StateLock
from drgreen_poller.store.leases import Leases
from drgreen_poller.store.migrations import MIGRATIONS
from drgreen_poller.store.outbox import Outbox
from drgreen_poller.store.polling import (
    TRACKED,
    CommitResult,
    Observation,
    PollingState,
)
from drgreen_poller.store.progress import ProgressRow, ProgressRows
from drgreen_poller.store.snapshots import Entity
from drgreen_poller.store.tier_runs import TierRun, TierRuns


class Store(PollingState, TierRuns, Outbox, EventLog, ProgressRows, Leases):
    """The state database. Use ``await Store.open(path, sinks=...)``; ``close()`` last."""


__all__ = [
    "MIGRATIONS",
    "REQUEUEABLE_STATES",
    "TRACKED",
    "UNDELIVERED_STATES",
    "UNROUTED",
    "AttemptRecord",
    "CommitResult",
    "Connection",
    "DeliveryRow",
    "DeliveryState",
    "DueDelivery",
    "Entity",
    "Observation",
    "ProgressRow",
    "Settled",
    "SinkBacklog",
    "SinkRoute",
    "StateLock",
    "Store",
    "TierRun",
]
