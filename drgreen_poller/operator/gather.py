"""What the operator page shows, gathered from the running daemon: its state database and, where
that is the truth, its memory (the scheduler's next runs, each holder's request budget).

Owns turning both into plain values for ``render``: holders with their tiers, active set sizes,
the sinks' backlogs, the filtered event and delivery listings, and the charts' bars. It writes
nothing and formats nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drgreen_poller.operator.charts import HOURS, Bar, events_bars, latency_bars
from drgreen_poller.service import Service
from drgreen_poller.store import DeliveryRow, SinkBacklog, TierRun
from drgreen_poller.store.delivery_rows import UNDELIVERED_STATES
from drgreen_poller.store.operator_views import LoggedEvent, OperatorViews
from drgreen_poller.tiers import TIERS, Tier

# The tiers that hold an active set (the others poll a summary or a catalogue).
SET_TIERS = (Tier.ACTIVE_ORDERS, Tier.STALE_ORDERS, Tier.PENDING_KYC)
EVENTS_SHOWN = 50
DELIVERIES_SHOWN = 50


@dataclass(frozen=True, slots=True)
class TierView:
    tier: str
    run: TierRun | None
    next_run_at: float | None  # the scheduler's (None: running or waiting for a slot)


@dataclass(frozen=True, slots=True)
class HolderView:
    name: str
    refused_since: str | None
    rate: float  # requests per second allowed
    requests_last_window: int
    share_used: float
    tiers: list[TierView]
    active: dict[str, int]  # set tier → entities in it


@dataclass(frozen=True, slots=True)
class SinkView:
    name: str
    kind: str
    counts: dict[str, int]  # pending, delivering, failed, delivered
    oldest_due_at: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The events listing's filter, as given in the query string (already checked)."""

    types: str = ""  # glob patterns separated by spaces or commas ("" = all)
    resource: str = ""
    before: int | None = None

    @property
    def patterns(self) -> list[str]:
        return [p for p in self.types.replace(",", " ").split() if p] or ["*"]


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    state: str = ""
    sink: str = ""


@dataclass
class Overview:
    """Everything the main page shows."""

    now: datetime
    holders: list[HolderView]
    sinks: list[SinkView]
    events: list[LoggedEvent]
    event_filter: EventFilter
    deliveries: list[DeliveryRow]
    attempts: dict[int, list[dict[str, Any]]]
    delivery_filter: DeliveryFilter
    events_chart: list[Bar]
    latency_chart: list[Bar]
    notice: str | None = None
    problems: list[str] = field(default_factory=list)


async def overview(
    service: Service, events: EventFilter, deliveries: DeliveryFilter, now: datetime
) -> Overview:
    """The main page's values, as the daemon stands at ``now``."""
    store = service.runtime.store
    views = OperatorViews(store)
    rows = await store.deliveries(
        state=deliveries.state or None, sink=deliveries.sink or None, limit=DELIVERIES_SHOWN
    )
    day_ago = now - timedelta(hours=HOURS)
    return Overview(
        now=now,
        holders=await holders(service),
        sinks=await sinks(service),
        events=await views.events(
            patterns=events.patterns,
            resource=events.resource or None,
            before_seq=events.before,
            limit=EVENTS_SHOWN,
        ),
        event_filter=events,
        deliveries=rows,
        attempts=await views.attempts_of([row.id for row in rows]),
        delivery_filter=deliveries,
        events_chart=events_bars(await views.events_per_hour(day_ago), now),
        latency_chart=latency_bars(await views.delivered_since(day_ago), now),
    )


async def holders(service: Service) -> list[HolderView]:
    """Every configured holder: key state, budget used, and per tier its run state and next run."""
    store, runner = service.runtime.store, service.runner
    runs = {(r.holder, r.tier): r for r in await store.tier_runs()}
    sizes = await store.tier_sizes()
    refused = await store.unauthorized_holders()
    found = []
    for name, poller in runner.pollers.items():
        bucket = poller.api.bucket
        found.append(
            HolderView(
                name=name,
                refused_since=refused.get(name),
                rate=bucket.rate,
                requests_last_window=bucket.usage.count(),
                share_used=bucket.share_used(),
                tiers=[
                    TierView(tier, runs.get((name, tier)), service.scheduler.next_run(name, tier))
                    for tier in TIERS
                ],
                active={tier: sizes.get((name, tier), 0) for tier in SET_TIERS},
            )
        )
    return found


async def sinks(service: Service) -> list[SinkView]:
    """Every configured sink's rows by state and its oldest owed delivery."""
    store = service.runtime.store
    counts, owed = await store.backlog(), await store.undelivered()
    empty = SinkBacklog(dict.fromkeys(UNDELIVERED_STATES, 0), None)
    return [
        SinkView(
            name=sink.name,
            kind=sink.kind,
            counts={
                state: counts.get(sink.name, {}).get(state, 0)
                for state in (*UNDELIVERED_STATES, "delivered")
            },
            oldest_due_at=owed.get(sink.name, empty).oldest_due_at,
        )
        for sink in service.config.sinks
    ]


@dataclass
class EventPage:
    event: dict[str, Any]
    deliveries: list[DeliveryRow]
    attempts: dict[int, list[dict[str, Any]]]


async def event_page(service: Service, event_id: str) -> EventPage | None:
    """One event, its deliveries and their attempts (None: no such event)."""
    views = OperatorViews(service.runtime.store)
    event = await views.event(event_id)
    if event is None:
        return None
    rows = await views.event_deliveries(event_id)
    return EventPage(event, rows, await views.attempts_of([row.id for row in rows]))
