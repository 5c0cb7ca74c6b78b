"""The canonical log lines share one field scheme: one line per tier run, one per delivery attempt.

A tier run's line (poll_finished, poll_failed, holder_unauthorized, the refused holder's probe
lines, holder_recovered) carries ``holder``, ``tier``, ``outcome`` and ``duration_ms``; a
delivery attempt's line (delivery_attempt_finished, delivery_attempt_failed, delivery_failed)
carries ``sink``, ``event_id``, ``delivery_id``, ``attempt``, ``outcome`` and ``duration_ms``.
A line that schedules another try says when (``retry_in_s``); ``status`` is always an HTTP
status, and ``error_class`` names a failure that had none (a timeout, a refused connection).
Checked with structlog's ``capture_logs`` against a real sandbox and a real webhook receiver.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.scheduler import Timing
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.tiers import TIERS, Tier
from tests.fakes import WebhookReceiver, start

TIER_RUN = {"holder", "tier", "outcome", "duration_ms"}
TIER_RUN_EVENTS = {
    "poll_finished",
    "poll_failed",
    "poll_abandoned",
    "holder_unauthorized",
    "holder_still_unauthorized",
    "holder_probe_failed",
    "holder_recovered",
}
ATTEMPT = {"sink", "event_id", "delivery_id", "attempt", "outcome", "duration_ms"}
ATTEMPT_EVENTS = {"delivery_attempt_finished", "delivery_attempt_failed", "delivery_failed"}
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
TIMING = Timing(interval_s=60, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)


def _only(lines: list[MutableMapping[str, Any]], events: set[str]) -> MutableMapping[str, Any]:
    """The one line of ``events`` among ``lines`` (it fails if there are none or several)."""
    (line,) = [line for line in lines if line["event"] in events]
    return line


@dataclass
class Polling:
    box: LocalSandbox
    clock: FakeClock
    runner: TierRunner

    async def run(self) -> list[MutableMapping[str, Any]]:
        """One run of the active_orders tier; the lines it logged."""
        with capture_logs() as lines:
            await self.runner.run("shop", Tier.ACTIVE_ORDERS)
        return lines

    def advance_past_hold(self) -> None:
        self.clock.advance(3600)


@pytest.fixture
async def polling(tmp_path: Path) -> AsyncIterator[Polling]:
    clock = FakeClock()
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        holder = box.state.create_holder("shop")
        box.state.orders.create("shop")
        store = await Store.open(tmp_path / "state.db", sinks=())
        bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)
        settings = ApiSettings(box.base_url)
        api = ApiClient(session, settings, holder.credentials, clock, bucket=bucket)
        poller = HolderPoller("shop", ["GBR"], api, store, clock, PollSettings())
        runner = TierRunner(
            {"shop": poller}, store, clock, dict.fromkeys(TIERS, TIMING), random.Random(7),
            unauthorized_retry_s=300,
        )  # fmt: skip
        try:
            yield Polling(box, clock, runner)
        finally:
            await store.close()


class TestTierRunLine:
    async def test_a_successful_run(self, polling: Polling) -> None:
        """A run that worked logs one poll_finished line: outcome ok, its counts and duration."""
        line = _only(await polling.run(), TIER_RUN_EVENTS)
        assert line.keys() >= TIER_RUN | {"events", "requests", "records", "first_sync"}
        assert (line["event"], line["log_level"], line["outcome"]) == (
            "poll_finished",
            "info",
            "ok",
        )
        assert (line["holder"], line["tier"], line["records"]) == ("shop", Tier.ACTIVE_ORDERS, 1)

    async def test_a_failed_run(self, polling: Polling) -> None:
        """A failed run logs one poll_failed warning: outcome failed, why, and when it retries."""
        polling.box.state.traffic.add_fault({"kind": "server_error", "status": 503})
        line = _only(await polling.run(), TIER_RUN_EVENTS)
        assert line.keys() >= TIER_RUN | {"error", "error_class", "retry_in_s"}
        assert (line["event"], line["log_level"], line["outcome"]) == (
            "poll_failed",
            "warning",
            "failed",
        )
        assert line["error_class"] == "UpstreamTransient"

    async def test_a_refused_key_and_its_probes(self, polling: Polling) -> None:
        """A refused key, a probe still refused, then one accepted: one line each, same scheme."""
        polling.box.state.revoke_holder_key("shop")
        refused = _only(await polling.run(), TIER_RUN_EVENTS)
        assert refused.keys() >= TIER_RUN | {"status", "error", "retry_in_s"}
        assert (refused["event"], refused["outcome"], refused["status"]) == (
            "holder_unauthorized",
            "unauthorized",
            401,
        )
        polling.advance_past_hold()
        still = _only(await polling.run(), TIER_RUN_EVENTS)
        assert still.keys() >= TIER_RUN | {"error", "retry_in_s"}
        assert (still["event"], still["outcome"]) == ("holder_still_unauthorized", "unauthorized")
        polling.box.state.restore_holder_key("shop")
        polling.advance_past_hold()
        recovered = _only(await polling.run(), TIER_RUN_EVENTS)
        assert recovered.keys() >= TIER_RUN
        assert (recovered["event"], recovered["outcome"]) == ("holder_recovered", "ok")

    async def test_a_run_cut_by_stop(self, polling: Polling) -> None:
        """A run cut short by stop logs one poll_abandoned line: outcome abandoned."""
        polling.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        with capture_logs() as lines:
            running = asyncio.create_task(polling.runner.run("shop", Tier.ACTIVE_ORDERS))
            while not (polling.clock.sleepers or running.done()):  # the sandbox answers slowly
                await asyncio.wait([running], timeout=0.005)
            assert await polling.runner.stop(timeout_s=5)
            assert await running == {}
        line = _only(lines, TIER_RUN_EVENTS)
        assert line.keys() >= TIER_RUN
        assert (line["event"], line["outcome"]) == ("poll_abandoned", "abandoned")


@dataclass
class Delivering:
    clock: FakeClock
    store: Store
    hook: WebhookReceiver
    worker: DeliveryWorker

    async def attempt(self) -> list[MutableMapping[str, Any]]:
        """One pass of the worker; the lines it logged."""
        with capture_logs() as lines:
            await self.worker.run_once()
        return lines


@pytest.fixture
async def delivering(tmp_path: Path) -> AsyncIterator[Delivering]:
    clock = FakeClock()
    hook = WebhookReceiver()
    server = await start(hook.app)
    store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("store", ("*",))])
    url = str(server.make_url("/events"))
    sink_config = WebhookSinkConfig(name="store", url=url, secrets=(Secret(SECRET, "t"),))
    delivery = DeliveryConfig(retry_schedule_s=(0.0, 60.0), concurrency=4)
    sink = WebhookSink(sink_config, delivery)
    worker = DeliveryWorker(store, {"store": sink}, delivery, clock, random.Random(3))
    observation = Observation(
        Resource("order", "o-1"), {}, None, changes=[Change("order.approved", {})]
    )
    await store.commit_events("shop", [observation], now=clock.now())
    try:
        yield Delivering(clock, store, hook, worker)
    finally:
        await sink.close()
        await store.close()
        await server.close()


class TestDeliveryAttemptLine:
    async def test_delivered(self, delivering: Delivering) -> None:
        """An accepted attempt logs one delivery_attempt_finished line: outcome delivered."""
        line = _only(await delivering.attempt(), ATTEMPT_EVENTS)
        assert line.keys() >= ATTEMPT | {"status"}
        assert (line["event"], line["log_level"], line["outcome"], line["status"]) == (
            "delivery_attempt_finished",
            "info",
            "delivered",
            204,
        )
        assert line["event_id"] == delivering.hook.received[0].headers["webhook-id"]

    async def test_retrying_then_failed(self, delivering: Delivering) -> None:
        """A refused attempt with tries left says when it retries; the last one says it gave up."""
        delivering.hook.fail_next = 2
        retrying = _only(await delivering.attempt(), ATTEMPT_EVENTS)
        assert retrying.keys() >= ATTEMPT | {"status", "retry_in_s"}
        assert (retrying["event"], retrying["log_level"], retrying["outcome"]) == (
            "delivery_attempt_failed",
            "warning",
            "retrying",
        )
        delivering.clock.advance(3600)
        failed = _only(await delivering.attempt(), ATTEMPT_EVENTS)
        assert failed.keys() >= ATTEMPT | {"status"}
        assert (failed["event"], failed["log_level"], failed["outcome"]) == (
            "delivery_failed",
            "error",
            "failed",
        )
        assert (retrying["attempt"], failed["attempt"]) == (1, 2)
        assert retrying["event_id"] == failed["event_id"]
