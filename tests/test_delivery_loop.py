"""The delivery worker's running loop: crash leftovers delivered on start, woken by new rows,
stopping (rows claimed ahead given back, an attempt past the grace cut), the concurrency limit
and a reload lowering it, batched writes and their wait, and no spinning when every slot is busy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from aiohttp import web

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import BATCH_WAIT_S, DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.sinks import Sink, WebhookSink
from drgreen_poller.store import (
    AttemptRecord,
    Observation,
    Settled,
    SinkRoute,
    Store,
)
from tests.delivery_bench import (
    ROOMS,
    SECRET,
    Bench,
    all_delivered,
    delivered_count,
    delivered_is,
)
from tests.fakes import GatedSink, WebhookReceiver, start
from tests.waiting import eventually

REAL = SystemClock()


class TestLoop:
    async def test_crash_leftovers_are_delivered_on_start(self, bench: Bench) -> None:
        """Rows left 'delivering' by a crash go back to pending and are delivered."""
        await bench.emit("o-1", "order.approved")
        settled = await bench.store.settle([], bench.clock.now(), ROOMS)  # then the process died
        claimed = settled.claimed
        assert await bench.states() == ["delivering"]
        stop = asyncio.Event()
        task = asyncio.create_task(bench.worker.run(stop, grace_s=1))
        await eventually(lambda: len(bench.hook.accepted()) == 1, step_s=0.005)
        stop.set()
        await task
        assert await bench.states() == ["delivered"]
        assert bench.hook.accepted()[0].id == claimed[0].event_id

    async def test_woken_at_once_by_new_rows(self, bench: Bench) -> None:
        """A new event is delivered without waiting for the next check (the clock never moves)."""
        stop = asyncio.Event()
        task = asyncio.create_task(bench.worker.run(stop, grace_s=1))
        await eventually(
            lambda: bench.clock.sleepers > 0, step_s=0.005
        )  # idle, asleep on the fake clock
        await bench.emit("o-1", "order.created")
        bench.worker.wake()
        await eventually(lambda: len(bench.hook.accepted()) == 1, step_s=0.005)
        stop.set()
        await task

    async def test_stop_gives_back_rows_claimed_ahead(self, bench: Bench) -> None:
        """Rows claimed ahead but never attempted are pending again after a stop, not stuck
        ``delivering``; only the attempt cut by the stop is left for the next start."""
        bench.hook.hang_next = 4  # the four slots hang; the rest wait in the worker's queue
        for number in range(10):
            await bench.emit(f"o-{number}", "order.created")
        stop = asyncio.Event()
        task = asyncio.create_task(bench.worker.run(stop, grace_s=0.1))
        await eventually(lambda: len(bench.hook.received) == 4, step_s=0.005)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert sorted(await bench.states()) == ["delivering"] * 4 + ["pending"] * 6
        assert len(bench.hook.received) == 4

    async def test_stop_drains_then_cancels(self, bench: Bench) -> None:
        """On stop, an attempt outliving the grace (0.2 s) is cancelled; it is redone next start."""
        bench.hook.hang_next = 1
        await bench.emit("o-1", "order.created")
        stop = asyncio.Event()
        task = asyncio.create_task(bench.worker.run(stop, grace_s=0.2))
        await eventually(lambda: len(bench.hook.received) == 1, step_s=0.005)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert await bench.states() == ["delivering"]
        assert await bench.store.reset_delivering(bench.clock.now()) == 1


class TestNoSpin:
    async def test_full_worker_waits_for_a_slot(self, bench: Bench) -> None:
        """With every slot busy, wake-ups do not make the loop spin; it waits for a finish."""
        bench.hook.hang_next = 1
        worker = CountingWorker(
            bench.store,
            {"store": bench.sink},
            DeliveryConfig(concurrency=1),
            bench.clock,
            random.Random(0),
        )
        await bench.emit("o-1", "order.created")
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=0.1))
        await eventually(lambda: len(bench.hook.received) == 1, step_s=0.005)  # the one slot hangs
        await bench.emit("o-2", "order.created")
        for _ in range(20):
            worker.wake()
            await REAL.sleep(0.01)
        assert worker.fills <= 3
        stop.set()
        await task


class CountingWorker(DeliveryWorker):
    """The real worker, counting how often its loop looks for work."""

    fills = 0

    async def _turn(self, *, claim: bool = True) -> float | None:
        self.fills += 1
        return await super()._turn(claim=claim)


class TestConcurrency:
    async def test_in_flight_never_exceeds_the_limit(self, tmp_path: Path) -> None:
        """With concurrency 4, a receiver never has more than 4 requests open at once."""
        gate, in_flight, peak = asyncio.Event(), [0], [0]

        async def slow(request: web.Request) -> web.Response:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await gate.wait()
            in_flight[0] -= 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/{tail:.*}", slow)
        server = await start(app)
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("store", ("*",))])
        config = WebhookSinkConfig(
            name="store",
            url=str(server.make_url("/")),
            secrets=(Secret(SECRET, "t"),),
        )
        delivery = DeliveryConfig(concurrency=4)
        sinks: dict[str, Sink] = {"store": WebhookSink(config, delivery)}
        worker = DeliveryWorker(store, sinks, delivery, clock, random.Random(0))
        for number in range(20):
            observation = Observation(
                Resource("order", f"o-{number}"), {}, None, changes=[Change("order.created", {})]
            )
            await store.commit_events("shop", [observation], now=clock.now())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        await eventually(lambda: in_flight[0] == 4, step_s=0.005)
        await asyncio.wait([task], timeout=0.1)
        assert peak[0] == 4
        gate.set()
        await eventually(lambda: peak[0] == 4 and in_flight[0] == 0, step_s=0.005)
        await eventually(lambda: all_delivered(store), step_s=0.01)
        stop.set()
        await task
        for sink in sinks.values():
            await sink.close()
        await store.close()
        await server.close()


class TestConcurrencyReload:
    async def test_a_lower_concurrency_holds_from_the_next_attempt(self, tmp_path: Path) -> None:
        """When a reload lowers concurrency from 4 to 1, an ended attempt starts no queued row
        while the attempts under way still fill the new limit."""
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("s", ("*",))])
        sink = GatedSink("s")
        config = DeliveryConfig(concurrency=4)
        worker = DeliveryWorker(store, {"s": sink}, config, clock, random.Random(0))
        observations = [
            Observation(Resource("order", f"o-{n}"), {}, None, changes=[Change("order.paid", {})])
            for n in range(10)
        ]
        await store.commit_events("shop", observations, now=clock.now())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        try:
            await eventually(lambda: sink.waiting == 4, task=task)
            worker.config = replace(config, concurrency=1)  # what a reload does
            for _ in range(3):
                sink.release()
            await eventually(lambda: sink.delivered == 3, task=task)
            assert sink.waiting == 1
        finally:
            stop.set()
            for _ in range(sink.waiting):
                sink.release()
            await task
            await store.close()


class SettleCountingStore(Store):
    """The real store, counting the delivery loop's writes."""

    settles = 0

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled:
        self.settles += 1
        return await super().settle(records, now, rooms)


class TestBatchedWrites:
    async def test_one_write_covers_many_attempts(self, tmp_path: Path) -> None:
        """Draining a backlog takes far fewer transactions than events: each turn records
        every attempt that ended and claims a batch ahead of the free slots."""
        hook = WebhookReceiver()
        server = await start(hook.app)
        store = await SettleCountingStore.open(tmp_path / "s.db", sinks=[SinkRoute("s", ("*",))])
        config = WebhookSinkConfig(
            name="s", url=str(server.make_url("/")), secrets=(Secret(SECRET, "t"),)
        )
        delivery = DeliveryConfig(concurrency=4)
        sink = WebhookSink(config, delivery)
        clock = FakeClock()
        worker = DeliveryWorker(store, {"s": sink}, delivery, clock, random.Random(0))
        observations = [
            Observation(Resource("order", f"o-{n}"), {}, None, changes=[Change("order.paid", {})])
            for n in range(60)
        ]
        await store.commit_events("shop", observations, now=clock.now())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        await eventually(lambda: all_delivered(store), step_s=0.01)
        stop.set()
        await task
        assert len(hook.accepted()) == 60
        assert store.settles < 60 / 2
        await sink.close()
        await store.close()
        await server.close()


class TestBatchWait:
    async def test_an_ended_attempt_waits_at_most_batch_wait_s(self, tmp_path: Path) -> None:
        """With every slot busy and rows queued, an ended attempt waits for others to share
        its write, but is recorded once BATCH_WAIT_S has passed, however slow the receiver."""
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("s", ("*",))])
        sink = GatedSink("s")
        worker = DeliveryWorker(
            store, {"s": sink}, DeliveryConfig(concurrency=1), clock, random.Random(0)
        )
        observations = [
            Observation(Resource("order", f"o-{n}"), {}, None, changes=[Change("order.paid", {})])
            for n in range(5)
        ]
        await store.commit_events("shop", observations, now=clock.now())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        try:
            await eventually(lambda: sink.waiting == 1, task=task)
            sink.release()  # the first attempt ends; the second starts from the queue
            await eventually(lambda: sink.delivered == 1 and clock.sleepers == 1, task=task)
            assert await delivered_count(store) == 0  # held back: every slot busy, rows queued
            clock.advance(BATCH_WAIT_S)
            await eventually(lambda: delivered_is(store, 1), task=task)
        finally:
            stop.set()
            for _ in range(4):
                sink.release()
            await task
            await store.close()
