"""The daemon's local HTTP listener: ``GET /healthz`` and ``GET /metrics`` (Prometheus text).

Owns the metric objects (a private ``prometheus_client`` registry), the health rule (every
holder × tier succeeded within its interval plus slack, no holder unauthorized) and the aiohttp
app serving both. It reads the store and the API clients' counters; it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from drgreen_poller.api import ApiClient
from drgreen_poller.clock import Clock
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import Store, TierRun

# A tier is unhealthy when its last success is older than interval × (1 + jitter) plus this
# share of the interval (at least MIN_SLACK_S): one missed run is tolerated, two are not.
SLACK_INTERVALS = 1.0
MIN_SLACK_S = 30.0


class Metrics:
    """Counters the daemon's loops update, and gauges filled at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = Counter(
            "drgreen_poller_polls",
            "Tier runs by outcome.",
            ["holder", "tier", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "drgreen_poller_events",
            "Events recorded, by type.",
            ["holder", "type"],
            registry=self.registry,
        )
        self.upstream = Counter(
            "drgreen_poller_upstream_requests",
            "Requests to Dr Green by endpoint and HTTP status (or error class).",
            ["holder", "endpoint", "status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "drgreen_poller_deliveries",
            "Delivery attempts by sink and outcome.",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "drgreen_poller_delivery_backlog",
            "Delivery rows by sink and state.",
            ["sink", "state"],
            registry=self.registry,
        )
        self.active = Gauge(
            "drgreen_poller_active_entities",
            "Entities polled, by holder and tier.",
            ["holder", "tier"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "drgreen_poller_detection_lag_seconds",
            "For the last event with an upstream time, seconds from that time to detection.",
            ["holder", "type"],
            registry=self.registry,
        )
        self._seen_upstream: dict[tuple[str, str, str], int] = {}

    def poll_finished(self, holder: str, tier: str, outcome: str, events: Sequence[Any]) -> None:
        self.polls.labels(holder, tier, outcome).inc()
        for event in events:
            self.events.labels(holder, event["type"]).inc()
            occurred = _parse(event.get("occurred_at"))
            observed = _parse(event.get("observed_at"))
            if occurred and observed:
                lag_s = (observed - occurred).total_seconds()
                self.lag.labels(holder, event["type"]).set(max(0.0, lag_s))

    def absorb_upstream(self, clients: Mapping[str, ApiClient]) -> None:
        """Bring the API clients' request counts into the counter (only what is new)."""
        for holder, client in clients.items():
            for (endpoint, status), count in client.stats.items():
                key = (holder, endpoint, status)
                new = count - self._seen_upstream.get(key, 0)
                if new:
                    self.upstream.labels(holder, endpoint, status).inc(new)
                    self._seen_upstream[key] = count


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What the health rule looks at."""

    holders: Sequence[str]
    timings: Mapping[str, Timing]
    started_at: float


def health_problems(
    inputs: HealthInputs,
    runs: Sequence[TierRun],
    unauthorized: Mapping[str, str],
    now: float,
) -> list[str]:
    """Why the daemon is unhealthy (empty: healthy). Pure."""
    problems = [f"{h}: Dr Green refuses the key since {unauthorized[h]}" for h in unauthorized]
    last_ok = {(r.holder, r.tier): _parse(r.last_success_at) for r in runs}
    for holder in inputs.holders:
        for tier, timing in inputs.timings.items():
            allowed = timing.interval_s * (1 + timing.jitter) + max(
                MIN_SLACK_S, timing.interval_s * SLACK_INTERVALS
            )
            success = last_ok.get((holder, tier))
            since = success.timestamp() if success else inputs.started_at
            if now - since > allowed:
                what = (
                    "no success yet" if success is None else f"last success {now - since:.0f} s ago"
                )
                problems.append(f"{holder}/{tier}: {what} (expected within {allowed:.0f} s)")
    return problems


def build_app(
    store: Store,
    metrics: Metrics,
    clients: Mapping[str, ApiClient],
    inputs: Callable[[], HealthInputs],
    clock: Clock,
) -> web.Application:
    """The aiohttp app serving ``/healthz`` and ``/metrics``; ``inputs`` gives what the health
    rule judges as the configuration stands now (a reload changes holders and intervals)."""

    async def healthz(_: web.Request) -> web.Response:
        problems = health_problems(
            inputs(),
            await store.tier_runs(),
            await store.unauthorized_holders(),
            clock.now().timestamp(),
        )
        if problems:
            return web.json_response({"status": "unhealthy", "reasons": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics_page(_: web.Request) -> web.Response:
        metrics.absorb_upstream(clients)
        metrics.backlog.clear()
        for sink, states in (await store.backlog()).items():
            for state, count in states.items():
                metrics.backlog.labels(sink, state).set(count)
        metrics.active.clear()
        for (holder, tier), count in (await store.tier_sizes()).items():
            metrics.active.labels(holder, tier).set(count)
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app
