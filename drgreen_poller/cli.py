"""The ``drgreen-poller`` command line: thin argparse subcommands that each call one async function.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error. Every anticipated failure becomes
one ``error: ...`` line on stderr; a traceback reaching the user is a bug. The work itself lives
in the modules the subcommands call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from drgreen_poller import __version__, logs
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drgreen-poller",
        description="Webhooks for the Dr Green DAPP API: poll politely, deliver signed events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", choices=logs.LEVELS, default="info", help="log verbosity (default: info)"
    )
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default="auto",
        help="auto: console on a terminal, JSON otherwise (default: auto)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local Dr Green sandbox",
        description=(
            "Serve the Dr Green sandbox: the DAPP API under /api/v1 (signed like the real one) "
            "and its control API under /_sandbox/. The first line on stdout is a JSON object "
            "with base_url, api_key and secret_key of a seeded holder."
        ),
    )
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    sandbox.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_SANDBOX_PORT,
        help=f"port to listen on, 0 for any free port (default: {DEFAULT_SANDBOX_PORT})",
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
    return parser


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


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from drgreen_poller.sandbox import run_sandbox

    async def main() -> int:
        try:
            await run_sandbox(args.host, args.port, out=sys.stdout)
        except OSError as exc:
            print(
                f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        return EXIT_OK

    return _run_until_signalled(main)


def _cmd_demo(args: argparse.Namespace) -> int:
    from drgreen_poller.demo import run_demo

    async def main() -> int:
        await run_demo(out=sys.stdout)
        return EXIT_OK

    return _run_until_signalled(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drgreen-poller`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The sandbox's stdout is a data channel (its ready line, read by scripts that may stop
    # reading after it), so its logs go to stderr; everything else logs to stdout.
    log_stream = sys.stderr if args.command == "sandbox" else sys.stdout
    logs.configure(args.log_level, args.log_format, stream=log_stream)
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
