"""Tests of the outbox as the delivery worker uses it: claims handing over the stored body in
due order, settling an attempt and claiming the next in one turn, the pending rows of removed
sinks, and pruning delivered rows."""

from __future__ import annotations

import json
from datetime import timedelta

from drgreen_poller.changes import Change
from drgreen_poller.events import Resource
from drgreen_poller.store import DeliveryState, Observation, Store
from tests.store.rig import NOW, ORDER, ROOMS, approved


class TestBatchedClaims:
    async def test_claimed_body_is_the_stored_text_exactly(self, store: Store) -> None:
        """A claim hands over each event's stored text byte for byte (escapes, non-ASCII,
        control and line-separator characters included), in due order."""
        tricky = 'é ü 漢 🌿 "q" \\ \u2028 \x01 \t </script>'
        observation = Observation(
            ORDER, {}, None, obj={"id": ORDER.id, "note": tricky},
            changes=[Change("order.approved", {}), Change("order.paid", {})],
        )  # fmt: skip
        await store.commit_events("main", [observation], now=NOW)
        claimed = (await store.settle([], NOW, ROOMS)).claimed
        stored = {
            row["id"]: row["body"] for row in await store._rows("SELECT id, body FROM events")
        }
        assert [(row.sink, row.event_type) for row in claimed] == [
            ("store", "order.approved"), ("audit", "order.approved"),
        ]  # fmt: skip
        assert all(row.body == stored[row.event_id] for row in claimed)
        assert json.loads(claimed[0].body)["data"]["object"]["note"] == tricky

    async def test_settle_records_then_claims_the_next_in_one_go(self, store: Store) -> None:
        """Recording an event's attempt and claiming in one turn hands over the resource's
        next event at once, and moves the recorded row on."""
        from drgreen_poller.store import AttemptRecord

        observation = Observation(
            ORDER, {}, None, changes=[Change("order.approved", {}), Change("order.paid", {})]
        )
        await store.commit_events("main", [observation], now=NOW)
        first = [row for row in (await store.settle([], NOW, ROOMS)).claimed if row.sink == "store"]
        done = [
            AttemptRecord(row.id, 1, NOW, 1.0, True, 204, None, None, DeliveryState.DELIVERED)
            for row in first
        ]
        settled = await store.settle(done, NOW, ROOMS)
        assert [(row.sink, row.event_type) for row in settled.claimed] == [("store", "order.paid")]
        # audit's copy of order.paid is due, held back behind audit's order.approved: whose end
        # wakes the loop, so no later time is given
        assert settled.next_attempt_at is None
        [attempt] = await store.attempts(first[0].id)
        assert (attempt["ok"], attempt["status"], attempt["attempt"]) == (1, 204, 1)

    async def test_attempt_text_beyond_utf8_is_recorded(self, store: Store) -> None:
        """An attempt whose excerpt and error hold text UTF-8 cannot carry (a lone surrogate,
        as an undecodable path or message becomes in Python) is still recorded, its row moved
        on: the turn's write does not fail, and the text reads back with the character
        replaced, not lost."""
        from drgreen_poller.store import AttemptRecord

        await store.commit_events("main", [approved()], now=NOW)
        row = next(r for r in (await store.settle([], NOW, ROOMS)).claimed if r.sink == "store")
        odd = AttemptRecord(
            row.id, 1, NOW, 1.0, False, None, "bad \udc80 path", "no such file: /x/\udcff",
            DeliveryState.FAILED,
        )  # fmt: skip
        await store.settle([odd], NOW, ROOMS)
        [attempt] = await store.attempts(row.id)
        assert (attempt["error_class"], attempt["response_excerpt"]) == (
            "bad \ufffd path", "no such file: /x/\ufffd",
        )  # fmt: skip
        [listed] = [r for r in await store.deliveries(sink="store") if r.id == row.id]
        assert (listed.state, listed.last_outcome) == (DeliveryState.FAILED, "bad \ufffd path")

    async def test_attempt_text_with_nul_is_recorded_whole(self, store: Store) -> None:
        """A receiver's answer holding NUL bytes (a binary body; a program's stderr) is recorded
        whole, each NUL as U+FFFD: neither engine's JSON carries a NUL into a text (PostgreSQL
        refuses it, failing the turn's write; SQLite's cuts the text there)."""
        from drgreen_poller.store import AttemptRecord

        await store.commit_events("main", [approved()], now=NOW)
        row = next(r for r in (await store.settle([], NOW, ROOMS)).claimed if r.sink == "store")
        binary = AttemptRecord(
            row.id, 1, NOW, 1.0, False, 500, None, "\x1f\x8b\x08\x00 gzip \x00 tail",
            DeliveryState.PENDING, next_attempt_at=NOW.timestamp() + 60,
        )  # fmt: skip
        await store.settle([binary], NOW, ROOMS)
        [attempt] = await store.attempts(row.id)
        assert attempt["response_excerpt"] == "\x1f\x8b\x08\ufffd gzip \ufffd tail"
        [listed] = [r for r in await store.deliveries(sink="store") if r.id == row.id]
        assert (listed.state, listed.attempts) == (DeliveryState.PENDING, 1)


class TestUnrouted:
    async def test_pending_rows_of_removed_sinks(self, store: Store) -> None:
        """The pending rows of sinks no longer configured are found (with their event and
        attempts), whatever the names sort between; those of configured sinks, and rows no
        longer pending, are not; ``limit`` bounds how many."""
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_events("main", [approved(), client], now=NOW)
        [kyc] = (await store.settle([], NOW, {"kyc": 1})).claimed  # in flight: not pending
        found = await store.unrouted(["kyc"], 100)
        assert sorted((sink, attempts) for _id, sink, _event, attempts in found) == [
            ("audit", 0), ("audit", 0), ("store", 0),
        ]  # fmt: skip
        assert [sink for _id, sink, _e, _a in await store.unrouted(["audit"], 100)] == ["store"]
        assert len(await store.unrouted([], 2)) == 2
        assert await store.unrouted(["store", "audit"], 100) == []
        assert kyc.sink == "kyc"


class TestPrune:
    async def test_old_delivered_rows_and_events_go(self, store: Store) -> None:
        """Delivered rows and their events older than the cutoff are pruned; failed ones stay."""

        from drgreen_poller.store import AttemptRecord

        old, later = NOW, NOW + timedelta(days=40)
        await store.commit_poll("main", "active_orders", [approved()], now=old, next_due_at=0)
        client = Observation(
            Resource("client", "c"), {}, None, changes=[Change("client.created", {})]
        )
        await store.commit_events("main", [client], now=old)
        rows = (await store.settle([], old, ROOMS)).claimed
        done = [
            AttemptRecord(
                delivery_id=row.id,
                attempt=1,
                started_at=old,
                duration_ms=1.0,
                ok=row.sink != "kyc",
                status=204,
                error_class=None,
                excerpt=None,
                state=DeliveryState.DELIVERED if row.sink != "kyc" else DeliveryState.FAILED,
            )
            for row in rows
        ]
        await store.settle(done, old, {})
        assert await store.prune(later - timedelta(days=30)) == (3, 1)
        assert [e["type"] for e in await store.events(limit=0)] == ["client.created"]
        assert [(r.sink, r.state) for r in await store.deliveries()] == [("kyc", "failed")]
