"""The daemon's local HTTP listener: ``GET /healthz`` and ``GET /metrics`` (Prometheus text).

Owns the metric objects (a private ``prometheus_client`` registry, with the process, platform
and GC collectors), the health rules (every holder × tier succeeded within its interval plus
slack, no holder unauthorized, no sink's oldest owed delivery older than the configured age) and
the aiohttp app serving both. The loops tell it what happened through hooks (``poll_finished``,
``delivery_attempted``, the API clients' ``on_request``); at scrape time it reads the store. It
changes nothing. The daemon adds the operator page's routes (``drgreen_poller.operator``) to the
same app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from drgreen_poller.api import ApiClient, RequestHook
from drgreen_poller.clock import Clock
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import SinkBacklog, Store, TierRun
from drgreen_poller.store.delivery_rows import UNDELIVERED_STATES

# A tier is unhealthy when its last success is older than interval × (1 + jitter) plus this
# share of the interval (at least MIN_SLACK_S): one missed run is tolerated, two are not.
SLACK_INTERVALS = 1.0
MIN_SLACK_S = 30.0
# The default of [daemon] health_max_delivery_age.
MAX_DELIVERY_AGE_S = 900.0
# The runner tells an operational event (poller.holder_*) as this outcome: not a poll.
HOLDER_EVENT = "event"
# Tier runs: a commissions call takes ~50 ms, a first sweep of 5,000 orders about a minute.
POLL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# One request to Dr Green, up to the default [api] timeout of 15 s.
REQUEST_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
# Upstream change → detected: within a tier interval (1 min … 1 h) when all is well.
LAG_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


class _WithoutCreated(Collector):
    """The registry's metrics minus the ``*_created`` samples of counters and histograms.

    Filtering here, rather than ``prometheus_client.disable_created_metrics()`` or the
    ``PROMETHEUS_DISABLE_CREATED_SERIES`` variable, changes no process-wide state: both of those
    switch ``_created`` off for every registry in the process (a library's or an embedding
    application's), and the variable is also inherited by ``command`` sinks' children.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


class Metrics:
    """The daemon's series: counters and histograms fed by hooks, gauges filled at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._polling_series()
        self._upstream_series()
        self._delivery_series()
        self._lease_series()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def _polling_series(self) -> None:
        r = self.registry
        self.polls = Counter(
            "drgreen_poller_polls", "Tier runs by outcome.", ["holder", "tier", "outcome"],
            registry=r,
        )  # fmt: skip
        self.poll_duration = Histogram(
            "drgreen_poller_poll_duration_seconds", "How long tier runs take, by outcome.",
            ["tier", "outcome"], buckets=POLL_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "drgreen_poller_last_success_timestamp_seconds",
            "When each holder × tier last polled successfully (Unix seconds).",
            ["holder", "tier"], registry=r,
        )  # fmt: skip
        self.events = Counter(
            "drgreen_poller_events", "Events recorded, by type.", ["holder", "type"], registry=r
        )
        self.active = Gauge(
            "drgreen_poller_active_entities", "Entities polled, by holder and tier.",
            ["holder", "tier"], registry=r,
        )  # fmt: skip
        self.lag = Histogram(
            "drgreen_poller_detection_lag_seconds",
            "Seconds from an upstream change (where Dr Green dates it) to its detection.",
            ["resource"], buckets=LAG_BUCKETS_S, registry=r,
        )  # fmt: skip

    def _upstream_series(self) -> None:
        r = self.registry
        self.upstream = Counter(
            "drgreen_poller_upstream_requests",
            "Requests to Dr Green by holder, endpoint and HTTP status (or error class).",
            ["holder", "endpoint", "status"], registry=r,
        )  # fmt: skip
        self.budget = Gauge(
            "drgreen_poller_upstream_budget_requests_per_second",
            "Each holder's politeness budget ([api] requests_per_second).", ["holder"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "drgreen_poller_upstream_request_duration_seconds",
            "How long requests to Dr Green take, by endpoint.",
            ["endpoint"], buckets=REQUEST_BUCKETS_S, registry=r,
        )  # fmt: skip

    def _delivery_series(self) -> None:
        self.deliveries = Counter(
            "drgreen_poller_deliveries",
            "Delivery attempts by sink and outcome (delivered, retrying, failed: given up).",
            ["sink", "outcome"], registry=self.registry,
        )  # fmt: skip
        # Each (sink, outcome)'s labelled counter, kept: looking it up costs more than counting.
        self._attempts: dict[tuple[str, str], Counter] = {}
        self.backlog = Gauge(
            "drgreen_poller_delivery_backlog",
            "Deliveries not delivered, by sink and state (pending, delivering, failed).",
            ["sink", "state"], registry=self.registry,
        )  # fmt: skip
        self.oldest_due = Gauge(
            "drgreen_poller_delivery_oldest_due_age_seconds",
            "Age of each sink's oldest delivery still owed (pending or delivering); 0: none.",
            ["sink"], registry=self.registry,
        )  # fmt: skip

    def _lease_series(self) -> None:
        """Several instances on one PostgreSQL database (zero on SQLite)."""
        self.lease_takeovers = Counter(
            "drgreen_poller_lease_takeovers",
            "Holders this instance took over from another whose lease had expired.",
            registry=self.registry,
        )
        self.fencing_refusals = Counter(
            "drgreen_poller_fencing_refusals",
            "Writes (or requests) of a holder refused because this instance no longer held"
            " its lease.",
            registry=self.registry,
        )

    # --- hooks ----------------------------------------------------------------------------------

    def poll_finished(
        self, holder: str, tier: str, outcome: str, events: Sequence[Any], duration_s: float
    ) -> None:
        """The runner's ``on_result``: one tier run ended (or an operational event was made)."""
        if outcome != HOLDER_EVENT:
            self.polls.labels(holder, tier, outcome).inc()
            self.poll_duration.labels(tier, outcome).observe(duration_s)
        for event in events:
            self.events.labels(holder, event["type"]).inc()
            occurred = _parse(event.get("occurred_at"))
            observed = _parse(event.get("observed_at"))
            if occurred and observed:
                lag_s = max(0.0, (observed - occurred).total_seconds())
                self.lag.labels(event["resource"]["type"]).observe(lag_s)

    def delivery_attempted(self, sink: str, outcome: str) -> None:
        """The delivery worker's ``on_attempt``."""
        counter = self._attempts.get((sink, outcome))
        if counter is None:
            counter = self._attempts[sink, outcome] = self.deliveries.labels(sink, outcome)
        counter.inc()

    def watch_api(self, holder: str, api: ApiClient) -> None:
        """Count ``api``'s requests (its ``on_request`` hook) against the holder's budget."""
        self.budget.labels(holder).set(api.bucket.rate)
        api.request_hooks.append(self._request_hook(holder))

    def unwatch_api(self, holder: str) -> None:
        """The holder is polled no more (a reload removed it): its budget is no longer shown."""
        self.budget.remove(holder)

    def _request_hook(self, holder: str) -> RequestHook:
        def requested(endpoint: str, status: str, duration_ms: float) -> None:
            self.upstream.labels(holder, endpoint, status).inc()
            self.request_duration.labels(endpoint).observe(duration_ms / 1000)

        return requested

    # --- at scrape time ---------------------------------------------------------------------------

    async def refresh(self, store: Store, judged: HealthInputs, now: float) -> None:
        """Fill the gauges that are read from the state database, for the holders and sinks
        configured now (the database keeps the rows of holders a reload removed)."""
        self._fill_backlog(await store.undelivered(), judged.sinks, now)
        holders = set(judged.holders)
        self.active.clear()
        for (holder, tier), count in (await store.tier_sizes()).items():
            if holder in holders:
                self.active.labels(holder, tier).set(count)
        self.last_success.clear()
        for run in await store.tier_runs():
            success = _parse(run.last_success_at)
            if success is not None and run.holder in holders:
                self.last_success.labels(run.holder, run.tier).set(success.timestamp())

    def _fill_backlog(
        self, backlog: Mapping[str, SinkBacklog], sinks: Sequence[str], now: float
    ) -> None:
        """Every configured sink gets every state (0 included), so alerts see a series."""
        self.backlog.clear()
        self.oldest_due.clear()
        empty = SinkBacklog(dict.fromkeys(UNDELIVERED_STATES, 0), None)
        for sink in dict.fromkeys([*sinks, *backlog]):
            entry = backlog.get(sink, empty)
            for state, count in entry.counts.items():
                self.backlog.labels(sink, state).set(count)
            self.oldest_due.labels(sink).set(_age(entry.oldest_due_at, now))

    def render(self) -> bytes:
        """The Prometheus text exposition, without ``*_created`` series."""
        return generate_latest(_WithoutCreated(self.registry))


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(stamp: str | None, now: float) -> float:
    """Seconds since the ISO time ``stamp`` (0 when there is none)."""
    when = _parse(stamp)
    return max(0.0, now - when.timestamp()) if when else 0.0


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What the health rules look at."""

    holders: Sequence[str]
    timings: Mapping[str, Timing]
    started_at: float
    sinks: Sequence[str] = ()
    max_delivery_age_s: float = MAX_DELIVERY_AGE_S


def health_problems(
    inputs: HealthInputs,
    runs: Sequence[TierRun],
    unauthorized: Mapping[str, str],
    now: float,
) -> list[str]:
    """Why polling is unhealthy (empty: healthy). Pure."""
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


def delivery_problems(
    backlog: Mapping[str, SinkBacklog], max_age_s: float, now: float
) -> list[str]:
    """Sinks whose oldest owed delivery has waited longer than ``max_age_s``. Pure."""
    problems = []
    for sink, entry in sorted(backlog.items()):
        age = _age(entry.oldest_due_at, now)
        if age > max_age_s:
            problems.append(
                f"sink {sink}: oldest undelivered event waiting {age:.0f} s"
                f" (expected within {max_age_s:.0f} s; {entry.counts['pending']} pending,"
                f" {entry.counts['delivering']} delivering)"
            )
    return problems


def build_app(
    store: Store,
    metrics: Metrics,
    inputs: Callable[[], HealthInputs],
    clock: Clock,
    routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    """The aiohttp app serving ``/healthz`` and ``/metrics``; ``inputs`` gives what the health
    rule judges as the configuration stands now (a reload changes holders and intervals).
    ``routes``: more pages on the same listener (the daemon's operator page at ``/``)."""

    async def healthz(_: web.Request) -> web.Response:
        now, judged = clock.now().timestamp(), inputs()
        problems = health_problems(
            judged, await store.tier_runs(), await store.unauthorized_holders(), now
        )
        problems += delivery_problems(await store.undelivered(), judged.max_delivery_age_s, now)
        if problems:
            return web.json_response({"status": "unhealthy", "reasons": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics_page(_: web.Request) -> web.Response:
        await metrics.refresh(store, inputs(), clock.now().timestamp())
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.add_routes(routes)
    return app
