"""The ``drgreen-poller`` command line: thin argparse subcommands that each call one async function.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error. Every anticipated failure becomes
one ``error: ...`` line on stderr; a traceback reaching the user is a bug. The work itself lives
in ``daemon`` (run, poll-once), ``admin`` (status, events, track, online checks), ``sandbox``
and ``demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from drgreen_poller import __version__, logs
from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, config_path, load_config
from drgreen_poller.errors import ConfigError, DrGreenError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_SANDBOX_PORT = 8700


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not between 0 and 65535")
    return port


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is not above 0 and at most 1000")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drgreen-poller",
        description="Webhooks for the Dr Green DAPP API: poll politely, deliver signed events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="the TOML configuration (default: $DRGREEN_POLLER_CONFIG, then "
        "/etc/drgreen-poller/config.toml)",
    )
    parser.add_argument("--log-level", choices=logs.LEVELS, help="override [daemon] log_level")
    parser.add_argument(
        "--log-format", choices=logs.LOG_FORMATS, help="override [daemon] log_format"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _daemon_commands(commands)
    _operator_commands(commands)
    _delivery_commands(commands)
    _tool_commands(commands)
    return parser


def _daemon_commands(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Poll every holder's tiers on schedule and record events until stopped "
        "(SIGINT/SIGTERM). A second run on the same state database refuses to start.",
    )
    run.set_defaults(handler=_cmd_run)
    check = commands.add_parser(
        "check-config",
        help="validate the configuration",
        description="Load and validate the configuration; with --online, make one signed call "
        "per holder and explain a refusal.",
    )
    check.add_argument("--online", action="store_true", help="also try each holder's key")
    check.set_defaults(handler=_cmd_check_config)
    once = commands.add_parser(
        "poll-once",
        help="one pass of every tier, printing the events",
        description="Poll every tier of every holder once and print the events as JSON lines. "
        "They are recorded (and queued for the sinks) unless --dry-run is given.",
    )
    once.add_argument("--dry-run", action="store_true", help="write nothing, only show")
    once.set_defaults(handler=_cmd_poll_once)


def _operator_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="active sets, polls, failures and delivery backlog",
        description="Per holder: active set size per tier, last and next poll, failures; "
        "delivery backlog per sink. Safe while the daemon runs.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)
    events = commands.add_parser("events", help="the event log", description="The event log.")
    events_commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    listing = events_commands.add_parser(
        "list", help="list logged events", description="List logged events, oldest first."
    )
    listing.add_argument(
        "--type", action="append", metavar="GLOB", help="event types, e.g. 'order.*' (repeatable)"
    )
    listing.add_argument("--since", metavar="T", help="an ISO-8601 time or a duration ago (2h)")
    listing.add_argument(
        "--limit", type=_positive_int, default=100, help="at most this many, newest (default 100)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON event per line")
    listing.set_defaults(handler=_cmd_events_list)
    track = commands.add_parser(
        "track",
        help="watch an order or client from now on",
        description="Add an order or client to the active set, e.g. right after the store "
        "created it, so its first events are not left to discovery.",
    )
    track.add_argument("kind", choices=("order", "client"))
    track.add_argument("id", help="the Dr Green id (a UUID)")
    track.add_argument("--holder", metavar="NAME", help="needed when several holders exist")
    track.set_defaults(handler=_cmd_track)


def _delivery_commands(commands: Any) -> None:
    deliveries = commands.add_parser(
        "deliveries", help="the delivery log and its repairs", description="The delivery log."
    )
    actions = deliveries.add_subparsers(dest="deliveries_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", help="list deliveries", description="Deliveries, newest first."
    )
    listing.add_argument("--state", choices=("pending", "delivering", "delivered", "failed"))
    listing.add_argument("--sink", metavar="NAME")
    listing.add_argument("--limit", type=_positive_int, default=50, help="(default 50)")
    listing.add_argument("--attempts", action="store_true", help="show every attempt too")
    listing.set_defaults(handler=_cmd_deliveries_list)
    retry = actions.add_parser(
        "retry",
        help="requeue failed deliveries",
        description="Requeue deliveries with a fresh retry schedule; receivers see the same "
        "webhook-id as before. Safe while the daemon runs (it picks them up within seconds).",
    )
    chosen = retry.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", type=_positive_int, default=[], metavar="ID")
    chosen.add_argument("--all-failed", action="store_true", help="every failed delivery")
    retry.set_defaults(handler=_cmd_deliveries_retry)
    replay = actions.add_parser(
        "replay",
        help="send past events to a sink again",
        description="New deliveries to a sink of every event it takes since a time (same "
        "event ids, so receivers can tell repeats).",
    )
    replay.add_argument("--since", required=True, metavar="T", help="ISO-8601 time or 2h, 7d")
    replay.add_argument("--sink", required=True, metavar="NAME")
    replay.set_defaults(handler=_cmd_deliveries_replay)
    listen = commands.add_parser(
        "listen",
        help="a local receiver that verifies and prints events",
        description="Receive webhooks on 127.0.0.1, verify their signatures and print each "
        "event (for store developers). Secrets: --secret, else the configuration's webhook sinks.",
    )
    listen.add_argument("--port", type=_port, default=8080, help="(default 8080)")
    listen.add_argument("--host", default="127.0.0.1", help="(default 127.0.0.1)")
    listen.add_argument("--secret", action="append", default=[], help="whsec_... (repeatable)")
    listen.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="answer 503 to the first N"
    )
    listen.set_defaults(handler=_cmd_listen)
    secret = commands.add_parser(
        "secret", help="print a new whsec_ secret", description="Print a new webhook secret."
    )
    secret.set_defaults(handler=_cmd_secret)


def _tool_commands(commands: Any) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="run the local Dr Green sandbox",
        description=(
            "Serve the Dr Green sandbox: the DAPP API under /api/v1 (signed like the real one) "
            "and its control API under /_sandbox/. The first line on stdout is a JSON object "
            "with base_url, api_key and secret_key of a seeded holder."
        ),
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    sandbox.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_SANDBOX_PORT,
        help=f"port, 0 for any free one (default: {DEFAULT_SANDBOX_PORT})",
    )
    sandbox.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help="also play a story (sign-ups, approvals, payments, shipping): one step every "
        "5 s divided by X, each printed as a 'story:' line",
    )
    sandbox.add_argument(
        "--write-config",
        metavar="DIR",
        help="also write DIR/config.toml and key files for trying the daemon on this sandbox",
    )
    sandbox.set_defaults(handler=_cmd_sandbox)
    demo = commands.add_parser(
        "demo",
        help="a scripted tour on an in-process sandbox",
        description=(
            "Start a sandbox in this process and walk a customer and an order through their "
            "lifecycles with the signed API client, printing what Dr Green reports at each step."
        ),
    )
    demo.set_defaults(handler=_cmd_demo)


# --- running ------------------------------------------------------------------------------------


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


def _configure_logs(args: argparse.Namespace, config: Config | None, stream: Any) -> None:
    level = args.log_level or (config.daemon.log_level if config else "info")
    fmt = args.log_format or (config.daemon.log_format if config else "auto")
    logs.configure(level, fmt, stream=stream)


def _cmd_run(args: argparse.Namespace) -> int:
    from drgreen_poller.daemon import run_daemon

    config = _load(args)
    _configure_logs(args, config, sys.stdout)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_daemon(config, SystemClock(), stop)
        return EXIT_OK

    return asyncio.run(main())


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    _configure_logs(args, config, sys.stderr)
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


def _cmd_poll_once(args: argparse.Namespace) -> int:
    from drgreen_poller.daemon import poll_once
    from drgreen_poller.events import encode

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    results, failures = asyncio.run(poll_once(config, SystemClock(), dry_run=args.dry_run))
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


def _cmd_status(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import status_report

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    report = asyncio.run(status_report(config))
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"state: {report['state_path']}")
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
    for sink, states in report["deliveries"].items():
        shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "empty"
        print(f"sink {sink}: {shown}")
    return EXIT_OK


def _cmd_events_list(args: argparse.Namespace) -> int:
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
    return EXIT_OK


def _cmd_track(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import track

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    print(asyncio.run(track(config, args.kind, args.id, args.holder, SystemClock().now())))
    return EXIT_OK


def _cmd_deliveries_list(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import list_deliveries

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    rows = asyncio.run(list_deliveries(config, state=args.state, sink=args.sink, limit=args.limit))
    for row in rows:
        print(
            f"{row.id:>7} {row.sink:12} {row.state:10} attempts={row.attempts:<2}"
            f" {row.event_type:30} {row.event_id}  last={row.last_outcome or '-'}"
        )
    if args.attempts and rows:
        asyncio.run(_print_attempts(config, [row.id for row in rows]))
    return EXIT_OK


async def _print_attempts(config: Config, ids: Sequence[int]) -> None:
    from drgreen_poller.store import Store

    store = await Store.open(config.daemon.state_path)
    try:
        for delivery_id in ids:
            for a in await store.attempts(delivery_id):
                outcome = a["status"] if a["status"] is not None else a["error_class"] or ""
                excerpt = (a["response_excerpt"] or "")[:60].replace("\n", " ")
                print(
                    f"{delivery_id:>7}.{a['attempt']} {a['started_at']} {a['duration_ms']:>8.1f} ms"
                    f"  {'ok' if a['ok'] else 'failed'} {outcome}  {excerpt}"
                )
    finally:
        await store.close()


def _cmd_deliveries_retry(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import retry_deliveries

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    ids = None if args.all_failed else args.ids
    count = asyncio.run(retry_deliveries(config, ids, SystemClock().now()))
    print(f"{count} delivery(ies) requeued")
    return EXIT_OK if count or args.all_failed else EXIT_FAILURE


def _cmd_deliveries_replay(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import parse_since, replay

    config = _load(args)
    _configure_logs(args, config, sys.stderr)
    now = SystemClock().now()
    count = asyncio.run(replay(config, args.sink, parse_since(args.since, now), now))
    print(f"{count} event(s) queued again for {args.sink}")
    return EXIT_OK


def _cmd_listen(args: argparse.Namespace) -> int:
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


def _cmd_secret(args: argparse.Namespace) -> int:
    from drgreen_poller.signing import generate_webhook_secret

    print(generate_webhook_secret())
    return EXIT_OK


def _cmd_sandbox(args: argparse.Namespace) -> int:
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
            from drgreen_poller.trial import write_trial_config

            self._pending = False
            path = write_trial_config(self._directory, json.loads(text))
            print(f"wrote {path}; try: drgreen-poller -c {path} poll-once", file=sys.stderr)
        return self._out.write(text)

    def flush(self) -> None:
        self._out.flush()


def _cmd_demo(args: argparse.Namespace) -> int:
    from drgreen_poller.demo import run_demo

    # The story is the output; the daemon's own log lines only when asked for.
    logs.configure(args.log_level or "warning", args.log_format or "auto", stream=sys.stderr)

    async def main() -> int:
        await run_demo(out=sys.stdout)
        return EXIT_OK

    return _run_until_signalled(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drgreen-poller`` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except DrGreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
