"""The delivery worker with real receivers and a fake clock: retries, ordering, crashes, waking."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import FileSinkConfig, WebhookSinkConfig
from drgreen_poller.delivery import BATCH_WAIT_S, RETRY_AFTER_MAX_S, DeliveryWorker, retry_delay
from drgreen_poller.events import Resource
from drgreen_poller.sinks import FileSink, Outcome, Sink, WebhookSink
from drgreen_poller.store import (
    AttemptRecord,
    DeliveryState,
    Observation,
    Settled,
    SinkRoute,
    Store,
)
from tests.fakes import GatedSink, WebhookReceiver, start
from tests.waiting import eventually

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
REAL = SystemClock()
SCHEDULE = (0.0, 60.0, 600.0, 3600.0, 21600.0, 57600.0)
ROOMS = {"store": 10}  # what a claim may take of the bench's one sink


class TestRetryDelay:
    @pytest.mark.parametrize(("made", "nominal"), [(1, 60), (2, 600), (3, 3600), (5, 57600)])
    def test_schedule_with_jitter(self, made: int, nominal: float) -> None:
        """After the n-th failure the next attempt waits schedule[n] ± 20 %."""
        rng = random.Random(made)
        draws = [retry_delay(made, SCHEDULE, None, rng) for _ in range(500)]
        assert all(d is not None and nominal * 0.8 <= d <= nominal * 1.2 for d in draws)

    def test_gives_up_after_the_last(self) -> None:
        """After six failed attempts there is no next one."""
        assert retry_delay(6, SCHEDULE, None, random.Random(0)) is None

    def test_retry_after_lengthens_within_bounds(self) -> None:
        """Retry-After can only lengthen a delay, and at most to six hours."""
        rng = random.Random(0)
        assert retry_delay(1, SCHEDULE, 3000, rng) == 3000
        assert retry_delay(1, SCHEDULE, 10 * 86400, rng) == RETRY_AFTER_MAX_S
        short = retry_delay(1, SCHEDULE, 1, rng)
        assert short is not None
        assert short >= 48


@dataclass
class Bench:
    clock: FakeClock
    store: Store
    hook: WebhookReceiver
    worker: DeliveryWorker
    sink: WebhookSink

    async def emit(self, resource_id: str, *types: str) -> None:
        """Record events for one order, as a poll would."""
        observation = Observation(
            Resource("order", resource_id), {}, None, changes=[Change(t, {}) for t in types]
        )
        await self.store.commit_events("shop", [observation], now=self.clock.now())

    async def states(self) -> list[str]:
        return [row.state for row in reversed(await self.store.deliveries(limit=1000))]

    async def attempts_of(self, index: int = 0) -> list[dict[str, object]]:
        rows = list(reversed(await self.store.deliveries(limit=1000)))
        return await self.store.attempts(rows[index].id)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    clock = FakeClock()
    hook = WebhookReceiver()
    server = await start(hook.app)
    store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("store", ("*",))])
    config = WebhookSinkConfig(
        name="store",
        url=str(server.make_url("/events")),
        secrets=(Secret(SECRET, "test"),),
        timeout_s=0.5,
    )
    delivery = DeliveryConfig(retry_schedule_s=SCHEDULE, concurrency=4)
    sink = WebhookSink(config, delivery)
    worker = DeliveryWorker(store, {"store": sink}, delivery, clock, random.Random(3))
    try:
        yield Bench(clock, store, hook, worker, sink)
    finally:
        await sink.close()
        await store.close()
        await server.close()


async def _advance_to_next(bench: Bench) -> None:
    """Move the fake clock to when the next retry (a pending row already attempted) is due."""
    rows = await bench.store.deliveries(state="pending", limit=1000)
    due = min(row.next_attempt_at for row in rows if row.attempts > 0)
    bench.clock.advance(max(0.0, due - bench.clock.now().timestamp()) + 0.001)


class TestRetries:
    async def test_three_failures_then_delivered(self, bench: Bench) -> None:
        """Failing 3 times then 2xx: delivered, 4 attempts logged, one webhook-id throughout."""
        bench.hook.fail_next = 3
        await bench.emit("o-1", "order.approved")
        for _ in range(4):
            assert await bench.worker.run_once() == 1
            if await bench.states() == ["pending"]:
                await _advance_to_next(bench)
        assert await bench.states() == ["delivered"]
        attempts = await bench.attempts_of()
        assert [(a["attempt"], a["ok"], a["status"]) for a in attempts] == [
            (1, 0, 503),
            (2, 0, 503),
            (3, 0, 503),
            (4, 1, 204),
        ]
        assert attempts[0]["response_excerpt"] == "try later"
        assert len({d.id for d in bench.hook.received}) == 1
        stamps = [int(d.headers["webhook-timestamp"]) for d in bench.hook.received]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 4  # each attempt is signed at its own time

    async def test_down_past_the_schedule_then_retry(self, bench: Bench) -> None:
        """A receiver down for all 6 attempts leaves the row failed; requeued, it arrives."""
        bench.hook.fail_next = 6
        await bench.emit("o-1", "order.paid")
        for attempt in range(6):
            await bench.worker.run_once()
            if attempt < 5:
                await _advance_to_next(bench)
        assert await bench.states() == ["failed"]
        assert await bench.worker.run_once() == 0
        assert await bench.store.requeue_failed(bench.clock.now()) == 1
        assert await bench.worker.run_once() == 1
        assert await bench.states() == ["delivered"]
        assert {d.id for d in bench.hook.received} == {bench.hook.received[0].id}
        assert len(bench.hook.received) == 7
        history = await bench.attempts_of()
        assert [a["attempt"] for a in history] == [1, 2, 3, 4, 5, 6, 7]  # nothing overwritten
        assert [a["ok"] for a in history] == [0] * 6 + [1]

    async def test_slow_receiver_times_out_and_is_retried(self, bench: Bench) -> None:
        """A receiver slower than the timeout fails the attempt; the retry gets through."""
        bench.hook.hang_next = 1
        await bench.emit("o-1", "order.shipped")
        await bench.worker.run_once()
        [first] = await bench.attempts_of()
        assert (first["ok"], first["error_class"]) == (0, "timeout")
        await _advance_to_next(bench)
        await bench.worker.run_once()
        assert await bench.states() == ["delivered"]

    async def test_retry_after_is_honoured(self, bench: Bench) -> None:
        """A 429 with Retry-After: 3000 is not retried for 3000 s."""
        bench.hook.fail_next, bench.hook.fail_status, bench.hook.retry_after = 1, 429, "3000"
        await bench.emit("o-1", "order.paid")
        await bench.worker.run_once()
        [row] = await bench.store.deliveries(state="pending")
        assert row.next_attempt_at == pytest.approx(bench.clock.now().timestamp() + 3000)


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
        await _advance_to_next(bench)
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
                await _advance_to_next(bench)
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
        await eventually(lambda: _no_delivering(bench.store), step_s=0.01)
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
        await eventually(lambda: _all_delivered(store), step_s=0.01)
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
            assert await _delivered(store) == 0  # held back: every slot busy, rows queued
            clock.advance(BATCH_WAIT_S)
            await eventually(lambda: _delivered_is(store, 1), task=task)
        finally:
            stop.set()
            for _ in range(4):
                sink.release()
            await task
            await store.close()


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


async def _delivered(store: Store) -> int:
    return sum(row.state == "delivered" for row in await store.deliveries(limit=1000))


async def _delivered_is(store: Store, count: int) -> bool:
    return await _delivered(store) == count


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
        await eventually(lambda: _all_delivered(store), step_s=0.01)
        stop.set()
        await task
        for sink in sinks.values():
            await sink.close()
        await store.close()
        await server.close()


class SyncCountingSink(FileSink):
    """A real file sink that counts its fsyncs."""

    def __init__(self, config: FileSinkConfig) -> None:
        super().__init__(config)
        self.syncs = 0
        self.after_write: Callable[[], None] = lambda: None  # runs once a line is written

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        outcome = await super().deliver(event_id, event_type, body, now)
        self.after_write()
        return outcome

    async def sync(self) -> None:
        self.syncs += 1
        await super().sync()


class TestFileSinkThroughTheWorker:
    async def test_lines_written_before_recorded_delivered(self, tmp_path: Path) -> None:
        """File deliveries are fsynced, then recorded delivered; the file holds each event once."""
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("audit", ("*",))])
        path = tmp_path / "events.jsonl"
        sinks: dict[str, Sink] = {"audit": FileSink(FileSinkConfig(name="audit", path=path))}
        worker = DeliveryWorker(store, sinks, DeliveryConfig(), clock, random.Random(0))
        observation = Observation(
            Resource("order", "o-1"),
            {},
            None,
            changes=[Change("order.created", {}), Change("order.approved", {})],
        )
        await store.commit_events("shop", [observation], now=clock.now())
        while await worker.run_once():
            pass
        assert [r.state for r in await store.deliveries()] == ["delivered", "delivered"]
        lines = path.read_text().splitlines()
        assert len(lines) == 2
        assert '"type":"order.created"' in lines[0]
        await sinks["audit"].close()
        await store.close()

    async def test_the_sink_that_took_the_line_is_synced_after_a_reload(
        self, tmp_path: Path
    ) -> None:
        """A reload replacing a file sink between an attempt and its record still fsyncs the
        sink that wrote the line before the row is recorded delivered."""
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("audit", ("*",))])
        config = FileSinkConfig(name="audit", path=tmp_path / "events.jsonl")
        old, new = SyncCountingSink(config), SyncCountingSink(config)
        worker = DeliveryWorker(store, {"audit": old}, DeliveryConfig(), clock, random.Random(0))
        observation = Observation(Resource("order", "o"), {}, None, changes=[Change("x.y", {})])
        await store.commit_events("shop", [observation], now=clock.now())

        def reload() -> None:
            worker.sinks = {"audit": new}  # what a reload does

        old.after_write = reload  # the reload lands between the attempt and its record
        assert await worker.run_once() == 1
        assert (old.syncs, new.syncs) == (1, 0)
        [row] = await store.deliveries()
        assert row.state == "delivered"
        await old.close()
        await new.close()
        await store.close()

    async def test_unknown_sink_fails_at_once(self, tmp_path: Path) -> None:
        """Rows for a sink no longer in the configuration fail with that reason, no retries."""
        clock = FakeClock()
        store = await Store.open(tmp_path / "s.db", sinks=[SinkRoute("gone", ("*",))])
        worker = DeliveryWorker(store, {}, DeliveryConfig(), clock, random.Random(0))
        observation = Observation(Resource("order", "o"), {}, None, changes=[Change("x.y", {})])
        await store.commit_events("shop", [observation], now=clock.now())
        await worker.run_once()
        [row] = await store.deliveries()
        assert (row.state, row.last_outcome) == ("failed", "sink no longer configured")
        await store.close()


async def _no_delivering(store: Store) -> bool:
    return all(row.state != "delivering" for row in await store.deliveries(limit=1000))


async def _all_delivered(store: Store) -> bool:
    return all(row.state == "delivered" for row in await store.deliveries(limit=1000))


class CountingWorker(DeliveryWorker):
    """The real worker, counting how often its loop looks for work."""

    fills = 0

    async def _turn(self, *, claim: bool = True) -> float | None:
        self.fills += 1
        return await super()._turn(claim=claim)


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
