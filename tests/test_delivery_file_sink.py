"""The delivery worker with a file sink: lines written and fsynced before their rows are recorded
delivered, the sink that wrote a line synced even when a reload replaced it, and rows of a sink
no longer configured failing at once."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig
from drgreen_poller.config_sinks import FileSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.sinks import FileSink, Outcome, Sink
from drgreen_poller.store import Observation, SinkRoute, Store


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
