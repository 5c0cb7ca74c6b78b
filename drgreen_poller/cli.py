"""The ``drgreen-poller`` command line: the argparse tree and the entry point.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error. Every anticipated failure becomes
one ``error: ...`` line on stderr; a traceback reaching the user is a bug. What each subcommand
does lives in ``commands``; the work itself in ``daemon``, ``admin``, ``sandbox`` and ``demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from drgreen_poller import __version__, logs
from drgreen_poller import commands as handlers
from drgreen_poller import commands_contract as contract_handlers
from drgreen_poller import commands_state as state_handlers
from drgreen_poller.cli_values import port_number, positive_float, positive_int
from drgreen_poller.commands import EXIT_BROKEN_PIPE, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from drgreen_poller.errors import ConfigError, DrGreenError
from drgreen_poller.store import DeliveryState

DEFAULT_SANDBOX_PORT = 8700


def _add_globals(parser: argparse.ArgumentParser, default: Any) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (``check-config -c FILE``)."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default,
        help="the TOML configuration (default: $DRGREEN_POLLER_CONFIG, then "
        "/etc/drgreen-poller/config.toml)",
    )
    parser.add_argument(
        "--log-level", choices=logs.LEVELS, default=default, help="override [daemon] log_level"
    )
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default=default,
        help="override [daemon] log_format",
    )
    return parser


# Given after the command's name, they replace what was given before it; absent, they leave it.
_GLOBALS = _add_globals(argparse.ArgumentParser(add_help=False), argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drgreen-poller",
        description="Webhooks for the Dr Green DAPP API: poll politely, deliver signed events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_globals(parser, None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _daemon_commands(commands)
    _operator_commands(commands)
    _delivery_commands(commands)
    _tool_commands(commands)
    return parser


def _daemon_commands(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        parents=[_GLOBALS],
        help="run the daemon",
        description="Poll every holder's tiers on schedule and record events until stopped "
        "(SIGINT/SIGTERM). A second run on the same state database refuses to start.",
    )
    run.set_defaults(handler=handlers.cmd_run)
    check = commands.add_parser(
        "check-config",
        parents=[_GLOBALS],
        help="validate the configuration",
        description="Load and validate the configuration; with --online, make one signed call "
        "per holder and explain a refusal.",
    )
    check.add_argument("--online", action="store_true", help="also try each holder's key")
    check.set_defaults(handler=handlers.cmd_check_config)
    once = commands.add_parser(
        "poll-once",
        parents=[_GLOBALS],
        help="one pass of every tier, printing the events",
        description="Poll every tier of every holder once and print the events as JSON lines. "
        "They are recorded (and queued for the sinks) unless --dry-run is given.",
    )
    once.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing, only show (with no state yet: against an empty one, creating none)",
    )
    once.set_defaults(handler=handlers.cmd_poll_once)


def _operator_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        parents=[_GLOBALS],
        help="active sets, polls, failures and delivery backlog; exit 1 when unhealthy",
        description="Per holder: active set size per tier, last and next poll, failures; "
        "delivery backlog per sink; health. Safe while the daemon runs. Exit status: 0 "
        "healthy; 1 unhealthy (a holder's key refused, a tier not polled successfully within "
        "its interval plus slack, an undelivered event older than [daemon] "
        "health_max_delivery_age, failed deliveries waiting for 'deliveries retry') or no "
        "state database; 2 configuration error.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=state_handlers.cmd_status)
    events = commands.add_parser(
        "events",
        parents=[_GLOBALS],
        help="the event log, and the events' JSON Schemas",
        description="The event log (list), and the JSON Schemas events follow (schema).",
    )
    events_commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    listing = events_commands.add_parser(
        "list",
        parents=[_GLOBALS],
        help="list logged events",
        description="List logged events, oldest first (the newest --limit of them, like tail). "
        "Nothing to list prints 'no events' on a terminal and nothing otherwise.",
    )
    listing.add_argument(
        "--type", action="append", metavar="GLOB", help="event types, e.g. 'order.*' (repeatable)"
    )
    listing.add_argument("--since", metavar="T", help="an ISO-8601 time or a duration ago (2h)")
    listing.add_argument(
        "--limit", type=positive_int, default=100, help="at most this many, newest (default 100)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON event per line")
    listing.set_defaults(handler=state_handlers.cmd_events_list)
    schema = events_commands.add_parser(
        "schema",
        parents=[_GLOBALS],
        help="print the JSON Schema of the envelope or of one type's data",
        description="Print the JSON Schema (draft 2020-12) of the event envelope, or with TYPE "
        "of that event type's data (the files under schemas/ in the repository). An unknown "
        "TYPE lists the known ones (exit 2). No configuration needed.",
    )
    schema.add_argument("type", nargs="?", metavar="TYPE", help="an event type, e.g. order.paid")
    schema.set_defaults(handler=contract_handlers.cmd_events_schema)
    track = commands.add_parser(
        "track",
        parents=[_GLOBALS],
        help="watch an order or client from now on",
        description="Add an order or client to the active set, e.g. right after the store "
        "created it, so its first events are not left to discovery.",
    )
    track.add_argument("kind", choices=("order", "client"))
    track.add_argument("id", help="the Dr Green id (a UUID)")
    track.add_argument("--holder", metavar="NAME", help="needed when several holders exist")
    track.set_defaults(handler=state_handlers.cmd_track)
    backup = commands.add_parser(
        "backup",
        parents=[_GLOBALS],
        help="copy the state database consistently, also while the daemon runs",
        description="Copy the state database with SQLite's online backup: one consistent "
        "file, safe while the daemon runs. PATH is a file or an existing directory (the copy "
        "is then named after the time). The copy is marked as a backup: put back in place "
        "(see the README, 'Backups and restores'), it moves its sequences forward so that "
        "no event id or sequence is reused.",
    )
    backup.add_argument("path", metavar="PATH", help="where to write the copy")
    backup.set_defaults(handler=state_handlers.cmd_backup)
    restore = commands.add_parser(
        "restore",
        parents=[_GLOBALS],
        help="put a backup back in place of the state (the daemon stopped)",
        description="Put a backup made by 'backup' (or any copy of a state database) in place "
        "of the state. Refused while the daemon runs. The current database is kept beside it "
        "(state.db.before-restore-TIME), never deleted. On its next start the daemon moves "
        "its sequences forward, so no event id or sequence is reused; changes made since the "
        "copy may be announced again under new ids.",
    )
    restore.add_argument("path", metavar="BACKUP", help="the copy to put back")
    restore.set_defaults(handler=state_handlers.cmd_restore)
    _migrate_command(commands)


def _migrate_command(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate-state",
        parents=[_GLOBALS],
        help="copy the SQLite state into PostgreSQL, every id kept (the daemon stopped)",
        description="Copy the SQLite state (daemon.state_path) into an empty PostgreSQL "
        "database in one transaction: holders, snapshots, events, deliveries with their "
        "attempts, sequences, all ids unchanged, so that the daemon on PostgreSQL re-sends "
        "nothing. Refused while a daemon runs on the SQLite file, and when the database already "
        "holds a state. Deliveries in flight when the daemon stopped arrive pending (same ids), "
        "as a restart makes them. The SQLite file is left as it was.",
    )
    migrate.add_argument(
        "--to",
        metavar="URL",
        help="postgresql://USER@HOST:5432/DATABASE (default: the configuration's [store] url)",
    )
    password = migrate.add_mutually_exclusive_group()
    password.add_argument(
        "--password-file", metavar="PATH", help="the database password, from this file"
    )
    password.add_argument(
        "--password-env", metavar="VAR", help="the database password, from this variable"
    )
    migrate.set_defaults(handler=state_handlers.cmd_migrate_state)


def _delivery_commands(commands: Any) -> None:
    deliveries = commands.add_parser(
        "deliveries",
        parents=[_GLOBALS],
        help="the delivery log and its repairs",
        description="The delivery log.",
    )
    actions = deliveries.add_subparsers(dest="deliveries_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        parents=[_GLOBALS],
        help="list deliveries",
        description="List deliveries, oldest first as 'events list' (the newest --limit of "
        "them, like tail). Nothing to list prints 'no deliveries' on a terminal and nothing "
        "otherwise.",
    )
    listing.add_argument("--state", choices=[state.value for state in DeliveryState])
    listing.add_argument("--sink", metavar="NAME")
    listing.add_argument(
        "--limit", type=positive_int, default=50, help="at most this many, newest (default 50)"
    )
    listing.add_argument("--attempts", action="store_true", help="show every attempt too")
    listing.add_argument(
        "--json", action="store_true", help="one JSON delivery per line (attempts in attempt_log)"
    )
    listing.set_defaults(handler=state_handlers.cmd_deliveries_list)
    retry = actions.add_parser(
        "retry",
        parents=[_GLOBALS],
        help="requeue failed deliveries",
        description="Requeue deliveries with a fresh retry schedule; receivers see the same "
        "webhook-id as before. Safe while the daemon runs (it picks them up within seconds). "
        "Each ID is confirmed or said why not (no such delivery, already delivered, being "
        "delivered); exit 1 when any ID was not requeued.",
    )
    chosen = retry.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", type=positive_int, default=[], metavar="ID")
    chosen.add_argument("--all-failed", action="store_true", help="every failed delivery")
    retry.set_defaults(handler=state_handlers.cmd_deliveries_retry)
    replay = actions.add_parser(
        "replay",
        parents=[_GLOBALS],
        help="send past events to a sink again",
        description="New deliveries to a sink of every event it takes since a time (same "
        "event ids, so receivers can tell repeats).",
    )
    replay.add_argument("--since", required=True, metavar="T", help="ISO-8601 time or 2h, 7d")
    replay.add_argument("--sink", required=True, metavar="NAME")
    replay.set_defaults(handler=state_handlers.cmd_deliveries_replay)
    listen = commands.add_parser(
        "listen",
        parents=[_GLOBALS],
        help="a local receiver that verifies and prints events",
        description="Receive webhooks on 127.0.0.1, verify their signatures and print each "
        "event (for store developers). Secrets: --secret, else the configuration's webhook sinks.",
    )
    listen.add_argument("--port", type=port_number, default=8080, help="(default 8080)")
    listen.add_argument("--host", default="127.0.0.1", help="(default 127.0.0.1)")
    listen.add_argument(
        "--secret",
        action="append",
        default=[],
        help="whsec_... (repeatable; a malformed one is refused)",
    )
    listen.add_argument(
        "--fail-first", type=int, default=0, metavar="N", help="answer 503 to the first N"
    )
    listen.set_defaults(handler=handlers.cmd_listen)
    secret = commands.add_parser(
        "secret",
        parents=[_GLOBALS],
        help="print a new whsec_ secret",
        description="Print a new webhook secret.",
    )
    secret.set_defaults(handler=handlers.cmd_secret)
    trigger = commands.add_parser(
        "trigger",
        parents=[_GLOBALS],
        help="send a sample event of a type to the sinks, as real events go",
        description='Send a sample event of TYPE (valid against its schema, marked "test": '
        "true, about a made-up resource test_...) through the outbox, signed and delivered as "
        "real events are: to --sink, else to every sink whose events filter takes TYPE. With "
        "the daemon running, its worker delivers it and this command waits for the outcome; "
        "with none, this command delivers it with the same code. Exit 1 when a delivery "
        "failed; 2 for an unknown type or sink, or a sink that does not take TYPE.",
    )
    trigger.add_argument("type", metavar="TYPE", help="an event type, e.g. order.approved")
    trigger.add_argument("--sink", metavar="NAME", help="only this sink")
    trigger.set_defaults(handler=contract_handlers.cmd_trigger)


def _tool_commands(commands: Any) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        parents=[_GLOBALS],
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
        type=port_number,
        default=DEFAULT_SANDBOX_PORT,
        help=f"port, 0 for any free one (default: {DEFAULT_SANDBOX_PORT})",
    )
    sandbox.add_argument(
        "--speed",
        type=positive_float,
        metavar="X",
        help="also play a story (sign-ups, approvals, payments, shipping): one step every "
        "5 s divided by X, each printed as a 'story:' line",
    )
    sandbox.add_argument(
        "--write-config",
        metavar="DIR",
        help="also write DIR/config.toml and key files for trying the daemon on this sandbox",
    )
    sandbox.set_defaults(handler=handlers.cmd_sandbox)
    demo = commands.add_parser(
        "demo",
        parents=[_GLOBALS],
        help="a scripted tour on an in-process sandbox",
        description=(
            "Start a sandbox in this process and walk a customer and an order through their "
            "lifecycles with the signed API client, printing what Dr Green reports at each step."
        ),
    )
    demo.set_defaults(handler=handlers.cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drgreen-poller`` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a reader gone before the last buffered lines shows here
        return code
    except BrokenPipeError:
        return _reader_gone()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except DrGreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _reader_gone() -> int:
    """Stdout's reader closed it (``| head``): end quietly, as git does.

    Standard output is pointed at /dev/null so that the interpreter's final flush of what is
    still buffered cannot fail again and print a traceback (the recipe of Python's docs).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
