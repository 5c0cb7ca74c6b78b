"""Health and metrics: the pure health rules, the real /healthz and /metrics app fed by a real
poll against the sandbox and real deliveries to a receiver on a fake clock, and the daemon's."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import DeliveryConfig, Secret, load_config
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.errors import DrGreenError, UpstreamError
from drgreen_poller.monitoring import (
    HealthInputs,
    Metrics,
    build_app,
    delivery_problems,
    health_problems,
)
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from drgreen_poller.scheduler import Timing
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.store import SinkBacklog, SinkRoute, Store, TierRun
from drgreen_poller.tiers import TIERS, Tier
from tests.conftest import write_config
from tests.fakes import WebhookReceiver, start

STAMP = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).timestamp()
MINUTE = Timing(interval_s=60, jitter=0.1)
HOUR = Timing(interval_s=3600, jitter=0.1)
INPUTS = HealthInputs(["shop"], {"active_orders": MINUTE}, started_at=1000.0)
SECRET = "whsec_" + base64.b64encode(b"m" * 32).decode()
RATE = 2.5  # the holder's [api] requests_per_second in the rig


def _run(last_success: str | None) -> TierRun:
    return TierRun("shop", "active_orders", None, None, last_success, 0, None, None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestHealthRule:
    def test_recent_success_is_healthy(self) -> None:
        """A tier that succeeded within interval × 1.1 + one interval of slack is healthy."""
        assert health_problems(INPUTS, [_run("2026-11-23T10:00:00.000Z")], {}, STAMP + 100) == []

    def test_stale_success_is_reported(self) -> None:
        """A tier whose last success is too old is named with its age and the allowance."""
        problems = health_problems(INPUTS, [_run("2026-11-23T10:00:00.000Z")], {}, STAMP + 300)
        assert problems == ["shop/active_orders: last success 300 s ago (expected within 126 s)"]

    def test_never_ran_counts_from_start(self) -> None:
        """A tier that never succeeded is healthy only within the allowance after start."""
        assert health_problems(INPUTS, [], {}, 1100.0) == []
        assert health_problems(INPUTS, [], {}, 1200.0) == [
            "shop/active_orders: no success yet (expected within 126 s)"
        ]

    def test_unauthorized_holder(self) -> None:
        """A holder whose key is refused makes the daemon unhealthy."""
        problems = health_problems(INPUTS, [], {"shop": "2026-11-23T10:00:00.000Z"}, 1001.0)
        assert problems == ["shop: Dr Green refuses the key since 2026-11-23T10:00:00.000Z"]


BACKLOG = {
    "store": SinkBacklog({"pending": 2, "delivering": 1, "failed": 0}, "2026-11-23T10:00:00Z"),
    "audit": SinkBacklog({"pending": 0, "delivering": 0, "failed": 4}, None),
}


class TestDeliveryRule:
    def test_within_the_threshold_is_healthy(self) -> None:
        """An owed delivery younger than the threshold (or exactly at it) is no problem."""
        assert delivery_problems(BACKLOG, 900, STAMP + 900) == []

    def test_too_old_is_reported_with_its_sink(self) -> None:
        """An owed delivery older than the threshold names the sink, the age and the limit."""
        assert delivery_problems(BACKLOG, 900, STAMP + 901) == [
            "sink store: oldest undelivered event waiting 901 s (expected within 900 s;"
            " 2 pending, 1 delivering)"
        ]

    def test_dead_deliveries_alone_are_healthy(self) -> None:
        """Failed (given up) rows are counted in the backlog but do not keep /healthz at 503."""
        assert delivery_problems({"audit": BACKLOG["audit"]}, 1, STAMP + 10**6) == []


@dataclass
class Rig:
    """A sandbox, a store, a runner and a delivery worker on one fake clock, all reporting to
    one ``Metrics``, and the monitoring app serving it on loopback."""

    clock: FakeClock
    box: LocalSandbox
    store: Store
    metrics: Metrics
    runner: TierRunner
    hook: WebhookReceiver
    worker: DeliveryWorker
    session: aiohttp.ClientSession
    url: str
    judged: list[HealthInputs]  # [what the app judges now]: a test may swap it, as a reload does

    async def poll(self, tier: str = Tier.ACTIVE_ORDERS) -> None:
        assert await self.runner.run("shop", tier)

    async def scrape(self) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
        """The /metrics text, and its samples by (name, labels)."""
        async with self.session.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return text, samples

    async def value(self, name: str, **labels: str) -> float | None:
        return (await self.scrape())[1].get((name, frozenset(labels.items())))

    async def health(self) -> tuple[int, Any]:
        async with self.session.get(f"{self.url}/healthz") as response:
            return response.status, await response.json()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
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
        runner = _runner(session, box.base_url, holder.credentials, clock, store, metrics)
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


def _runner(
    session: aiohttp.ClientSession,
    base_url: str,
    credentials: ApiCredentials,
    clock: FakeClock,
    store: Store,
    metrics: Metrics,
) -> TierRunner:
    settings = ApiSettings(base_url, timeout_s=5, requests_per_second=RATE)
    bucket = TokenBucket(RATE, 10**6, clock)
    api = ApiClient(session, settings, credentials, clock, bucket=bucket, holder="shop")
    metrics.watch_api("shop", api)
    poller = HolderPoller("shop", ["GBR"], api, store, clock, PollSettings())
    return TierRunner(
        {"shop": poller}, store, clock, dict.fromkeys(TIERS, HOUR), random.Random(2),
        on_result=metrics.poll_finished,
    )  # fmt: skip


async def _new_order_event(rig: Rig, lag_s: float = 30) -> None:
    """Seed, then an order appears upstream and is detected ``lag_s`` later."""
    await rig.poll()
    rig.box.state.orders.create("shop")
    rig.clock.advance(lag_s)
    await rig.poll()


class TestPollSeries:
    async def test_a_poll_counts_its_outcome_duration_and_success_time(self, rig: Rig) -> None:
        """A real 2 s poll: counted ok, observed in the ≤ 2.5 s bucket, its success time set."""
        rig.box.state.traffic.add_fault({"kind": "slow", "delay_s": 2, "count": 1})
        polling = asyncio.create_task(rig.poll(Tier.COMMISSIONS))
        for _ in range(400):  # until the slow answer sleeps on the fake clock (real time)
            if rig.clock.sleepers or polling.done():
                break
            await asyncio.wait([polling], timeout=0.005)
        rig.clock.advance(2)
        await polling
        _, samples = await rig.scrape()
        labels = {"tier": Tier.COMMISSIONS, "outcome": "ok"}
        ok = frozenset({"holder": "shop", **labels}.items())
        assert samples[("drgreen_poller_polls_total", ok)] == 1
        histogram = "drgreen_poller_poll_duration_seconds"
        assert samples[(f"{histogram}_count", frozenset(labels.items()))] == 1
        assert samples[(f"{histogram}_sum", frozenset(labels.items()))] == 2.0
        assert samples[(f"{histogram}_bucket", frozenset({**labels, "le": "1.0"}.items()))] == 0
        assert samples[(f"{histogram}_bucket", frozenset({**labels, "le": "2.5"}.items()))] == 1
        when = await rig.value(
            "drgreen_poller_last_success_timestamp_seconds", holder="shop", tier=Tier.COMMISSIONS
        )
        assert when == rig.clock.now().timestamp()

    async def test_a_holder_no_longer_configured_has_no_series(self, rig: Rig) -> None:
        """Once a reload removes a holder, its last success time and active set leave /metrics."""
        await rig.poll(Tier.COMMISSIONS)
        assert await rig.value(
            "drgreen_poller_last_success_timestamp_seconds", holder="shop", tier=Tier.COMMISSIONS
        )
        rig.judged[0] = replace(rig.judged[0], holders=[])
        _, samples = await rig.scrape()
        per_holder = ("drgreen_poller_last_success", "drgreen_poller_active_entities")
        assert [name for name, labels in samples if name.startswith(per_holder) and labels] == []

    async def test_a_failed_poll_sets_no_success_time(self, rig: Rig) -> None:
        """A poll that fails is counted failed and leaves the last success time unset."""
        rig.box.state.traffic.add_fault({"kind": "server_error", "status": 503, "count": 1})
        await rig.poll()
        _, samples = await rig.scrape()
        failed = {"holder": "shop", "tier": Tier.ACTIVE_ORDERS, "outcome": "failed"}
        assert samples[("drgreen_poller_polls_total", frozenset(failed.items()))] == 1
        assert not any(name.startswith("drgreen_poller_last_success") for name, _ in samples)

    async def test_upstream_requests_by_holder_beside_the_budget(self, rig: Rig) -> None:
        """Each request the sandbox saw is counted per holder and endpoint; the budget is the
        holder's requests_per_second."""
        rig.box.state.traffic.add_fault({"kind": "server_error", "status": 503, "count": 1})
        await rig.poll()  # the 503
        await rig.poll()
        seen = rig.box.state.traffic.request_counts("shop")["by_endpoint"]
        _, samples = await rig.scrape()
        counted = {
            (dict(labels)["endpoint"], dict(labels)["status"]): value
            for (name, labels), value in samples.items()
            if name == "drgreen_poller_upstream_requests_total" and dict(labels)["holder"] == "shop"
        }
        assert counted[("GET /dapp/orders", "503")] == 1
        assert sum(counted.values()) == sum(seen.values())
        assert {endpoint for endpoint, _ in counted} == set(seen)
        assert (
            await rig.value("drgreen_poller_upstream_budget_requests_per_second", holder="shop")
            == RATE
        )
        requests = await rig.value(
            "drgreen_poller_upstream_request_duration_seconds_count", endpoint="GET /dapp/orders"
        )
        assert requests == seen["GET /dapp/orders"]

    async def test_a_holder_removed_by_reload_loses_its_budget(self, rig: Rig) -> None:
        """Unwatching a holder's client (a reload removed it) takes its budget off the page."""
        rig.metrics.unwatch_api("shop")
        assert (
            await rig.value("drgreen_poller_upstream_budget_requests_per_second", holder="shop")
            is None
        )

    async def test_a_refused_connection_is_counted_by_error_class(self, rig: Rig) -> None:
        """A request that gets no response is counted under its error class."""
        metrics = Metrics()
        async with aiohttp.ClientSession() as session:
            runner = _runner(
                session, f"http://127.0.0.1:{_free_port()}/api/v1",
                rig.box.state.create_holder("other").credentials, rig.clock, rig.store, metrics,
            )  # fmt: skip
            with pytest.raises(UpstreamError):
                await runner.pollers["shop"].poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        [sample] = [
            s
            for family in metrics.registry.collect()
            for s in family.samples
            if s.name == "drgreen_poller_upstream_requests_total"
        ]
        assert sample.labels["status"] == "ClientConnectorError"

    async def test_detection_lag_is_a_histogram(self, rig: Rig) -> None:
        """A new order detected 30 s after Dr Green dates it lands in the ≤ 30 s bucket."""
        await _new_order_event(rig, lag_s=30)
        _, samples = await rig.scrape()
        lag = "drgreen_poller_detection_lag_seconds"
        order = frozenset({"resource": "order"}.items())
        assert samples[(f"{lag}_count", order)] == 1
        assert samples[(f"{lag}_sum", order)] == 30
        assert (
            samples[(f"{lag}_bucket", frozenset({"resource": "order", "le": "15.0"}.items()))] == 0
        )
        assert (
            samples[(f"{lag}_bucket", frozenset({"resource": "order", "le": "30.0"}.items()))] == 1
        )
        events = frozenset({"holder": "shop", "type": "order.created"}.items())
        assert samples[("drgreen_poller_events_total", events)] == 1

    async def test_a_refused_key_is_a_poll_and_its_event_is_not(self, rig: Rig) -> None:
        """A 401 counts as an unauthorized poll; the operational event it makes is counted as an
        event, not as a run of a tier called "holder"."""
        rig.box.state.revoke_holder_key("shop")
        await rig.poll()
        _, samples = await rig.scrape()
        refused = {"holder": "shop", "tier": Tier.ACTIVE_ORDERS, "outcome": "unauthorized"}
        assert samples[("drgreen_poller_polls_total", frozenset(refused.items()))] == 1
        event = frozenset({"holder": "shop", "type": "poller.holder_unauthorized"}.items())
        assert samples[("drgreen_poller_events_total", event)] == 1
        assert not any(dict(labels).get("tier") == "holder" for _, labels in samples)

    def test_lag_needs_two_times(self) -> None:
        """An event without a usable upstream time is counted but adds no detection lag."""
        metrics = Metrics()
        observed = "2026-11-23T10:00:00.000Z"
        events = [
            {"type": "order.paid", "occurred_at": None, "observed_at": observed},
            {"type": "order.paid", "occurred_at": "yesterday", "observed_at": observed},
        ]
        metrics.poll_finished("shop", Tier.ACTIVE_ORDERS, "ok", events, 0.1)
        values = {s.name: s.value for family in metrics.registry.collect() for s in family.samples}
        assert values["drgreen_poller_events_total"] == 2
        assert "drgreen_poller_detection_lag_seconds_count" not in values

    async def test_no_created_series_and_process_collectors(self, rig: Rig) -> None:
        """No *_created series is exposed; the process, platform and GC collectors are."""
        await _new_order_event(rig)
        await rig.worker.run_once()
        text, samples = await rig.scrape()
        assert "_created" not in text
        names = {name for name, _ in samples}
        assert {
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "python_info",
        } <= names
        assert "python_gc_objects_collected_total" in names


class TestDeliverySeries:
    async def test_outcomes_say_what_happened(self, rig: Rig) -> None:
        """A failed attempt with a retry ahead is ``retrying``, never ``pending``; the retry
        that works is ``delivered``; one that runs out of attempts is ``failed``."""
        rig.hook.fail_next = 1
        await _new_order_event(rig)
        await rig.worker.run_once()
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="retrying")
            == 1
        )
        rig.clock.advance(90)
        await rig.worker.run_once()
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="delivered")
            == 1
        )
        rig.hook.fail_next = 2
        rig.box.state.orders.create("shop")
        await rig.poll()
        await rig.worker.run_once()
        rig.clock.advance(90)
        await rig.worker.run_once()
        text, _ = await rig.scrape()
        assert 'outcome="pending"' not in text
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="failed") == 1
        )
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="retrying")
            == 2
        )

    async def test_backlog_counts_what_is_not_delivered(self, rig: Rig) -> None:
        """The backlog has pending, delivering and failed per sink (zeros included), never the
        delivered rows."""
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 0}
        await _new_order_event(rig)
        assert await _backlog(rig) == {"pending": 1, "delivering": 0, "failed": 0}
        await rig.worker.run_once()
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 0}
        rig.hook.fail_next = 2
        rig.box.state.orders.create("shop")
        await rig.poll()
        await rig.worker.run_once()
        rig.clock.advance(90)
        await rig.worker.run_once()
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 1}

    async def test_oldest_due_age(self, rig: Rig) -> None:
        """The age of the oldest owed delivery per sink follows the clock; 0 once delivered."""
        assert await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 0
        await _new_order_event(rig)
        rig.clock.advance(120)
        assert (
            await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 120
        )
        await rig.worker.run_once()
        assert await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 0


async def _backlog(rig: Rig) -> dict[str, float]:
    _, samples = await rig.scrape()
    return {
        dict(labels)["state"]: value
        for (name, labels), value in samples.items()
        if name == "drgreen_poller_delivery_backlog" and dict(labels)["sink"] == "store"
    }


class TestHealthz:
    async def test_an_old_delivery_makes_it_503_until_delivered(self, rig: Rig) -> None:
        """Healthy while the oldest owed delivery is within 15 minutes; 503 naming the sink
        after; healthy again once it is delivered."""
        await _new_order_event(rig)
        rig.hook.fail_next = 1
        await rig.worker.run_once()
        rig.clock.advance(900)
        assert await rig.health() == (200, {"status": "ok"})
        rig.clock.advance(1)
        status, body = await rig.health()
        assert status == 503
        assert body == {
            "status": "unhealthy",
            "reasons": [
                "sink store: oldest undelivered event waiting 901 s (expected within 900 s;"
                " 1 pending, 0 delivering)"
            ],
        }
        await rig.worker.run_once()
        assert await rig.health() == (200, {"status": "ok"})


class TestListener:
    async def test_healthz_and_metrics(self, tmp_path: Path) -> None:
        """The running daemon answers /healthz 200 and /metrics with its series, none _created."""
        port = _free_port()
        async with LocalSandbox(SandboxState(SystemClock())) as box:
            holder = box.state.create_holder("shop")
            box.state.orders.create("shop")
            config = load_config(
                write_config(tmp_path, box.base_url, holder, http_listen=f"127.0.0.1:{port}"), {}
            )
            controls = Controls()
            daemon = asyncio.create_task(run_daemon(config, SystemClock(), controls))
            try:
                async with aiohttp.ClientSession() as session:
                    body = await _wait_for_polls(session, port, daemon)
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                        assert health.status == 200
                        assert await health.json() == {"status": "ok"}
            finally:
                controls.request_stop()
                await asyncio.wait_for(daemon, 5)
        assert 'drgreen_poller_polls_total{holder="shop",outcome="ok",tier="active_orders"}' in body
        assert 'endpoint="GET /dapp/orders",holder="shop",status="200"' in body
        assert 'drgreen_poller_active_entities{holder="shop",tier="active_orders"} 1.0' in body
        assert 'drgreen_poller_upstream_budget_requests_per_second{holder="shop"} 200.0' in body
        assert 'drgreen_poller_poll_duration_seconds_count{outcome="ok",tier="strains"}' in body
        assert 'drgreen_poller_last_success_timestamp_seconds{holder="shop",tier="strains"}' in body
        assert "process_resident_memory_bytes" in body
        assert "_created" not in body

    async def test_port_in_use_is_a_clear_error(self, tmp_path: Path) -> None:
        """A taken http_listen port stops the daemon with a message naming the key."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            async with LocalSandbox(SandboxState(SystemClock())) as box:
                holder = box.state.create_holder("shop")
                config = load_config(
                    write_config(tmp_path, box.base_url, holder, http_listen=address), {}
                )
                with pytest.raises(DrGreenError, match=r"daemon\.http_listen: cannot listen on"):
                    await run_daemon(config, SystemClock(), Controls())


async def _wait_for_polls(
    session: aiohttp.ClientSession, port: int, daemon: asyncio.Task[None]
) -> str:
    """The /metrics page once every tier has run (polling it every 50 ms)."""
    clock = SystemClock()
    for _ in range(100):
        if daemon.done():
            daemon.result()
        try:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                body = await response.text()
        except aiohttp.ClientConnectionError:
            body = ""
        if body.count("drgreen_poller_polls_total{") >= 5:
            return body
        await clock.sleep(0.05)
    raise AssertionError("the tiers never all ran")
