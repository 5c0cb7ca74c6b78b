"""Builds every part of the daemon from a ``Config``, and applies a new ``Config`` to them (reload).

With ``daemon`` the composition root: this module knows how each part is made from its section of
the configuration; ``daemon`` knows how they run together (the task group, signals, stopping).
It opens the store and the HTTP session, but starts no loop and sends no request itself.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import structlog

from drgreen_poller.api import ApiClient
from drgreen_poller.clock import Clock
from drgreen_poller.config import Config, HolderConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.monitoring import HealthInputs, Metrics
from drgreen_poller.poller import HolderPoller
from drgreen_poller.progress import OnProgress
from drgreen_poller.ratelimit import RunSlots
from drgreen_poller.reload import ConfigChanges, config_changes, keep_restart_keys
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.runner import MAX_RUNS_AT_WORK, TierRunner
from drgreen_poller.scheduler import (
    Scheduler,
    SchedulerFactory,
    TierScheduler,
    Timing,
    initial_due,
    jittered,
)
from drgreen_poller.settings import api_settings, poll_settings, sink_routes, timings
from drgreen_poller.sinks import Sink, build_sinks
from drgreen_poller.store import Store
from drgreen_poller.store.leases import Fence, Instance
from drgreen_poller.store.lineage import Lineage
from drgreen_poller.tiers import TIERS

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    """The parts shared by ``run`` and ``poll-once``."""

    config: Config
    clock: Clock
    store: Store
    session: aiohttp.ClientSession
    pollers: dict[str, HolderPoller]
    on_progress: OnProgress | None = None  # hears every page a poller reads (poll-once's bar)
    # Tier runs at work at once (``TierRunner``); every holder's bucket lends a waiting run's.
    slots: RunSlots = field(default_factory=lambda: RunSlots(MAX_RUNS_AT_WORK))
    # Holder → tiers with a progress row an earlier process left (None: not read, as poll-once).
    rows_left: dict[str, set[str]] | None = None
    # A daemon sharing its PostgreSQL database with others: this instance (None: alone), and
    # the check each request of a holder passes before it leaves (``sharing``'s lease gate).
    instance: Instance | None = None
    lease_gate: Callable[[str], None] | None = None

    def client(self, holder: HolderConfig, bucket_from: ApiClient | None = None) -> ApiClient:
        """The API client of ``holder``; ``bucket_from`` hands over a token bucket, so that
        rebuilding a client on reload never resets its request budget."""
        credentials = ApiCredentials(holder.api_key.value, holder.secret_key.value)
        bucket = bucket_from.bucket if bucket_from is not None else None
        api = ApiClient(
            self.session,
            api_settings(self.config),
            credentials,
            self.clock,
            bucket=bucket,
            slots=self.slots,
            holder=holder.name,
            instance=self.instance.id if self.instance is not None else None,
        )
        if self.lease_gate is not None:
            api.gate = functools.partial(self.lease_gate, holder.name)
        return api

    def poller(self, holder: HolderConfig, api: ApiClient) -> HolderPoller:
        return HolderPoller(
            holder.name,
            holder.strain_countries,
            api,
            self.store,
            self.clock,
            poll_settings(self.config),
            on_progress=self.on_progress,
            rows_left=None if self.rows_left is None else self.rows_left.get(holder.name, set()),
        )


def log_lineage(lineage: Lineage, path: str) -> None:
    """Say when the state is new or was restored: both mean history may have been lost."""
    if lineage.fresh and lineage.rebased_now:
        log.error(
            "state_lost",
            path=str(path),
            began_at=lineage.began_at,
            reason=lineage.rebase_reason,
            hint="what exists upstream is taken as it is (first_sync); new events count on "
            "from a new sequence floor so no id or sequence is reused",
        )
    elif lineage.fresh:
        log.warning(
            "state_created",
            path=str(path),
            began_at=lineage.began_at,
            hint="no state existed at this path: if one did before, it was lost; what exists "
            "upstream is taken as it is (first_sync), and new events count on from a new "
            "sequence floor so no id or sequence is reused",
        )
    elif lineage.rebased_now:
        log.warning(
            "state_restored",
            path=str(path),
            reason=lineage.rebase_reason,
            sequence_floor=lineage.sequence_floor,
            hint="changes since the copy was made may be announced again, under new ids",
        )
    else:
        log.info(
            "state_opened",
            path=str(path),
            began_at=lineage.began_at,
            restored_at=lineage.rebased_at,
            restore_reason=lineage.rebase_reason,
        )


@asynccontextmanager
async def open_runtime(
    config: Config,
    clock: Clock,
    *,
    dry_run: bool = False,
    on_progress: OnProgress | None = None,
    shared: bool = False,
) -> AsyncIterator[Runtime]:
    """Open the store and the HTTP session and build one poller per holder; close them last.

    A dry run opens the store as a reader: it records nothing of its own. ``shared``: a daemon
    on a PostgreSQL database that others may share: it becomes an instance, builds no poller
    yet (``sharing`` starts those of the holders whose leases it takes) and fences its writes.
    """
    store = await Store.open(
        config.state, sinks=sink_routes(config), clock=clock, writer=not dry_run
    )
    instance = Instance.this_process() if shared and config.store is not None else None
    if instance is not None and config.store is not None:
        store.fence, store.instance = Fence(instance.id), instance.id
        store.instance_ttl_s = config.store.lease_ttl_s
    try:
        if not dry_run:  # a reader records no start of the state, and has none to announce
            log_lineage(store.lineage, config.state_shown)
            await store.ensure_holders([h.name for h in config.holders], clock.now())
        async with aiohttp.ClientSession() as session:
            runtime = Runtime(config, clock, store, session, {}, on_progress, instance=instance)
            if not dry_run:  # one read, rather than a write per holder × tier's first run
                runtime.rows_left = {}
                for row in await store.progress_rows():
                    runtime.rows_left.setdefault(row.holder, set()).add(row.tier)
            for holder in config.holders if instance is None else ():
                runtime.pollers[holder.name] = runtime.poller(holder, runtime.client(holder))
            yield runtime
    finally:
        await store.close()


@dataclass
class Service:
    """Every part of a running daemon, built from one ``Config`` (``build_service``).

    ``runner.pollers`` and ``worker.sinks`` are the live sets a reload changes; each poller's API
    client reports its requests to ``metrics`` (``Metrics.watch_api``).
    """

    runtime: Runtime
    rng: random.Random
    metrics: Metrics
    worker: DeliveryWorker
    runner: TierRunner
    scheduler: Scheduler
    started_at: float
    retired_sinks: list[Sink] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return self.runtime.config

    def health_inputs(self) -> HealthInputs:
        """What ``/healthz`` judges, as the configuration stands now."""
        return HealthInputs(
            list(self.runner.pollers), self.runner.timings, self.started_at,
            sinks=list(self.worker.sinks),
            max_delivery_age_s=self.config.daemon.health_max_delivery_age_s,
        )  # fmt: skip


def build_service(
    runtime: Runtime,
    rng: random.Random | None = None,
    make_scheduler: SchedulerFactory = TierScheduler,
) -> Service:
    """The delivery worker, the tier runner and its scheduler over an open ``runtime``.

    ``make_scheduler`` builds the scheduler from the runner's job and its ``plans``:
    APScheduler's by default (a test gives one that runs on a fake clock).
    """
    config, clock, store = runtime.config, runtime.clock, runtime.store
    rng = rng or random.Random()
    metrics = Metrics()
    worker = DeliveryWorker(
        store, build_sinks(config.sinks, config.delivery), config.delivery, clock, rng,
        on_attempt=metrics.delivery_attempted,
    )  # fmt: skip

    def polled(
        holder: str, tier: str, outcome: str, events: Sequence[Mapping[str, Any]], took_s: float
    ) -> None:
        metrics.poll_finished(holder, tier, outcome, events, took_s)
        if events:
            worker.wake()  # fresh events go out at once, not at the next check

    runner = TierRunner(
        runtime.pollers, store, clock, timings(config), rng, on_result=polled,
        unauthorized_retry_s=config.schedule.unauthorized_retry_s, slots=runtime.slots,
    )  # fmt: skip
    scheduler = make_scheduler(runner.submit, runner.plans)
    for name, poller in runner.pollers.items():
        metrics.watch_api(name, poller.api)
    started = clock.now().timestamp()
    return Service(runtime, rng, metrics, worker, runner, scheduler, started)


async def first_dues(service: Service, holders: list[str]) -> dict[tuple[str, str], float]:
    """When each of ``holders`` × tier first runs: stored due times, overdue work first but
    spread, and holders never polled before staggered over the first minute."""
    stored = {(r.holder, r.tier): r.next_due_at for r in await service.runtime.store.tier_runs()}
    now = service.runtime.clock.now().timestamp()
    tier_timing = service.runner.timings
    return {
        (holder, tier): initial_due(
            stored.get((holder, tier)),
            now=now,
            timing=tier_timing[tier],
            slot=index,
            slots=len(holders),
            rng=service.rng,
        )
        for index, holder in enumerate(holders)
        for tier in TIERS
    }


async def apply_config(service: Service, new: Config) -> ConfigChanges:
    """Make the running service follow ``new`` (a reload); returns what changed.

    Nothing of the state is lost: holders removed keep their rows (and resume where they were if
    added back); runs in progress of a removed holder are abandoned as on stop. Keys only a restart
    can apply keep their running values.
    """
    old = service.config
    changes = config_changes(old, new)
    runtime = service.runtime
    runtime.config = replace(new, daemon=keep_restart_keys(old.daemon, new.daemon))
    runner = service.runner
    before, runner.timings = runner.timings, timings(runtime.config)
    runner.refusals.retry_s = runtime.config.schedule.unauthorized_retry_s
    await _apply_holders(service, old, changes)
    _tighten_schedule(service, before)
    _apply_sinks(service, old)
    for name in (*changes.rekeyed, *changes.holders_added):
        if name in runner.pollers:  # sharing: a holder not held is another instance's to probe
            service.scheduler.schedule_all(await service.runner.probe_now(name))
    return changes


def _tighten_schedule(service: Service, before: Mapping[str, Timing]) -> None:
    """Shorter intervals take effect at once: a run due later than one new interval moves
    closer. (Longer ones apply from the next run.)"""
    runner = service.runner
    now = service.runtime.clock.now().timestamp()
    for holder in runner.pollers:
        for tier, timing in runner.timings.items():
            scheduled = service.scheduler.next_run(holder, tier)
            if scheduled is None or timing.interval_s >= before[tier].interval_s:
                continue
            soonest = now + jittered(timing.interval_s, timing.jitter, service.rng)
            if scheduled > soonest:
                service.scheduler.schedule(holder, tier, soonest)


async def _apply_holders(service: Service, old: Config, changes: ConfigChanges) -> None:
    runtime, runner = service.runtime, service.runner
    for name in changes.holders_removed:
        stop_holder(service, name)
    if runtime.instance is not None and changes.holders_removed:
        await runtime.store.release_leases(runtime.instance.id, changes.holders_removed)
    new = runtime.config
    rebuild_all = api_settings(old) != api_settings(new) or poll_settings(old) != poll_settings(new)
    # The token bucket carries over unless the budget itself changed: a reload of a timeout or a
    # URL must not hand every holder a full burst again.
    same_budget = (old.api.requests_per_second, old.api.burst) == (
        new.api.requests_per_second,
        new.api.burst,
    )
    for holder in new.holders:
        if holder.name in changes.holders_added or holder.name not in runner.pollers:
            continue  # (sharing: a holder not held is another instance's)
        if rebuild_all or holder.name in changes.holders_changed:
            current = runner.pollers.get(holder.name)
            bucket_from = current.api if current is not None and same_budget else None
            _install(service, holder, runtime.client(holder, bucket_from))
    if changes.holders_added:
        await runtime.store.ensure_holders(changes.holders_added, runtime.clock.now())
        if runtime.instance is not None:
            return  # the next lease round shares them out
        for holder in runtime.config.holders:
            if holder.name in changes.holders_added:
                _install(service, holder, runtime.client(holder))
        due = await first_dues(service, list(changes.holders_added))
        service.scheduler.schedule_all(due)


async def start_holder(service: Service, name: str) -> None:
    """Poll ``name`` from now on (sharing: its lease was taken), each tier from its stored due
    time, as a holder a reload adds. Nothing when the configuration has no such holder."""
    holder = next((h for h in service.config.holders if h.name == name), None)
    if holder is None:
        return
    _install(service, holder, service.runtime.client(holder))
    service.scheduler.schedule_all(await first_dues(service, [name]))


def stop_holder(service: Service, name: str) -> None:
    """Poll ``name`` no more (a reload removed it, or its lease went to another instance): its
    runs in progress are abandoned, nothing of them written; its state stays."""
    service.runner.remove_holder(name)
    for tier in TIERS:
        service.scheduler.unschedule(name, tier)
    service.metrics.unwatch_api(name)


def _install(service: Service, holder: HolderConfig, api: ApiClient) -> None:
    service.runner.add_holder(holder.name, service.runtime.poller(holder, api))
    service.metrics.watch_api(holder.name, api)


def _apply_sinks(service: Service, old: Config) -> None:
    """Sinks follow the new file: new events are routed by it; unchanged sinks keep their
    connections; replaced and removed ones are retired (closed once their attempts end)."""
    config, worker = service.config, service.worker
    # A webhook sink takes its default timeout and its connection limit from [delivery].
    kept = (old.delivery.timeout_s, old.delivery.concurrency) == (
        config.delivery.timeout_s,
        config.delivery.concurrency,
    )
    unchanged = {s.name for s in config.sinks if kept and s in old.sinks}
    names = [s.name for s in config.sinks]
    fresh = build_sinks(tuple(s for s in config.sinks if s.name not in unchanged), config.delivery)
    sinks = {name: worker.sinks[name] if name in unchanged else fresh[name] for name in names}
    service.retired_sinks.extend(
        sink for name, sink in worker.sinks.items() if sinks.get(name) is not sink
    )
    worker.sinks = sinks
    worker.config = config.delivery
    service.runtime.store.sinks = tuple(sink_routes(config))
