"""The monitoring tests' ``rig`` fixture (``tests.monitoring.rig.Rig``), built on a fake clock
and closed after each test."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.monitoring import (
    HealthInputs,
    Metrics,
    build_app,
)
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.store import SinkRoute, Store
from drgreen_poller.tiers import TIERS
from tests.fakes import WebhookReceiver, start
from tests.monitoring.rig import HOUR, SECRET, Rig, runner_for


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The rig for one test: holder ``shop`` in the sandbox, sink ``store`` at a receiver."""
    clock = FakeClock()
    hook = WebhookReceiver()
    receiver = await start(hook.app)
    store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("store", ("*",))])
    metrics = Metrics()
    delivery = DeliveryConfig(retry_schedule_s=(0.0, 60.0), timeout_s=5)
    sink = WebhookSink(
        WebhookSinkConfig(
            "store", url=str(receiver.make_url("/e")), secrets=(Secret(SECRET, "t"),)
        ),
        delivery,
    )
    worker = DeliveryWorker(
        store, {"store": sink}, delivery, clock, random.Random(1),
        on_attempt=metrics.delivery_attempted,
    )  # fmt: skip
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        holder = box.state.create_holder("shop")
        runner = runner_for(session, box.base_url, holder.credentials, clock, store, metrics)
        inputs = HealthInputs(
            ["shop"], dict.fromkeys(TIERS, HOUR), clock.now().timestamp(), ["store"]
        )
        judged = [inputs]
        app = await start(build_app(store, metrics, lambda: judged[0], clock))
        try:
            url = str(app.make_url(""))
            yield Rig(clock, box, store, metrics, runner, hook, worker, session, url, judged)
        finally:
            await app.close()
            await sink.close()
            await store.close()
            await receiver.close()
