"""The migrate-state tests' plain helpers: a SQLite state made by the store, and the rows of
either database as tuples to compare.

Holds no fixture (conftest.py's ``pg_database`` gives the target) and no test of its own."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.events import Resource
from drgreen_poller.store import Observation, SinkRoute, Store
from tests.conftest import PgDatabase

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ALL = SinkRoute("all", ("*",))


def order(n: int) -> Resource:
    """The ``n``th order, its id a valid UUID."""
    return Resource("order", f"00000000-0000-4000-8000-{n:012d}")


async def sqlite_state(path: Path, orders: int, clock: FakeClock, *, in_flight: int = 0) -> None:
    """A SQLite state with one event (and one delivery to sink ``all``) per order, the first
    ``in_flight`` deliveries claimed (``delivering``) by a daemon that then stopped."""
    store = await Store.open(path, sinks=[ALL], clock=clock)
    try:
        await store.ensure_holders(["main"], clock.now())
        changes = [
            Observation(order(n), {"n": n}, None, changes=[Change("order.approved", {})])
            for n in range(orders)
        ]
        await store.commit_events("main", changes, now=clock.now())
        if in_flight:
            await store.settle([], clock.now(), {"all": in_flight})
    finally:
        await store.close()


def pg_rows(db: PgDatabase, sql: str) -> list[tuple[Any, ...]]:
    """What ``sql`` selects in the test's PostgreSQL database."""
    with db.server.connect(db.name) as conn:
        return conn.execute(sql).fetchall()


def lite_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What ``sql`` selects in the SQLite file at ``path``."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()
