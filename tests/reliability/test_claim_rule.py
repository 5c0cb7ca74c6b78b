"""Property tests of the outbox's claim rule against a plain Python model of it (issue 9, point 3).

The claim is one SQL statement (``store/outbox.py``); the model below is the rule as design.md
§4 states it, written the slow and obvious way: due pending rows whose earlier events (same sink
and resource) are not pending or in flight, none of whose (sink, event) is in flight, at most
``limit`` of them in due order (``next_attempt_at``, then id), then one per (sink, event). Random
tables (replays leaving several rows of one event for one sink, several sinks, equal due times)
go through claims, recorded attempts, releases and replays on a real SQLite file; every claim,
every "next due" answer and every row's state must be the model's.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drgreen_poller.store import AttemptRecord, DeliveryState, DueDelivery, Store
from tests.reliability.properties import PROPERTY_ON_DISK, PROPERTY_TIMEOUT_S

NOW = datetime(2026, 11, 30, 9, 0, 0, 250000, tzinfo=UTC)
SINKS = ("store", "audit")
RESOURCES = ("order:a", "order:b", "client:c")
# Due times as offsets from now, on a millisecond grid: equal ones are common, and each stays
# distinct once written as JSON (15 significant digits: 10 µs at today's epoch).
OFFSETS = st.sampled_from([-2.0, -1.0, -0.001, 0.0, 0.0, 0.001, 1.0, 5.0])
STATES = st.sampled_from(["pending", "pending", "pending", "delivering", "delivered", "failed"])
OUTCOMES = st.sampled_from(["delivered", "retry", "failed", "released"])


@dataclass
class Row:
    """A delivery row as the model keeps it."""

    id: int
    event: str
    sink: str
    resource: str
    sequence: int
    state: str
    next_at: float
    attempts: int = 0


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    resource: str
    sequence: int
    body: str


def model_claim(
    rows: dict[int, Row], now_s: float, rooms: dict[str, int]
) -> tuple[list[int], float | None]:
    """The claim rule, row by row, up to ``rooms[sink]`` rows of each sink; marks the chosen
    rows ``delivering`` in ``rows``."""
    table = list(rows.values())

    def held_back(r: Row) -> bool:
        earlier = any(
            p.sink == r.sink and p.resource == r.resource and p.sequence < r.sequence
            and p.state in ("pending", "delivering")
            for p in table
        )  # fmt: skip
        in_flight = any(
            q.sink == r.sink and q.event == r.event and q.state == "delivering" for q in table
        )
        return earlier or in_flight

    claiming = {sink: room for sink, room in rooms.items() if room > 0}
    chosen: list[Row] = []
    short = False
    for sink, room in claiming.items():
        due = [
            r for r in table
            if r.sink == sink and r.state == "pending" and r.next_at <= now_s and not held_back(r)
        ]  # fmt: skip
        mine: list[Row] = []
        for row in sorted(due, key=lambda r: (r.next_at, r.id))[:room]:
            if all(c.event != row.event for c in mine):
                mine.append(row)
        short = short or len(mine) < room
        chosen.extend(mine)
    for row in chosen:
        row.state = "delivering"
    pending = [
        r.next_at
        for r in table
        if r.state == "pending" and r.sink in claiming and r.next_at > now_s
    ]
    upcoming = (min(pending) if pending else None) if short else None
    return [r.id for r in sorted(chosen, key=lambda r: (r.next_at, r.id))], upcoming


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[Event], list[tuple[int, str, str, float]]]:
    """Events of a few resources (sequences rising per resource) and delivery rows of them:
    (event index, sink, state, due offset); several rows of one event for one sink happen."""
    resources = draw(st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=8))
    events, sequences = [], dict.fromkeys(RESOURCES, 0)
    for n, resource in enumerate(resources):
        sequences[resource] += 1
        body = f'{{"id": "evt_{n}", "note": "é \\u2028 {n}"}}'
        events.append(Event(f"evt_{n}", "order.paid", resource, sequences[resource], body))
    row = st.tuples(st.integers(0, len(events) - 1), st.sampled_from(SINKS), STATES, OFFSETS)
    return events, draw(st.lists(row, min_size=1, max_size=16))


async def _insert(
    store: Store, events: list[Event], rows: list[tuple[int, str, str, float]]
) -> dict[int, Row]:
    """Write the events and delivery rows as they are; the model's copy of the rows."""
    stamp = "2026-11-30T09:00:00.000Z"
    now_s = NOW.timestamp()

    def work(conn: Any) -> list[int]:
        conn.executemany(
            "INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)"
            " VALUES (?, ?, 'main', ?, ?, ?, ?)",
            [(e.id, e.type, e.resource, e.sequence, stamp, e.body) for e in events],
        )
        ids = []
        for index, sink, state, offset in rows:
            e = events[index]
            cursor = conn.execute(
                "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
                " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (e.id, sink, state, f"main/{e.resource}", e.sequence, now_s + offset, stamp, stamp),
            )
            ids.append(cursor.lastrowid)
        return ids

    ids = await store._atomically(work)
    return {
        i: Row(i, events[index].id, sink, events[index].resource, events[index].sequence, state,
               now_s + offset)
        for i, (index, sink, state, offset) in zip(ids, rows, strict=True)
    }  # fmt: skip


async def _check_rows(store: Store, model: dict[int, Row]) -> None:
    """Every row's state, due time and attempt count are the model's."""
    found = await store._rows("SELECT id, state, next_attempt_at, attempts FROM deliveries")
    assert {r[0]: (r[1], r[2], r[3]) for r in found} == {
        r.id: (r.state, r.next_at, r.attempts) for r in model.values()
    }


def _check_claimed(
    claimed: list[DueDelivery], expected: list[int], model: dict[int, Row], events: dict[str, Event]
) -> None:
    """The claim hands over the model's rows, in due order, each with its event exactly."""
    assert [row.id for row in claimed] == expected
    for row in claimed:
        event = events[row.event_id]
        assert (row.event_id, row.sink, row.attempts) == (
            model[row.id].event, model[row.id].sink, model[row.id].attempts,
        )  # fmt: skip
        assert (row.event_type, row.body) == (event.type, event.body)


def _outcomes(
    claimed: list[DueDelivery], choices: list[str], model: dict[int, Row], now: datetime
) -> tuple[list[AttemptRecord], list[int]]:
    """Attempt records (and releases) for ``claimed``, applied to the model as well."""
    records, released = [], []
    for row, choice in zip(claimed, choices, strict=False):
        kept = model[row.id]
        if choice == "released":
            released.append(row.id)
            kept.state = "pending"
            continue
        state = {
            "delivered": DeliveryState.DELIVERED,
            "retry": DeliveryState.PENDING,
            "failed": DeliveryState.FAILED,
        }[choice]
        next_at = now.timestamp() + 1.5 if state == "pending" else None
        records.append(
            AttemptRecord(row.id, row.attempts + 1, now, 1.0, state == "delivered",
                          204 if state == "delivered" else 503, None, None, state, next_at)
        )  # fmt: skip
        kept.state, kept.attempts = state, row.attempts + 1
        kept.next_at = next_at if next_at is not None else kept.next_at
    return records, released


async def _replay(
    store: Store, sink: str, model: dict[int, Row], events: list[Event], now: datetime
) -> None:
    """``deliveries replay``: a new pending row per event for ``sink``, due now."""
    await store.replay(sink, ["*"], NOW - timedelta(days=1), now)
    found = await store._rows("SELECT id, event_id FROM deliveries WHERE id > ?", [max(model)])
    by_id = {e.id: e for e in events}
    for delivery_id, event_id in found:
        e = by_id[event_id]
        model[delivery_id] = Row(
            delivery_id, e.id, sink, e.resource, e.sequence, "pending", now.timestamp()
        )


async def _live(directory: Path, data: st.DataObject) -> None:
    events, rows = data.draw(tables(), label="table")
    by_id = {e.id: e for e in events}
    store = await Store.open(directory / "state.db", sinks=())
    try:
        model = await _insert(store, events, rows)
        now = NOW
        for _ in range(data.draw(st.integers(1, 6), label="turns")):
            rooms = {sink: data.draw(st.integers(0, 6), label=f"room {sink}") for sink in SINKS}
            step = data.draw(st.sampled_from(["claim", "settle", "replay"]), label="step")
            if step == "replay":
                await _replay(store, data.draw(st.sampled_from(SINKS)), model, events, now)
                continue
            expected, upcoming = model_claim(model, now.timestamp(), rooms)
            if step == "claim":
                claimed = (await store.settle([], now, rooms)).claimed
            else:
                settled = await store.settle([], now, rooms)
                claimed = settled.claimed
                assert settled.next_attempt_at == upcoming
            _check_claimed(claimed, expected, model, by_id)
            await _check_rows(store, model)
            choices = data.draw(st.lists(OUTCOMES, min_size=len(claimed), max_size=len(claimed)))
            now += timedelta(seconds=data.draw(st.sampled_from([0.0, 0.001, 1.0, 2.0])))
            records, released = _outcomes(claimed, choices, model, now)
            await store.release(released, now)
            # Recorded and the next claim in one transaction, as the delivery loop does.
            rooms = {sink: data.draw(st.integers(0, 6), label=f"next {sink}") for sink in SINKS}
            expected, upcoming = model_claim(model, now.timestamp(), rooms)
            settled = await store.settle(records, now, rooms)
            _check_claimed(settled.claimed, expected, model, by_id)
            assert settled.next_attempt_at == upcoming
            await _check_rows(store, model)
    finally:
        await store.close()


class TestClaimRule:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(data=st.data())
    def test_claims_follow_the_model(self, data: st.DataObject) -> None:
        """Every claim, whatever the table, takes exactly the rows the written rule names, in
        due order, and answers when the next pending row falls due exactly as the rule does."""
        with tempfile.TemporaryDirectory() as directory:
            asyncio.run(_live(Path(directory), data))

    async def test_the_earliest_copy_of_a_replayed_event_is_kept(self, tmp_path: Path) -> None:
        """Of two due rows of one event for one sink, the claim takes the one due first, even
        when they are a microsecond apart and the later one has the lower id."""
        events = [Event("evt_0", "order.paid", "order:a", 1, '{"id": "evt_0"}')]
        store = await Store.open(tmp_path / "state.db", sinks=())
        try:
            model = await _insert(store, events, [(0, "store", "pending", -0.000001),
                                                  (0, "store", "pending", -0.000002)])  # fmt: skip
            expected, _ = model_claim(model, NOW.timestamp(), {"store": 10})
            settled = await store.settle([], NOW, {"store": 10})
            assert [row.id for row in settled.claimed] == expected == [max(model)]
        finally:
            await store.close()
