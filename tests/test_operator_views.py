"""The operator page's read queries (``store/operator_views.py``) on both engines: the ``store``
fixture runs each test on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.config import StoreConfig
from drgreen_poller.events import Resource
from drgreen_poller.store import AttemptRecord, DeliveryState, Observation, SinkRoute, Store
from drgreen_poller.store.operator_views import OperatorViews

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
FIRST = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")
SECOND = Resource("order", "0a9e4f1c-2b3d-4c55-9a61-2f7e0b1d4c11")
STRAIN = Resource("strain", "b1f5d7d0-887b-4cca-94f0-2dc4f7f1bb27", country="GBR")
SINKS = [SinkRoute("store", ("order.*",))]


@pytest.fixture
async def store(store_state: Path | StoreConfig) -> AsyncIterator[Store]:
    """The store on each engine (``store_state``)."""
    opened = await Store.open(store_state, sinks=SINKS)
    yield opened
    await opened.close()


def _seen(resource: Resource, kind: str, status: str) -> Observation:
    # No ``obj``: the events are hand-made, not the code's (the contract check leaves them out).
    return Observation(
        resource, {"status": status}, "active_orders", changes=[Change(kind, {"status": "-"})]
    )


async def _three_events(store: Store) -> list[str]:
    """order.approved of FIRST at NOW, order.paid of SECOND and strain.updated an hour later;
    their ids in that order."""
    ids = []
    for resource, kind, when in (
        (FIRST, "order.approved", NOW),
        (SECOND, "order.paid", NOW + timedelta(hours=1)),
        (STRAIN, "strain.updated", NOW + timedelta(hours=1, minutes=5)),
    ):
        result = await store.commit_events("main", [_seen(resource, kind, kind)], now=when)
        ids.append(result.events[0]["id"])
    return ids


class TestEvents:
    async def test_filters_newest_first(self, store: Store) -> None:
        """Events by type glob, by resource id (or whole key), before a place, newest first."""
        ids = await _three_events(store)
        views = OperatorViews(store)
        every = await views.events()
        orders = await views.events(patterns=["order.*"])
        first = await views.events(resource=FIRST.id)
        strain = await views.events(resource=STRAIN.key)
        strain_by_id = await views.events(resource=STRAIN.id)
        older = await views.events(before_seq=every[0].seq, limit=1)
        assert [e.body["id"] for e in every] == ids[::-1]
        assert [e.body["type"] for e in orders] == ["order.paid", "order.approved"]
        assert [e.body["id"] for e in first] == [ids[0]]
        assert [e.body["id"] for e in strain] == [ids[2]]
        assert [e.body["id"] for e in strain_by_id] == [ids[2]]
        assert [e.body["id"] for e in older] == [ids[1]]
        assert await views.events(resource="6f1c2a9e%") == []

    async def test_one_event_and_its_deliveries(self, store: Store) -> None:
        """An event by id with its deliveries; an unknown id is None and has none."""
        ids = await _three_events(store)
        views = OperatorViews(store)
        event = await views.event(ids[0])
        deliveries = await views.event_deliveries(ids[0])
        assert event is not None
        assert event["type"] == "order.approved"
        assert [(d.sink, d.state, d.event_type) for d in deliveries] == [
            ("store", "pending", "order.approved")
        ]
        assert await views.event("evt_none") is None
        assert await views.event_deliveries(ids[2]) == []

    async def test_events_per_hour(self, store: Store) -> None:
        """Events counted per UTC hour since a time."""
        await _three_events(store)
        views = OperatorViews(store)
        assert await views.events_per_hour(NOW - timedelta(hours=1)) == {
            "2026-11-23T10": 1,
            "2026-11-23T11": 2,
        }
        assert await views.events_per_hour(NOW + timedelta(hours=2)) == {}


class TestDeliveries:
    async def test_attempts_and_delivered_rows(self, store: Store) -> None:
        """Attempt logs of several deliveries in one read; delivered rows with their successful
        attempt since a time."""
        await _three_events(store)
        later = NOW + timedelta(hours=2)
        claimed = (await store.settle([], later, {"store": 10})).claimed
        failed, delivered = sorted(claimed, key=lambda row: row.id)
        ok, dead = DeliveryState.DELIVERED, DeliveryState.FAILED
        records = [
            AttemptRecord(failed.id, 1, later, 3.0, False, 500, None, "down", dead),
            AttemptRecord(delivered.id, 1, later, 4.0, True, 204, None, None, ok),
        ]
        await store.settle(records, later, {})
        views = OperatorViews(store)
        attempts = await views.attempts_of([failed.id, delivered.id, 999])
        since = await views.delivered_since(later - timedelta(minutes=1))
        assert [(a["status"], a["response_excerpt"], a["ok"]) for a in attempts[failed.id]] == [
            (500, "down", 0)
        ]
        assert [a["status"] for a in attempts[delivered.id]] == [204]
        assert attempts[999] == []
        assert await views.attempts_of([]) == {}
        assert [(r.started_at, r.duration_ms) for r in since] == [("2026-11-23T12:00:00.000Z", 4.0)]
        assert await views.delivered_since(later + timedelta(minutes=1)) == []
