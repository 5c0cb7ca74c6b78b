"""The delivery loop across sinks: a receiver that hangs keeps its own rows, not other sinks';
a removed sink's rows fail at once; a file sink's lines are fsynced (by the sink that wrote
them, even across a reload) before they are recorded delivered."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig
from drgreen_poller.config_sinks import FileSinkConfig
from drgreen_poller.delivery import CLAIM_AHEAD, DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.sinks import FileSink, Outcome, Sink
from drgreen_poller.store import UNROUTED, Observation, SinkRoute, Store
from tests.fakes import GatedSink
from tests.waiting import eventually


def _observations(kind: str, count: int, event_type: str) -> list[Observation]:
    return [
        Observation(Resource(kind, f"{kind}-{n}"), {}, None, changes=[Change(event_type, {})])
        for n in range(count)
    ]


@dataclass
class TwoSinks:
    """Sink ``slow`` takes orders and hangs until released; ``quick`` takes clients at once."""

    clock: FakeClock
    store: Store
    slow: GatedSink
    quick: GatedSink
    journal: list[str]  # which sink began each attempt, in order

    def worker(self, concurrency: int) -> DeliveryWorker:
        sinks = {"slow": self.slow, "quick": self.quick}
        config = DeliveryConfig(concurrency=concurrency)
        return DeliveryWorker(self.store, sinks, config, self.clock, random.Random(0))

    async def commit(self, observations: list[Observation]) -> None:
        await self.store.commit_events("shop", observations, now=self.clock.now())


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[TwoSinks]:
    routes = [SinkRoute("slow", ("order.*",)), SinkRoute("quick", ("client.*",))]
    store = await Store.open(tmp_path / "s.db", sinks=routes)
    try:
        journal: list[str] = []
        slow = GatedSink("slow", journal=journal)
        quick = GatedSink("quick", gated=False, journal=journal)
        yield TwoSinks(FakeClock(), store, slow, quick, journal)
    finally:
        await store.close()


async def _run_until(
    worker: DeliveryWorker, slow: GatedSink, check: object, *, releases: int = 0
) -> list[str]:
    """Run ``worker`` until ``check`` holds, releasing ``releases`` of ``slow``'s attempts once
    one hangs; then stop it, letting every hanging attempt end. Returns the
    sinks' journal as it was when ``check`` held."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_s=1))
    try:
        await eventually(lambda: slow.waiting >= 1, task=task)
        for _ in range(releases):
            slow.release()
        await eventually(check, task=task)  # type: ignore[arg-type]  # a plain check callable
        return list(slow.journal)
    finally:
        stop.set()
        for _ in range(slow.waiting + 64):
            slow.release()
        await task


class TestSlots:
    async def test_a_hanging_sink_does_not_take_every_slot(self, two: TwoSinks) -> None:
        """While another sink has rows waiting, each slot goes to the sink with the fewest
        attempts under way: a hanging sink's rows claimed first do not take them all."""
        await two.commit(_observations("order", 6, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        worker = two.worker(concurrency=2)
        began = await _run_until(worker, two.slow, lambda: two.quick.delivered == 2)
        assert began[:3] == ["slow", "quick", "quick"]

    async def test_a_hanging_sink_keeps_its_own_rows_only(self, two: TwoSinks) -> None:
        """A hanging sink with more rows due than it may claim ahead does not keep another
        sink's later rows from being claimed: they start in the next freed slot."""
        await two.commit(_observations("order", CLAIM_AHEAD * 3, "order.paid"))
        await two.commit(_observations("client", 1, "client.created"))
        worker = two.worker(concurrency=1)
        began = await _run_until(worker, two.slow, lambda: two.quick.delivered == 1, releases=1)
        assert began[:2] == ["slow", "quick"]  # its second row waits behind the quick sink's


class TestClaim:
    async def test_a_sink_without_room_is_not_claimed(self, two: TwoSinks) -> None:
        """A claim takes the due rows of the sinks given room only, even when another sink's
        rows fell due first."""
        await two.commit(_observations("order", 5, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        settled = await two.store.settle([], two.clock.now(), {"quick": 10})
        assert [row.sink for row in settled.claimed] == ["quick", "quick"]

    async def test_each_sink_is_claimed_up_to_its_own_room(self, two: TwoSinks) -> None:
        """Each sink is claimed for up to its own room, so a sink with many rows due first does
        not take another's share; the rows come back in due order."""
        await two.commit(_observations("order", 5, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        settled = await two.store.settle([], two.clock.now(), {"slow": 2, "quick": 10})
        assert [row.sink for row in settled.claimed] == ["slow", "slow", "quick", "quick"]
        assert settled.next_attempt_at is not None  # quick got fewer than its room


class TestRemovedSink:
    async def test_rows_of_a_sink_removed_by_a_reload_fail_at_once(self, two: TwoSinks) -> None:
        """After a reload removes a sink, its pending rows (retries due later included) fail
        with that reason and one logged attempt each; the other sink's rows are delivered."""
        await two.commit(_observations("order", 2, "order.paid"))
        await two.commit(_observations("client", 1, "client.created"))
        outcomes: list[tuple[str, str]] = []
        worker = DeliveryWorker(
            two.store, {"slow": two.slow, "quick": two.quick}, DeliveryConfig(), two.clock,
            random.Random(0), on_attempt=lambda sink, outcome: outcomes.append((sink, outcome)),
        )  # fmt: skip
        worker.sinks = {"quick": two.quick}  # what a reload that drops "slow" does
        await worker.run_once()
        rows = {row.sink: row for row in await two.store.deliveries(limit=10)}
        assert (rows["slow"].state, rows["slow"].last_outcome) == ("failed", UNROUTED)
        assert rows["quick"].state == "delivered"
        [attempt] = await two.store.attempts(rows["slow"].id)
        assert (attempt["ok"], attempt["error_class"]) == (0, UNROUTED)
        assert sorted(outcomes) == [("quick", "delivered"), ("slow", "failed"), ("slow", "failed")]
        assert two.slow.started == []


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
