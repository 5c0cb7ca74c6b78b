"""Per-resource order in delivery: a resource's events arrive in sequence while one is retried,
other resources pass meanwhile, a failed event stops blocking, the running loop keeps the order
through batched claims, and a replayed event is never in flight twice.
"""

from __future__ import annotations

import asyncio

from drgreen_poller.store import (
    AttemptRecord,
    DeliveryState,
)
from tests.delivery_bench import (
    ROOMS,
    SCHEDULE,
    Bench,
    advance_to_next,
    no_delivering,
)
from tests.waiting import eventually


class TestOrdering:
    async def test_one_resource_in_order_while_an_event_is_retried(self, bench: Bench) -> None:
        """Events 1..5 of an order arrive in order though 2 is retried; others pass meanwhile."""
        await bench.emit("o-1", "order.created")
        await bench.worker.run_once()
        await bench.emit("o-1", "order.approved", "order.paid", "order.shipped", "order.delivered")
        bench.hook.fail_next = 1
        assert await bench.worker.run_once() == 1  # only event 2 is eligible, and it fails
        assert await bench.worker.run_once() == 0  # 3..5 wait behind it
        await bench.emit("o-2", "order.created")  # another order is not held up
        assert await bench.worker.run_once() == 1
        assert bench.hook.received[-1].event["resource"]["id"] == "o-2"
        await advance_to_next(bench)
        while await bench.worker.run_once():
            pass
        mine = [d.event for d in bench.hook.accepted() if d.event["resource"]["id"] == "o-1"]
        first = mine[0]["sequence"]
        assert [e["sequence"] - first for e in mine] == [0, 1, 2, 3, 4]

    async def test_failed_event_stops_blocking(self, bench: Bench) -> None:
        """Once an earlier event is failed for good, later ones of the resource go on."""
        bench.hook.fail_next = 6
        await bench.emit("o-1", "order.approved", "order.paid")
        for attempt in range(6):
            await bench.worker.run_once()
            if attempt < 5:
                await advance_to_next(bench)
        assert await bench.worker.run_once() == 1
        assert await bench.states() == ["failed", "delivered"]


class TestRunLoopOrdering:
    async def test_batched_claims_keep_each_resource_in_order(self, bench: Bench) -> None:
        """Through the running loop (claims batched and ahead of free slots, some attempts
        failing and retried), every order's events arrive in sequence order."""
        for number in range(8):
            await bench.emit(f"o-{number}", "order.created", "order.approved", "order.paid")
        bench.hook.fail_next = 3
        stop = asyncio.Event()
        task = asyncio.create_task(bench.worker.run(stop, grace_s=1))
        # Three first tries fail; each holds its order's two later events back.
        await eventually(lambda: len(bench.hook.accepted()) == 15, step_s=0.005)
        await eventually(lambda: no_delivering(bench.store), step_s=0.01)
        bench.clock.advance(SCHEDULE[1] * 1.2 + 1)  # the failed ones fall due again
        await eventually(lambda: len(bench.hook.accepted()) == 24, step_s=0.005)
        stop.set()
        await task
        by_order: dict[str, list[int]] = {}
        for delivery in bench.hook.accepted():
            by_order.setdefault(delivery.event["resource"]["id"], []).append(
                delivery.event["sequence"]
            )
        assert len(by_order) == 8
        assert all(seqs == sorted(seqs) and len(set(seqs)) == 3 for seqs in by_order.values())
        assert await bench.states() == ["delivered"] * 24


class TestReplay:
    async def test_a_replayed_event_is_not_in_flight_twice(self, bench: Bench) -> None:
        """While the original delivery of an event is in flight, its replay waits."""
        await bench.emit("o-1", "order.created")
        [claimed] = (await bench.store.settle([], bench.clock.now(), ROOMS)).claimed
        since = bench.clock.now()
        assert await bench.store.replay("store", ["*"], since, bench.clock.now()) == 1
        assert (await bench.store.settle([], bench.clock.now(), ROOMS)).claimed == []
        done = AttemptRecord(
            delivery_id=claimed.id,
            attempt=1,
            started_at=bench.clock.now(),
            duration_ms=1.0,
            ok=True,
            status=204,
            error_class=None,
            excerpt=None,
            state=DeliveryState.DELIVERED,
        )
        await bench.store.settle([done], bench.clock.now(), {})  # the original finishes
        [replayed] = (await bench.store.settle([], bench.clock.now(), ROOMS)).claimed
        assert replayed.event_id == claimed.event_id
        assert replayed.id != claimed.id
