"""The composition root: builds every part from the configuration and runs the daemon.

The only module that knows every part. ``run_daemon`` holds the state lock, opens the store and
the HTTP session, starts the scheduler, tells systemd it is ready, and on stop abandons the polls
in progress (nothing of them is written), lets deliveries in flight finish within a grace period,
and closes the session and the database last.
``poll_once`` is the same machinery for one pass of every tier (arq's ``--burst``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import Clock
from drgreen_poller.config import Config
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.errors import DrGreenError, StateLocked, StoreError, UpstreamError
from drgreen_poller.monitoring import HealthInputs, Metrics, build_app
from drgreen_poller.poller import TIERS, HolderPoller, PollResult, PollSettings
from drgreen_poller.runner import TierRunner
from drgreen_poller.scheduler import TierScheduler, Timing, initial_due
from drgreen_poller.signing import ApiCredentials
from drgreen_poller.sinks import build_sinks
from drgreen_poller.store import SinkRoute, StateLock, Store
from drgreen_poller.store.lineage import Lineage
from drgreen_poller.systemd import Notifier

log = structlog.get_logger(__name__)

# On stop, deliveries in flight get this long to finish before they are cancelled.
STOP_GRACE_S = 20.0
# A poll running longer than this is stuck: the watchdog stops vouching for the daemon.
STUCK_RUN_S = 600.0


def api_settings(config: Config) -> ApiSettings:
    api = config.api
    return ApiSettings(api.base_url, api.timeout_s, api.requests_per_second, api.burst)


def poll_settings(config: Config) -> PollSettings:
    return PollSettings(
        first_sync=config.daemon.first_sync,
        stale_after_s=config.schedule.stale_after_s,
        order_terminal_statuses=frozenset(config.schedule.terminal_order_statuses),
    )


def timings(config: Config) -> dict[str, Timing]:
    s = config.schedule
    intervals = {
        "active_orders": s.active_orders_s,
        "stale_orders": s.stale_orders_s,
        "pending_kyc": s.pending_kyc_s,
        "commissions": s.commissions_s,
        "strains": s.strains_s,
    }
    return {
        tier: Timing(interval, s.jitter, s.backoff_base_s, s.backoff_max_s)
        for tier, interval in intervals.items()
    }


def sink_routes(config: Config) -> list[SinkRoute]:
    return [SinkRoute(sink.name, sink.events) for sink in config.sinks]


@dataclass
class Runtime:
    """The parts shared by ``run`` and ``poll-once``."""

    config: Config
    clock: Clock
    store: Store
    session: aiohttp.ClientSession
    pollers: dict[str, HolderPoller]


def log_lineage(lineage: Lineage, path: Path) -> None:
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
    config: Config, clock: Clock, *, dry_run: bool = False
) -> AsyncIterator[Runtime]:
    """Open the store and the HTTP session and build one poller per holder; close them last.

    A dry run opens the store as a reader: it records nothing of its own.
    """
    store = await Store.open(
        config.daemon.state_path, sinks=sink_routes(config), clock=clock, writer=not dry_run
    )
    log_lineage(store.lineage, config.daemon.state_path)
    try:
        if not dry_run:
            await store.ensure_holders([h.name for h in config.holders], clock.now())
        async with aiohttp.ClientSession() as session:
            pollers = {}
            for holder in config.holders:
                credentials = ApiCredentials(holder.api_key.value, holder.secret_key.value)
                api = ApiClient(
                    session, api_settings(config), credentials, clock, holder=holder.name
                )
                pollers[holder.name] = HolderPoller(
                    holder.name, holder.strain_countries, api, store, clock, poll_settings(config)
                )
            yield Runtime(config, clock, store, session, pollers)
    finally:
        await store.close()


async def poll_once(
    config: Config, clock: Clock, *, dry_run: bool
) -> tuple[list[PollResult], list[tuple[str, str, UpstreamError]]]:
    """One pass of every tier of every holder; failures are collected, not raised."""
    results: list[PollResult] = []
    failures: list[tuple[str, str, UpstreamError]] = []
    tier_timing = timings(config)
    lock = StateLock(config.daemon.state_path)
    if not dry_run:  # writing beside a running daemon would race it for the same changes
        try:
            lock.acquire()
        except StateLocked:
            raise StoreError(
                "a drgreen-poller daemon is running on this database; poll-once would race it "
                "(use poll-once --dry-run, or stop the daemon)"
            ) from None
    try:
        await _poll_all(config, clock, dry_run, tier_timing, results, failures)
    finally:
        lock.release()
    return results, failures


async def _poll_all(
    config: Config,
    clock: Clock,
    dry_run: bool,
    tier_timing: dict[str, Timing],
    results: list[PollResult],
    failures: list[tuple[str, str, UpstreamError]],
) -> None:
    async with open_runtime(config, clock, dry_run=dry_run) as runtime:
        for name, poller in runtime.pollers.items():
            for tier in TIERS:
                next_due = clock.now().timestamp() + tier_timing[tier].interval_s
                try:
                    results.append(
                        await poller.poll_tier(tier, next_due_at=next_due, dry_run=dry_run)
                    )
                except UpstreamError as exc:
                    log.warning("poll_failed", holder=name, tier=tier, error=str(exc))
                    failures.append((name, tier, exc))


async def run_daemon(config: Config, clock: Clock, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set.

    Raises:
        StoreError: another daemon holds the database, or it cannot be opened.
    """
    lock = StateLock(config.daemon.state_path)
    lock.acquire()
    try:
        async with open_runtime(config, clock) as runtime:
            await _serve(runtime, stop)
    finally:
        lock.release()


async def _serve(runtime: Runtime, stop: asyncio.Event) -> None:
    config, clock, store = runtime.config, runtime.clock, runtime.store
    notifier = Notifier()
    rng = random.Random()
    tier_timing = timings(config)
    metrics = Metrics()
    sinks = build_sinks(config.sinks, config.delivery)
    worker = DeliveryWorker(
        store, sinks, config.delivery, clock, rng,
        on_attempt=metrics.delivery_attempted,
    )  # fmt: skip

    def polled(
        holder: str, tier: str, outcome: str, events: Sequence[Mapping[str, Any]], took_s: float
    ) -> None:
        metrics.poll_finished(holder, tier, outcome, events, took_s)
        if events:
            worker.wake()  # fresh events go out at once, not at the next check

    runner = TierRunner(
        runtime.pollers, store, clock, tier_timing, rng, on_result=polled,
        unauthorized_retry_s=config.schedule.unauthorized_retry_s,
    )  # fmt: skip
    scheduler = TierScheduler(runner.run)
    runner.reschedule = scheduler.schedule
    fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    runner.on_fatal = lambda exc: None if fatal.done() else fatal.set_exception(exc)
    names = list(runtime.pollers)
    now = clock.now().timestamp()
    due = await _first_dues(store, names, tier_timing, now, rng)
    for name, poller in runtime.pollers.items():
        metrics.watch_api(name, poller.api)
    inputs = HealthInputs(
        names, tier_timing, started_at=now, sinks=list(sinks),
        max_delivery_age_s=config.daemon.health_max_delivery_age_s,
    )  # fmt: skip
    listener = await _listen(config.daemon.http_listen, build_app(store, metrics, inputs, clock))
    stop_delivery = asyncio.Event()
    delivering = asyncio.create_task(worker.run(stop_delivery, STOP_GRACE_S))
    scheduler.start(due)
    log.info("daemon_started", holders=len(names), sinks=len(sinks))
    notifier.notify("READY=1", f"STATUS=polling {len(names)} holder(s), {len(sinks)} sink(s)")
    watchdog = asyncio.create_task(_watchdog(notifier, runner, worker, scheduler, clock, stop))
    try:
        await _until_stopped(stop, delivering, fatal)
    finally:
        notifier.notify("STOPPING=1")
        log.info("daemon_stopping", grace_s=STOP_GRACE_S)
        await _stop_polling(scheduler, runner, clock)
        stop_delivery.set()
        await delivering
        watchdog.cancel()
        for sink in sinks.values():
            await sink.close()
        if listener is not None:
            await listener.cleanup()
        log.info("daemon_stopped")


async def _stop_polling(scheduler: TierScheduler, runner: TierRunner, clock: Clock) -> None:
    """No new upstream request from here on: runs in progress are abandoned, not finished.

    A half-done sweep is worth nothing (its transaction rolls back; the next start redoes it),
    so stopping waits for no request to return.
    """
    scheduler.pause()
    await runner.stop(STOP_GRACE_S)
    # Jobs APScheduler fired just before the pause start now, see the stop and end; shutting
    # down before that would cancel them, which APScheduler logs as a failed job.
    await clock.sleep(0)
    scheduler.shutdown()


async def _until_stopped(
    stop: asyncio.Event, delivering: asyncio.Task[None], fatal: asyncio.Future[None]
) -> None:
    """Wait for ``stop``; if the delivery worker or a poll hits a fatal error first, raise it."""
    stopping = asyncio.ensure_future(stop.wait())
    watched: set[asyncio.Future[Any]] = {stopping, delivering, fatal}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    failure = delivering.exception() if delivering.done() and not delivering.cancelled() else None
    if isinstance(failure, StoreError):
        # The poller logs its own failures (state_database_failed); the worker's end here.
        log.error("state_database_failed", source="delivery", error=str(failure))
    for failed in (delivering, fatal):
        if failed.done():
            failed.result()  # a StoreError: the database went away


async def _first_dues(
    store: Store, names: list[str], tier_timing: dict[str, Timing], now: float, rng: random.Random
) -> dict[tuple[str, str], float]:
    """When each holder × tier first runs: stored due times, overdue work first but spread."""
    stored = {(r.holder, r.tier): r.next_due_at for r in await store.tier_runs()}
    return {
        (holder, tier): initial_due(
            stored.get((holder, tier)),
            now=now,
            timing=tier_timing[tier],
            slot=index,
            slots=len(names),
            rng=rng,
        )
        for index, holder in enumerate(names)
        for tier in TIERS
    }


async def _listen(address: str, app: web.Application) -> web.AppRunner | None:
    """Serve ``/healthz`` and ``/metrics`` on ``HOST:PORT`` (nothing when ``address`` is "")."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    except OSError as exc:
        await runner.cleanup()
        raise DrGreenError(
            f"daemon.http_listen: cannot listen on {address}: {exc.strerror or exc}"
        ) from exc
    log.info("http_listening", address=address, paths=["/healthz", "/metrics"])
    return runner


async def _watchdog(
    notifier: Notifier,
    runner: TierRunner,
    worker: DeliveryWorker,
    scheduler: TierScheduler,
    clock: Clock,
    stop: asyncio.Event,
) -> None:
    """``WATCHDOG=1`` at half the watchdog interval, only while both loops make progress."""
    if notifier.watchdog_s is None:
        return
    while not stop.is_set():
        polling_ok = scheduler.running and runner.longest_run_s() < STUCK_RUN_S
        delivery_ok = clock.monotonic() - worker.last_tick < STUCK_RUN_S
        if polling_ok and delivery_ok:
            notifier.notify("WATCHDOG=1")
        await clock.sleep(notifier.watchdog_s / 2)
