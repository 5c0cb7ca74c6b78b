"""Tests of what a tier run writes and what the event log gives back: one commit's snapshot,
events and pending deliveries (all or nothing), sequences and deterministic ids, the dry run,
the run state, tracked entities, and the log's filters and limits."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.events import Resource, event_id, matches
from drgreen_poller.store import MIGRATIONS, DeliveryState, Observation, Store
from tests.store.rig import NOW, ORDER, approved


class TestOutbox:
    def test_state_column_takes_exactly_the_delivery_states(self, tmp_path: Path) -> None:
        """The ``state`` column's CHECK accepts each DeliveryState and refuses anything else."""
        path = tmp_path / "state.db"
        with closing(sqlite3.connect(path)) as db:
            for migration in MIGRATIONS:
                db.executescript(migration)
            insert = (
                "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
                " next_attempt_at, created_at, updated_at) VALUES (?, 's', ?, 'r', 1, 0, '', '')"
            )
            for n, state in enumerate(DeliveryState):
                db.execute(insert, (f"evt_{n}", state.value))
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(insert, ("evt_x", "retrying"))

    async def test_commit_writes_events_and_matching_deliveries(self, store: Store) -> None:
        """One commit stores the snapshot, the event and one pending row per matching sink."""
        result = await store.commit_poll(
            "main", "active_orders", [approved()], now=NOW, next_due_at=0
        )
        assert [e["type"] for e in result.events] == ["order.approved"]
        assert result.deliveries == 2
        assert await store.backlog() == {"store": {"pending": 1}, "audit": {"pending": 1}}
        [entity] = await store.entities("main", kind="order")
        assert entity.snapshot == {"adminApproval": "VERIFIED"}
        assert entity.sequence == store.lineage.sequence_floor + 1

    async def test_sequences_rise_and_ids_are_deterministic(self, store: Store) -> None:
        """Each event of a resource takes the next sequence; its id derives from the transition."""
        await store.commit_poll("main", "active_orders", [approved()], now=NOW, next_due_at=0)
        second = await store.commit_poll(
            "main", "active_orders", [approved()], now=NOW, next_due_at=0
        )
        event = second.events[0]
        sequence = store.lineage.sequence_floor + 2
        assert event["sequence"] == sequence
        assert event["id"] == event_id("main", ORDER, "order.approved", {}, sequence)
        assert event["resource"] == {"type": "order", "id": ORDER.id}
        assert event["observed_at"] == "2026-11-23T10:00:00.000Z"

    async def test_preview_matches_commit_and_writes_nothing(self, store: Store) -> None:
        """A dry run shows the events a commit would write, with the same ids, writing nothing."""
        previewed = await store.preview("main", [approved()], now=NOW)
        assert await store.events() == []
        committed = await store.commit_poll(
            "main", "active_orders", [approved()], now=NOW, next_due_at=0
        )
        assert previewed == committed.events

    async def test_failed_commit_writes_nothing(self, store: Store) -> None:
        """If any part of a commit fails, none of it is written."""
        bad = Observation(ORDER, {"x": {1, 2}}, "active_orders", changes=[Change("order.paid", {})])
        with pytest.raises(TypeError):
            await store.commit_poll(
                "main", "active_orders", [approved(), bad], now=NOW, next_due_at=0
            )
        assert await store.events() == []
        assert await store.entities("main") == []
        assert await store.backlog() == {}

    async def test_run_state_success_and_failure(self, store: Store) -> None:
        """Failures count up; a success resets them and records the first sync once."""
        assert (
            await store.record_failure("main", "commissions", now=NOW, error="boom", next_due_at=5)
            == 1
        )
        assert (
            await store.record_failure("main", "commissions", now=NOW, error="boom", next_due_at=9)
            == 2
        )
        await store.commit_poll("main", "commissions", [], now=NOW, next_due_at=60)
        [run] = await store.tier_runs("main")
        assert (run.consecutive_failures, run.last_error, run.next_due_at) == (0, None, 60)
        assert run.seeded_at == "2026-11-23T10:00:00.000Z"

    async def test_events_filter(self, store: Store) -> None:
        """The event log filters by glob and time."""
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_poll(
            "main", "active_orders", [approved(), client], now=NOW, next_due_at=0
        )
        assert [e["type"] for e in await store.events(patterns=["client.*"])] == ["client.created"]
        later = datetime(2026, 11, 24, tzinfo=UTC)
        assert await store.events(since=later) == []

    async def test_unauthorized_flag_moves_with_its_event(self, store: Store) -> None:
        """A holder's unauthorized mark is set and cleared together with its event."""
        holder = Resource("holder", "main")

        def event(kind: str) -> Observation:
            return Observation(holder, {"event": kind}, None, changes=[Change(kind, {})])

        await store.ensure_holders(["main"], NOW)
        await store.commit_holder_event(
            "main", event("poller.holder_unauthorized"), now=NOW, unauthorized_since=NOW
        )
        assert await store.unauthorized_holders() == {"main": "2026-11-23T10:00:00.000Z"}
        await store.commit_holder_event(
            "main", event("poller.holder_recovered"), now=NOW, unauthorized_since=None
        )
        assert await store.unauthorized_holders() == {}
        assert [e["type"] for e in await store.events()] == [
            "poller.holder_unauthorized",
            "poller.holder_recovered",
        ]


class TestTrack:
    async def test_track_never_overwrites_a_known_entity(self, store: Store) -> None:
        """Tracking an entity a poll already stored only moves its tier; its snapshot stays."""
        await store.commit_poll("main", "stale_orders", [approved()], now=NOW, next_due_at=0)
        assert await store.track("main", ORDER, "active_orders", NOW)
        [entity] = await store.entities("main")
        assert (entity.tier, entity.snapshot, entity.sequence) == (
            "active_orders",
            {"adminApproval": "VERIFIED"},
            store.lineage.sequence_floor + 1,
        )

    async def test_track_unknown_stores_the_mark(self, store: Store) -> None:
        """An entity no poll has seen is stored with only the tracked mark."""
        assert not await store.track("main", Resource("client", "c-1"), "pending_kyc", NOW)
        [entity] = await store.entities("main", tier="pending_kyc")
        assert entity.snapshot == {"_tracked": True}


TYPES = [
    "order.created", "order.approved", "order.paid", "client.kyc.verified",
    "client.kyc.completed", "commission.accrued", "strain.updated",
]  # fmt: skip


class TestEventLog:
    @pytest.mark.parametrize(
        "patterns",
        [["*"], ["order.*"], ["client.kyc.*", "strain.*"], ["order.?aid"], ["order.[ac]*"], []],
    )
    async def test_the_query_selects_what_sinks_route(
        self, store: Store, patterns: list[str]
    ) -> None:
        """``events list`` and replay select in SQL exactly the types a sink's globs route."""
        changes = [Change(kind, {}) for kind in TYPES]
        await store.commit_events("main", [Observation(ORDER, {}, None, changes=changes)], now=NOW)
        listed = [e["type"] for e in await store.events(patterns=patterns, limit=0)]
        assert listed == [kind for kind in TYPES if matches(kind, patterns)]
        assert await store.replay("audit", patterns, NOW, NOW) == len(listed)

    async def test_the_newest_limit_oldest_first(self, store: Store) -> None:
        """A limit keeps the newest events, still listed oldest first; ``since`` cuts earlier."""
        for minute, kind in enumerate(TYPES):
            resource = Resource("order", f"o-{minute}")
            observation = Observation(resource, {}, None, changes=[Change(kind, {})])
            await store.commit_events("main", [observation], now=NOW + timedelta(minutes=minute))
        newest = await store.events(limit=3)
        assert [e["type"] for e in newest] == TYPES[-3:]
        since = await store.events(since=NOW + timedelta(minutes=5), limit=0)
        assert [e["type"] for e in since] == TYPES[5:]
