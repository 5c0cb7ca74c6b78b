"""The delivery tests' bench: a real SQLite store routed to one webhook sink ``store`` in front
of a verifying receiver on loopback, and a delivery worker on a fake clock.

Owns ``Bench`` (opened by ``open_bench``; conftest's ``bench`` fixture serves it) and the reads
the delivery tests share. It asserts nothing itself.
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.store import Observation, SinkRoute, Store
from tests.fakes import WebhookReceiver, start

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
SCHEDULE = (0.0, 60.0, 600.0, 3600.0, 21600.0, 57600.0)
ROOMS = {"store": 10}  # what a claim may take of the bench's one sink


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


@asynccontextmanager
async def open_bench(tmp_path: Path) -> AsyncIterator[Bench]:
    """A ``Bench`` in ``tmp_path`` (retry schedule ``SCHEDULE``, concurrency 4); closed after."""
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


async def advance_to_next(bench: Bench) -> None:
    """Move the fake clock to when the next retry (a pending row already attempted) is due."""
    rows = await bench.store.deliveries(state="pending", limit=1000)
    due = min(row.next_attempt_at for row in rows if row.attempts > 0)
    bench.clock.advance(max(0.0, due - bench.clock.now().timestamp()) + 0.001)


async def delivered_count(store: Store) -> int:
    """How many delivery rows are ``delivered``."""
    return sum(row.state == "delivered" for row in await store.deliveries(limit=1000))


async def delivered_is(store: Store, count: int) -> bool:
    return await delivered_count(store) == count


async def no_delivering(store: Store) -> bool:
    """Whether no row is ``delivering`` (no attempt under way or claimed ahead)."""
    return all(row.state != "delivering" for row in await store.deliveries(limit=1000))


async def all_delivered(store: Store) -> bool:
    return all(row.state == "delivered" for row in await store.deliveries(limit=1000))
