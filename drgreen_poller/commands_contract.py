"""What ``events schema`` and ``trigger`` do once their arguments are parsed: the event contract
as a receiver's developer meets it.

Each prints what ``contract`` or ``trigger`` computed and returns an exit code (``commands``'
codes); unknown types and sinks reach the CLI as one ``ConfigError`` line (exit 2). No argument
parsing, no work of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from drgreen_poller.clock import SystemClock
from drgreen_poller.commands import EXIT_FAILURE, EXIT_OK, config_of, configure_logs
from drgreen_poller.store import DeliveryState

if TYPE_CHECKING:  # imported when the command runs, as every command's work is
    from drgreen_poller.trigger import SinkResult


def cmd_events_schema(args: argparse.Namespace) -> int:
    from drgreen_poller.contract import schema_text

    sys.stdout.write(schema_text(args.type))
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    from drgreen_poller.trigger import chosen_sinks, trigger

    config = config_of(args)
    chosen_sinks(config, args.type, args.sink)  # a usage error before anything is written
    configure_logs(args, config, sys.stderr)
    report = asyncio.run(trigger(config, args.type, args.sink, SystemClock()))
    event = report.event
    resource = event["resource"]
    print(
        f"sent test event {event['id']} ({event['type']}, holder {event['holder']}, "
        f"{resource['type']} {resource['id']})"
    )
    for result in report.results:
        print(f"  {result.sink}: {_said(result, daemon=report.delivered_by == 'daemon')}")
    return EXIT_OK if report.ok else EXIT_FAILURE


def _answer(result: SinkResult) -> str:
    """The last attempt's answer: ``HTTP 500: store down``, or the error's own words."""
    if (result.outcome or "").isdigit():
        status = f"HTTP {result.outcome}"
        return f"{status}: {result.excerpt}" if result.excerpt else status
    return result.excerpt or f"{result.outcome}"


def _said(result: SinkResult, *, daemon: bool) -> str:
    """One sink's result, and what happens next."""
    state, answer = result.state, _answer(result)
    if state == DeliveryState.DELIVERED:
        who = "the running daemon" if daemon else "this command (no daemon is running)"
        return f"delivered ({answer}) by {who}"
    if state == DeliveryState.PENDING:
        then = "the daemon retries it" if daemon else "'drgreen-poller run' retries it"
        return f"attempt failed ({answer}); {then} on its retry schedule"
    if state == DeliveryState.FAILED:
        return f"failed ({answer}); 'drgreen-poller deliveries retry' requeues it"
    if daemon:
        return (
            "queued: the running daemon has not attempted it yet "
            f"(see 'drgreen-poller deliveries list --sink {result.sink}')"
        )
    return "queued behind deliveries due before it: 'drgreen-poller run' delivers them in order"
