"""What each ``drgreen-poller`` subcommand does once its arguments are parsed.

Each ``cmd_*`` loads the configuration (when it needs one), sets up logging, calls one async
function of ``daemon``, ``admin``, ``sandbox``, ``listener`` or ``demo``, prints the result and
returns an exit code: 0 ok, 1 failure, 2 usage or configuration error. The commands over the
state database are ``commands_state``'s. No argument parsing here (``cli`` does it) and no work
of its own.
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


def config_of(args: argparse.Namespace) -> Config:
    """The configuration ``-c``/``$DRGREEN_POLLER_CONFIG`` names, its warnings on stderr."""
    config = load_config(config_path(args.config, os.environ))
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def configure_logs(
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

    config = config_of(args)
    output = configure_logs(args, config, sys.stdout, on_closed=_stop_as_if_terminated)
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

    config = config_of(args)
    configure_logs(args, config, sys.stderr)
    try:
        # A state the daemon cannot write is a problem of this file on this host: exit 2.
        if isinstance(config.state, Path):
            check_writable(config.state)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    names = ", ".join(h.name for h in config.holders)
    print(
        f"{config.path}: ok ({len(config.holders)} holder(s): {names}; {len(config.sinks)} sink(s))"
    )
    if not args.online:
        return EXIT_OK
    from drgreen_poller.online_check import check_online

    results = asyncio.run(check_online(config, SystemClock()))
    for result in results:
        print(f"{result.holder}: {'ok' if result.ok else 'FAILED'}: {result.message}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def cmd_poll_once(args: argparse.Namespace) -> int:
    from drgreen_poller.daemon import poll_once
    from drgreen_poller.events import encode
    from drgreen_poller.progress_bar import PollBar, wants_bar

    config = config_of(args)
    bar = PollBar(sys.stderr, enabled=wants_bar(sys.stderr, os.environ))
    configure_logs(args, config, bar.log_stream)
    if args.dry_run and isinstance(config.state, Path) and not config.state.exists():
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


def cmd_listen(args: argparse.Namespace) -> int:
    from aiohttp import web

    from drgreen_poller.admin import listen_secrets
    from drgreen_poller.listener import ListenerState, build_listener

    config = config_of(args) if (args.config or os.environ.get("DRGREEN_POLLER_CONFIG")) else None
    configure_logs(args, config, sys.stderr)
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
    configure_logs(args, None, sys.stderr)

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
