"""The composition root: runs the parts ``service`` builds, from start to stop, with reloads.

The only module that knows every part at run time. ``run_daemon`` holds the state lock, opens the
store and the HTTP session (``service.open_runtime``), builds the parts (``build_service``) and
``serve``s them: every loop in one ``asyncio.TaskGroup``; a reload (SIGHUP) applies the file
anew, or keeps the running configuration when the file is invalid; on stop, polls in progress are
abandoned (nothing of them is written) while deliveries in flight finish, together under one grace
period, and a second stop request ends at once. The store and the session close last. On a
PostgreSQL database that daemons share, the lease loop (``sharing``) and the connection that
wakes the delivery worker (``store.listening``) run beside the others, and a stopping instance
leaves the registry. ``poll_once`` is the same machinery for one pass of every tier (arq's
``--burst``).
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from drgreen_poller.clock import Clock
from drgreen_poller.config import Config
from drgreen_poller.errors import ConfigError, DrGreenError, StateLocked, StoreError, UpstreamError
from drgreen_poller.monitoring import build_app
from drgreen_poller.operator import OperatorPage
from drgreen_poller.poller import PollResult
from drgreen_poller.progress import OnProgress
from drgreen_poller.scheduler import SchedulerFactory, TierScheduler, Timing
from drgreen_poller.service import (
    Runtime,
    Service,
    apply_config,
    build_service,
    first_dues,
    open_runtime,
)
from drgreen_poller.settings import timings
from drgreen_poller.sharing import leave_quietly, sharing_jobs, sharing_of
from drgreen_poller.store.locking import state_lock
from drgreen_poller.systemd import Notifier
from drgreen_poller.tiers import TIERS

log = structlog.get_logger(__name__)

# A poll running longer than this is stuck: the watchdog stops vouching for the daemon.
STUCK_RUN_S = 600.0
ConfigLoader = Callable[[], Config]
Loop = Coroutine[Any, Any, None]


@dataclass
class Controls:
    """What the outside asks of a running daemon: signals in production, calls in tests."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)

    def request_stop(self) -> None:
        """The first request stops within the grace period; any further one stops at once."""
        if self.stop.is_set():
            self.force.set()
        self.stop.set()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGINT and SIGTERM request a stop; SIGHUP a reload."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)


async def poll_once(
    config: Config, clock: Clock, *, dry_run: bool, on_progress: OnProgress | None = None
) -> tuple[list[PollResult], list[tuple[str, str, UpstreamError]]]:
    """One pass of every tier of every holder; failures are collected, not raised.
    ``on_progress`` hears every page read (the bar).

    A dry run where there is no state yet (a fresh install's first look) polls against an
    empty state in a scratch directory, removed afterwards: it creates no database.
    """
    results: list[PollResult] = []
    failures: list[tuple[str, str, UpstreamError]] = []
    tier_timing = timings(config)
    if dry_run and isinstance(config.state, Path) and not config.state.exists():
        with tempfile.TemporaryDirectory(prefix="drgreen-poller-dry-run-") as scratch:
            empty = replace(config.daemon, state_path=Path(scratch) / "state.db")
            runtime = open_runtime(
                replace(config, daemon=empty), clock, dry_run=True, on_progress=on_progress
            )
            await _poll_all(runtime, clock, True, tier_timing, results, failures)
        return results, failures
    lock = state_lock(config.state)
    if not dry_run:  # writing beside a running daemon would race it for the same changes
        try:
            lock.acquire()
        except StateLocked:
            raise StoreError(
                "a drgreen-poller daemon is running on this database; poll-once would race it "
                "(use poll-once --dry-run, or stop the daemon)"
            ) from None
    try:
        runtime = open_runtime(config, clock, dry_run=dry_run, on_progress=on_progress)
        await _poll_all(runtime, clock, dry_run, tier_timing, results, failures)
    finally:
        lock.release()
    return results, failures


async def _poll_all(
    opening: AbstractAsyncContextManager[Runtime],
    clock: Clock,
    dry_run: bool,
    tier_timing: dict[str, Timing],
    results: list[PollResult],
    failures: list[tuple[str, str, UpstreamError]],
) -> None:
    async with opening as runtime:
        for name, poller in runtime.pollers.items():
            for tier in TIERS:
                next_due = clock.now().timestamp() + tier_timing[tier].interval_s
                try:
                    results.append(
                        await poller.poll_tier(tier, next_due_at=next_due, dry_run=dry_run)
                    )
                except UpstreamError as exc:
                    log.warning(
                        "poll_failed",
                        holder=name,
                        tier=tier,
                        outcome="failed",
                        error=str(exc),
                        error_class=type(exc).__name__,
                    )
                    failures.append((name, tier, exc))


async def run_daemon(
    config: Config,
    clock: Clock,
    controls: Controls,
    load: ConfigLoader | None = None,
    make_scheduler: SchedulerFactory = TierScheduler,
) -> None:
    """Run until ``controls`` asks for a stop; ``load`` reads the file anew on a reload.

    ``make_scheduler``: APScheduler's by default; a test gives one that fires on its fake clock.

    Raises:
        StoreError: another daemon holds the database, it cannot be opened, or it went away.
        DrGreenError: the HTTP listener cannot listen.
    """
    lock = state_lock(config.state, shared=True)  # SQLite: one daemon; PostgreSQL: several
    lock.acquire()
    try:
        async with open_runtime(config, clock, shared=True) as runtime:
            await serve(build_service(runtime, make_scheduler=make_scheduler), controls, load)
    finally:
        lock.release()


async def serve(service: Service, controls: Controls, load: ConfigLoader | None = None) -> None:
    """Run every loop of ``service`` in one task group until a stop, then wind them down."""
    notifier = Notifier()
    fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    service.runner.on_fatal = lambda exc: None if fatal.done() else fatal.set_exception(exc)
    app = build_app(
        service.runtime.store, service.metrics, service.health_inputs, service.runtime.clock,
        routes=OperatorPage(service).routes(),
    )  # fmt: skip
    listener = await _listen(service.config.daemon.http_listen, app)
    sharing = sharing_of(service)
    try:
        async with asyncio.TaskGroup() as tasks:
            draining = asyncio.Event()
            delivering = tasks.create_task(_deliver(service, draining))
            upkeep = [
                tasks.create_task(_watchdog(notifier, service)),
                tasks.create_task(_reloads(service, controls, load, notifier)),
                *(tasks.create_task(job) for job in sharing_jobs(service, sharing)),
            ]
            if sharing is not None:
                await sharing.round()  # this instance's first holders, before the first runs
            service.scheduler.start(await first_dues(service, list(service.runner.pollers)))
            _announce_ready(service, notifier)
            await _until_stopped(controls.stop, delivering, fatal)
            for task in upkeep:
                task.cancel()
            await _wind_down(service, notifier, draining, delivering, controls.force)
    except ExceptionGroup as failures:
        # The first loop to fail ends the daemon: raise it as itself, not wrapped in a group (a
        # StoreError is one line for the user; anything else keeps its own traceback).
        raise failures.exceptions[0] from None
    finally:
        if service.scheduler.running:  # a fatal error skipped the wind-down
            # Abandoning runs is quick, but wait for it: shutting APScheduler down with its jobs
            # still running cancels them, which it logs as failed jobs.
            await _stop_polling(service, _grace(service))
        if sharing is not None:
            await leave_quietly(sharing)
        for sink in (*service.worker.sinks.values(), *service.retired_sinks):
            await sink.close()
        if listener is not None:
            await listener.cleanup()
        log.info("daemon_stopped")


async def _deliver(service: Service, draining: asyncio.Event) -> None:
    """The delivery worker's loop. Its failed database is logged here, as the poller logs its
    own: the task group ends ``serve`` at once when this task fails."""
    try:
        await service.worker.run(draining, _grace(service))
    except StoreError as exc:
        log.error("state_database_failed", source="delivery", error=str(exc))
        raise


def _grace(service: Service) -> float:
    return service.config.daemon.stop_grace_s


def _announce_ready(service: Service, notifier: Notifier) -> None:
    holders, sinks = len(service.runner.pollers), len(service.worker.sinks)
    log.info("daemon_started", holders=holders, sinks=sinks)
    notifier.notify("READY=1", f"STATUS=polling {holders} holder(s), {sinks} sink(s)")


async def _until_stopped(
    stop: asyncio.Event, delivering: asyncio.Task[None], fatal: asyncio.Future[None]
) -> None:
    """Wait for ``stop``; a poll's fatal error first is raised here, the delivery worker's by
    the task group."""
    stopping = asyncio.ensure_future(stop.wait())
    watched: set[asyncio.Future[Any]] = {stopping, delivering, fatal}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if fatal.done():
        fatal.result()  # a StoreError: the database went away


async def _wind_down(
    service: Service,
    notifier: Notifier,
    draining: asyncio.Event,
    delivering: asyncio.Task[None],
    force: asyncio.Event,
) -> None:
    """Polling and delivery stop together within one grace period; ``force`` ends it at once.

    Polls in progress are abandoned at once (a half-done sweep is worth nothing: its transaction
    rolls back and the next start redoes it). Deliveries in flight get the grace period; those
    still running after it, or when ``force`` is set, are cut: their rows go back to pending at
    the next start, under the same event ids.
    """
    grace_s = _grace(service)
    notifier.notify("STOPPING=1")
    log.info("daemon_stopping", grace_s=grace_s, deliveries_in_flight=service.worker.in_flight)
    draining.set()
    polling = asyncio.ensure_future(_stop_polling(service, grace_s))
    pending: set[asyncio.Future[Any]] = {polling, delivering}
    forced = asyncio.ensure_future(force.wait())
    while pending and not forced.done():
        done, _ = await asyncio.wait({*pending, forced}, return_when=asyncio.FIRST_COMPLETED)
        pending -= done
    forced.cancel()
    if pending:
        log.warning("daemon_stop_forced", deliveries_cut=service.worker.in_flight)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)
        service.scheduler.shutdown()
    if not polling.cancelled():
        polling.result()


async def _stop_polling(service: Service, grace_s: float) -> None:
    """No new upstream request from here on: runs in progress are abandoned, not finished."""
    service.scheduler.pause()
    await service.runner.stop(grace_s)
    # Jobs APScheduler fired just before the pause start now, see the stop and end; shutting
    # down before that would cancel them, which APScheduler logs as a failed job.
    await service.runtime.clock.sleep(0)
    service.scheduler.shutdown()


async def _reloads(
    service: Service, controls: Controls, load: ConfigLoader | None, notifier: Notifier
) -> None:
    """Apply the configuration file anew at each reload request, until cancelled."""
    while True:
        await controls.reload.wait()
        controls.reload.clear()
        if load is None:
            log.warning("config_reload_ignored", reason="this daemon was not started from a file")
            continue
        notifier.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_us()}")
        await _reload_once(service, load)
        notifier.notify("READY=1")
        await _close_retired(service)


async def _reload_once(service: Service, load: ConfigLoader) -> None:
    """Load the file and apply it; an invalid file keeps the running configuration."""
    path = str(service.config.path) if service.config.path else None
    try:
        new = load()
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config_reload_failed", path=path, problem=problem, kept="running config")
        return
    for warning in new.warnings:
        log.warning("config_warning", path=path, warning=warning)
    changes = await apply_config(service, new)
    if changes.empty:
        log.info("config_reloaded", path=path, changed=False)
        return
    log.info("config_reloaded", path=path, changed=True, **changes.log_fields())
    if changes.restart_required:
        log.warning(
            "config_needs_restart",
            keys=list(changes.restart_required),
            hint="these keys keep their running values until the daemon restarts",
        )


async def _close_retired(service: Service) -> None:
    """Close the sinks a reload replaced or removed, once the attempts using them end.

    Each stays in ``retired_sinks`` until it is closed: a stop cancelling this wait leaves them
    to ``serve``'s own closing.
    """
    retired = list(service.retired_sinks)
    if not retired:  # nothing to wait for: the next reload is not held up by a slow receiver
        return
    await service.worker.wait_in_flight()
    for sink in retired:
        await sink.close()
        service.retired_sinks.remove(sink)


def _monotonic_us() -> int:
    # sd_notify's RELOADING=1 wants CLOCK_MONOTONIC, which the event loop's clock is on Linux.
    return int(asyncio.get_running_loop().time() * 1e6)


async def _listen(address: str, app: web.Application) -> web.AppRunner | None:
    """Serve ``/healthz``, ``/metrics`` and the operator page on ``HOST:PORT`` (nothing when
    ``address`` is "")."""
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
    log.info("http_listening", address=address, paths=["/healthz", "/metrics", "/"])
    return runner


async def _watchdog(notifier: Notifier, service: Service) -> None:
    """``WATCHDOG=1`` at half the watchdog interval, only while both loops make progress;
    runs until cancelled."""
    if notifier.watchdog_s is None:
        return
    clock, scheduler = service.runtime.clock, service.scheduler
    while True:
        polling_ok = scheduler.running and service.runner.longest_run_s() < STUCK_RUN_S
        delivery_ok = clock.monotonic() - service.worker.last_tick < STUCK_RUN_S
        if polling_ok and delivery_ok:
            notifier.notify("WATCHDOG=1")
        await clock.sleep(notifier.watchdog_s / 2)
