"""The poll series on /metrics, fed by real polls against the sandbox on a fake clock: outcomes,
durations and success times, upstream requests beside the budget, detection lag, a refused key,
holders a reload removed, and what the page does not expose.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from drgreen_poller.errors import UpstreamError
from drgreen_poller.monitoring import (
    Metrics,
)
from drgreen_poller.tiers import Tier
from tests.monitoring.rig import RATE, Rig, new_order_event, runner_for
from tests.ports import free_port


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
            runner = runner_for(
                session, f"http://127.0.0.1:{free_port()}/api/v1",
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
        await new_order_event(rig, lag_s=30)
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
        await new_order_event(rig)
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
