"""What each ``drgreen-poller`` subcommand does once its arguments are parsed.

Each ``cmd_*`` loads the configuration (when it needs one), sets up logging, calls one async
function of ``daemon``, ``admin``, ``sandbox``, ``listener`` or ``demo``, prints the result and
returns an exit code: 0 ok, 1 failure, 2 usage or configuration error. No argument parsing here
(``cli`` does it) and no work of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, cast

from drgreen_poller import logs
from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, config_path, load_config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# What a shell reports for `git log | head`: killed by SIGPIPE (128 + 13). Python ignores
# SIGPIPE (so a dropped socket never kills the daemon) and raises BrokenPipeError instead.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _run_until_signalled(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on a fresh loop; SIGINT or SIGTERM cancel it and count as a clean stop."""

    async def runner() -> int:
        task = asyncio.ensure_future(main())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return EXIT_OK
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())


def _load(args: argparse.Namespace) -> Config:
    config = load_config(config_path(args.config, os.environ))
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def _configure_logs(
    args: argparse.Namespace,
    config: Config | None,
    stream: Any,
    on_closed: Callable[[], None] = lambda: None,
) -> logs.LogOutput:
    level = args.log_level or (config.daemon.log_level if config else "info")
    fmt = args.log_format or (config.daemon.log_format if config else "auto")
    return logs.configure(level, fmt, stream=stream, on_closed=on_closed)


def _stop_as_if_terminated() -> None:
    """The log's reader is gone (`run | grep -m1 ...`): stop the way SIGTERM does."""
    os.kill(os.getpid(), signal.SIGTERM)


def cmd_run(args: argparse.Namespace) -> int:
    from drgreen_poller.daemon import Controls, run_daemon

    config = _load(args)
    output = _configure_logs(args, config, sys.stdout, on_closed=_stop_as_if_terminated)
    path = config_path(args.config, os.environ)

    async def main() -> int:
        controls = Controls()
        controls.install(asyncio.get_running_loop())
        # A reload reads the same file again, with the environment of now.
        await run_daemon(config, SystemClock(), controls, lambda: load_config(path))
        return EXIT_OK

    # What is alive now (modules, their tables, the config) lives as long as the process: moved
    # out of the collector's sight, a full collection does not walk it again and again (about
    # 50,000 objects, 20 ms a time, every few thousand deliveries).
    gc.collect()
    gc.freeze()
    code = asyncio.run(main())
    return EXIT_BROKEN_PIPE if output.reader_gone else code


def cmd_check_config(args: argparse.Namespace) -> int:
    from drgreen_poller.errors import ConfigError, StoreError
    from drgreen_poller.store.files import check_writable

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    try:
        # A state the daemon cannot write is a problem of this file on this host: exit 2.
        check_writable(config.daemon.state_path)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    names = ", ".join(h.name for h in config.holders)
    print(
        f"{config.path}: ok ({len(config.holders)} holder(s): {names}; {len(config.sinks)} sink(s))"
    )
    if not args.online:
        return EXIT_OK
    from drgreen_poller.admin import check_online

    results = asyncio.run(check_online(config, SystemClock()))
    for result in results:
        print(f"{result.holder}: {'ok' if result.ok else 'FAILED'}: {result.message}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def cmd_poll_once(args: argparse.Namespace) -> int:
    from drgreen_poller.daemon import poll_once
    from drgreen_poller.events import encode
    from drgreen_poller.progress_bar import PollBar, wants_bar

    config = _load(args)
    bar = PollBar(sys.stderr, enabled=wants_bar(sys.stderr, os.environ))
    _configure_logs(args, config, bar.log_stream)
    if args.dry_run and not config.daemon.state_path.exists():
        print(
            f"no state at {config.daemon.state_path} yet: showing what a first pass would "
            "find, against an empty state (nothing written)",
            file=sys.stderr,
        )
    with bar:
        polled = poll_once(config, SystemClock(), dry_run=args.dry_run, on_progress=bar.update)
        results, failures = asyncio.run(polled)
    events = [event for result in results for event in result.events]
    for event in events:
        print(encode(event))
    for result in results:
        if result.first_sync and result.observed and not result.events:
            print(
                f"{result.holder}/{result.tier}: first sync, {result.observed} record(s) taken "
                'as they are, without events (first_sync = "seed"); later changes are events',
                file=sys.stderr,
            )
    requests = sum(r.requests for r in results)
    verb = "would be recorded (dry run: nothing written)" if args.dry_run else "recorded"
    print(f"{len(events)} event(s) {verb}; {requests} request(s)", file=sys.stderr)
    for holder, tier, error in failures:
        print(f"error: {holder}/{tier}: {error}", file=sys.stderr)
    return EXIT_FAILURE if failures else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import status_report

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    report = asyncio.run(status_report(config, SystemClock().now()))
    code = EXIT_OK if report["healthy"] else EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
        return code
    print(f"state: {report['state_path']}")
    print(_state_origin(report["state"]))
    for holder in report["holders"]:
        paused = holder["unauthorized_since"]
        print(f"holder {holder['name']}" + (f"  UNAUTHORIZED since {paused}" if paused else ""))
        for tier in holder["tiers"]:
            size = "" if tier["active"] is None else f"{tier['active']:>6} tracked"
            failures = tier["consecutive_failures"]
            trouble = f"  {failures} failure(s): {tier['last_error']}" if failures else ""
            print(
                f"  {tier['tier']:14}{size:>15}  last ok {tier['last_success_at'] or 'never':24}"
                f"  next {tier['next_due_at'] or '-'}{trouble}"
            )
            if tier["sweep"]:
                print(_sweep_line(tier["sweep"]))
    for sink, states in report["deliveries"].items():
        shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "empty"
        print(f"sink {sink}: {shown}")
    print("health: ok" if report["healthy"] else "health: UNHEALTHY")
    for problem in report["problems"]:
        print(f"  {problem}")
    return code


def _sweep_line(sweep: dict[str, Any]) -> str:
    """A tier run reading its pages now, or one left by a daemon that stopped (``stalled``)."""
    expected = sweep["expected_records"]
    read = f"{sweep['pages']} page(s), {sweep['records']:,}" + (
        f" of {expected:,} records" if expected else " records"
    )
    quiet = _ago(sweep["updated_s_ago"])
    if sweep["stalled"]:
        return (
            f"    stalled: the sweep begun {sweep['started_at']} stopped at {read}, {quiet} ago"
            " (was the daemon stopped?)"
        )
    return f"    sweeping since {sweep['started_at']}: {read} (last page {quiet} ago)"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _state_origin(state: dict[str, Any]) -> str:
    """When the state began and, if it was restored, when and why (history may be missing)."""
    if state["new"] and state["restore_reason"]:
        return f"  began {state['began_at']}: {state['restore_reason']}"
    if state["new"]:
        return f"  began {state['began_at']} (just now: there was no state at this path)"
    line = f"  began {state['began_at'] or 'before drgreen-poller recorded it'}"
    if state["restored_at"]:
        line += f"; {state['restore_reason']} (noticed {state['restored_at']})"
    return line


def cmd_events_list(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import event_patterns, list_events, parse_since
    from drgreen_poller.events import encode

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    patterns = event_patterns(args.type)
    since = parse_since(args.since, SystemClock().now()) if args.since else None
    events = asyncio.run(list_events(config, patterns=patterns, since=since, limit=args.limit))
    for event in events:
        if args.json:
            print(encode(event))
        else:
            resource = event["resource"]
            flag = " (inferred)" if event["inferred"] else ""
            print(
                f"{event['observed_at']}  {event['holder']:10} {event['type']:32}"
                f" {resource['type']} {resource['id']} #{event['sequence']}{flag}"
            )
    if not events:
        _say_none("events")
    return EXIT_OK


def _say_none(what: str) -> None:
    """An empty listing: a line for a person at a terminal; nothing for a program (JSON Lines
    or plain, an empty result is no lines)."""
    if sys.stdout.isatty():
        print(f"no {what}")


def cmd_backup(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import backup

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    target, size = asyncio.run(backup(config, args.path, SystemClock()))
    print(f"backed up {config.daemon.state_path} to {target} ({size:,} bytes)")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import restore

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    kept = restore(config, Path(args.path), SystemClock())
    print(f"restored {args.path} to {config.daemon.state_path}")
    if kept:
        print(f"the database it replaced is kept as {kept}")
    return EXIT_OK


def cmd_track(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import track

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    print(asyncio.run(track(config, args.kind, args.id, args.holder, SystemClock().now())))
    return EXIT_OK


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    from drgreen_poller.deliveries import list_deliveries

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    listing = asyncio.run(
        list_deliveries(
            config, state=args.state, sink=args.sink, limit=args.limit, attempts=args.attempts
        )
    )
    for delivery in listing:
        if args.json:
            print(json.dumps(delivery.json(), separators=(",", ":")))
            continue
        row = delivery.row
        print(
            f"{row.id:>7} {row.sink:12} {row.state:10} attempts={row.attempts:<2}"
            f" {row.event_type:30} {row.event_id}  last={row.last_outcome or '-'}"
        )
        for a in delivery.attempts:
            outcome = a["status"] if a["status"] is not None else a["error_class"] or ""
            excerpt = (a["response_excerpt"] or "")[:60].replace("\n", " ")
            print(
                f"{row.id:>7}.{a['attempt']} {a['started_at']} {a['duration_ms']:>8.1f} ms"
                f"  {'ok' if a['ok'] else 'failed'} {outcome}  {excerpt}"
            )
    if not listing:
        _say_none("deliveries")
    return EXIT_OK


def cmd_deliveries_retry(args: argparse.Namespace) -> int:
    from drgreen_poller.deliveries import retry_deliveries, retry_failed

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    now = SystemClock().now()
    if args.all_failed:
        count = asyncio.run(retry_failed(config, now))
        print(f"{count} delivery(ies) requeued")
        return EXIT_OK
    refused = 0
    for delivery_id, why in asyncio.run(retry_deliveries(config, args.ids, now)).items():
        if why is None:
            print(f"delivery {delivery_id} requeued")
        else:
            refused += 1
            print(f"error: delivery {delivery_id} not requeued: {why}", file=sys.stderr)
    return EXIT_FAILURE if refused else EXIT_OK


def cmd_deliveries_replay(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import parse_since
    from drgreen_poller.deliveries import replay

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    now = SystemClock().now()
    count = asyncio.run(replay(config, args.sink, parse_since(args.since, now), now))
    print(f"{count} event(s) queued again for {args.sink}")
    return EXIT_OK


def cmd_listen(args: argparse.Namespace) -> int:
    from aiohttp import web

    from drgreen_poller.admin import listen_secrets
    from drgreen_poller.listener import ListenerState, build_listener

    config = _load(args) if (args.config or os.environ.get("DRGREEN_POLLER_CONFIG")) else None
    _configure_logs(args, config, sys.stderr)
    state = ListenerState(listen_secrets(config, args.secret), fail_first=args.fail_first)

    def say(line: str) -> None:
        print(line, flush=True)

    async def main() -> int:
        runner = web.AppRunner(build_listener(state, SystemClock(), say), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
        except OSError as exc:
            await runner.cleanup()
            print(
                f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
            )
            return EXIT_FAILURE
        say(f"listening on http://{args.host}:{args.port}/ ({len(state.secrets)} secret(s))")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
        return EXIT_OK

    return _run_until_signalled(main)


def cmd_secret(args: argparse.Namespace) -> int:
    from drgreen_poller.webhook_signing import generate_webhook_secret

    print(generate_webhook_secret())
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from drgreen_poller.sandbox import run_sandbox

    # stdout is a data channel (the ready line, read by scripts that may stop reading after
    # it), so the sandbox logs to stderr.
    _configure_logs(args, None, sys.stderr)

    out: TextIO = sys.stdout
    if args.write_config:
        out = cast(TextIO, _Announcement(sys.stdout, Path(args.write_config)))

    async def main() -> int:
        try:
            await run_sandbox(args.host, args.port, out=out, speed=args.speed)
        except OSError as exc:
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK

    return _run_until_signalled(main)


class _Announcement(io.TextIOBase):
    """Passes the sandbox's output through, writing the trial config from its first line."""

    def __init__(self, out: TextIO, directory: Path) -> None:
        self._out, self._directory, self._pending = out, directory, True

    def write(self, text: str) -> int:
        if self._pending and text.strip():
            from drgreen_poller.trial import next_steps, program_name, write_trial_config

            self._pending = False
            path = write_trial_config(self._directory, json.loads(text))
            program = program_name(sys.argv[0], sys.executable, shutil.which)
            print(next_steps(path, program), file=sys.stderr, flush=True)
        return self._out.write(text)

    def flush(self) -> None:
        self._out.flush()


def cmd_demo(args: argparse.Namespace) -> int:
    from drgreen_poller.demo import DaemonLines, run_demo

    # One printer: the daemon's log lines (warnings and up unless asked) are lines of the
    # story, never a second stream racing it on the terminal.
    lines = DaemonLines(sys.stdout, raw=args.log_format == "json")
    logs.configure(args.log_level or "warning", "json", stream=cast(TextIO, lines))

    async def main() -> int:
        await run_demo(out=sys.stdout)
        return EXIT_OK

    return _run_until_signalled(main)
