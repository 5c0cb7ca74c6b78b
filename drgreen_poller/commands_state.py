"""What the subcommands over the state database do once their arguments are parsed.

``status``, ``events list``, ``track``, ``backup``, ``restore`` and the ``deliveries`` tools: each
loads the configuration, calls one function of ``admin``, ``backup`` or ``deliveries``, prints
the result and returns an exit code (``commands``' codes). No argument parsing, no work of its
own, and nothing here runs the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drgreen_poller.clock import SystemClock
from drgreen_poller.commands import EXIT_FAILURE, EXIT_OK, config_of, configure_logs

if TYPE_CHECKING:
    from drgreen_poller.config import StoreConfig


def cmd_status(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import status_report

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
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
    for line in _instance_lines(report["instances"]):
        print(line)
    for sink, states in report["deliveries"].items():
        shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "empty"
        print(f"sink {sink}: {shown}")
    print("health: ok" if report["healthy"] else "health: UNHEALTHY")
    for problem in report["problems"]:
        print(f"  {problem}")
    return code


def _instance_lines(instances: list[dict[str, Any]] | None) -> list[str]:
    """The daemons sharing a PostgreSQL database and the holders each holds (SQLite: none)."""
    if instances is None:
        return []
    if not instances:
        return ["instances: none running"]
    lines = [f"instances: {len(instances)}"]
    for row in instances:
        held = ", ".join(row["holders"]) or "no holder"
        gone = "" if row["alive"] else "  SILENT (its leases expire; another takes them over)"
        lines.append(
            f"  {row['id']}  host {row['host']} pid {row['pid']}  started {row['started_at']}"
            f"  heartbeat {row['heartbeat_at']}  holds {held}{gone}"
        )
    return lines


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

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
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
    from drgreen_poller.backup import backup

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    target, size = asyncio.run(backup(config, args.path, SystemClock()))
    print(f"backed up {config.state_shown} to {target} ({size:,} bytes)")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from drgreen_poller.backup import restore

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    kept = restore(config, Path(args.path), SystemClock())
    print(f"restored {args.path} to {config.daemon.state_path}")
    if kept:
        print(f"the database it replaced is kept as {kept}")
    return EXIT_OK


def cmd_migrate_state(args: argparse.Namespace) -> int:
    from drgreen_poller.migrate_state import migrate_state, target_of

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    target, warnings = target_of(
        config,
        args.to,
        password_file=args.password_file,
        password_env=args.password_env,
        environ=os.environ,
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    report = asyncio.run(migrate_state(config, target, SystemClock()))
    print(f"copied {config.daemon.state_path} into {target.shown}, every id kept:")
    for table, rows in report.rows.items():
        print(f"  {table:16}{rows:>10,}")
    if report.requeued_in_flight:
        print(
            f"  {report.requeued_in_flight} delivery(ies) in flight when the daemon stopped"
            " are pending again, under their ids"
        )
    print(
        f"next event seq {report.next_ids['events']:,},"
        f" next delivery id {report.next_ids['deliveries']:,}"
    )
    for line in _after_migrating(target, given=args.to is not None):
        print(line)
    return EXIT_OK


def _after_migrating(target: StoreConfig, *, given: bool) -> list[str]:
    """What the operator does next: point the configuration at the database, then start."""
    steps = ["next:"]
    if given:
        steps += [
            "  1. add to the configuration:",
            "       [store]",
            f'       url = "{target.shown}"',
            "       password_file = ...   (or password_env; not needed with peer auth or .pgpass)",
            "  2. start the daemon (systemctl restart drgreen-poller): it continues from the copy",
        ]
    else:
        steps.append(
            "  start the daemon (systemctl restart drgreen-poller): it continues from the copy"
        )
    steps.append(
        "  never start a daemon on the SQLite file again: it would send again what the one on"
        " PostgreSQL sends (keep the file as a record until you no longer need it)"
    )
    return steps


def cmd_track(args: argparse.Namespace) -> int:
    from drgreen_poller.admin import track

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    print(asyncio.run(track(config, args.kind, args.id, args.holder, SystemClock().now())))
    return EXIT_OK


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    from drgreen_poller.deliveries import list_deliveries

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
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

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
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

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    now = SystemClock().now()
    count = asyncio.run(replay(config, args.sink, parse_since(args.since, now), now))
    print(f"{count} event(s) queued again for {args.sink}")
    return EXIT_OK
