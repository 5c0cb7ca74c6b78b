"""The disk tests' world: the real CLI in subprocesses, a sandbox process, mounts that always undo.

Owns starting ``drgreen-poller sandbox --port 0`` and ``drgreen-poller run`` as a user would,
an upstream driver that moves orders through the sandbox's control API and remembers every
transition it made, the check that a webhook receiver got each of them under one id, and tmpfs /
read-only bind mounts. It must not reach into the daemon: only files, processes and HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from drgreen_poller.clock import SystemClock
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests import cli_run
from tests.cli_run import CLI
from tests.fakes import WebhookReceiver

HOLDER = "demo"  # the holder the sandbox seeds and announces
# An order's steps, each moving a different field, so no poll can miss one (design §3.6).
ORDER_STEPS = (
    ("approve", "order.approved"),
    ("pay", "order.paid"),
    ("process", "order.processing"),
)
START_TIMEOUT_S = 20.0
# Waiting on real processes takes real time: the one place these tests read the clock.
CLOCK = SystemClock()


def mount_refusal() -> str | None:
    """Why mounts cannot be made here (not root, no ``mount``), or None when they can."""
    if os.geteuid() != 0:
        return "mounting a tmpfs or a read-only bind needs root (run the suite as root, as CI does)"
    if shutil.which("mount") is None:
        return "the mount command is not installed"
    return None


def _system(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a system tool by its full path (the arguments are ours: paths under ``tmp_path``)."""
    command = [shutil.which(tool) or tool, *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed tools, our own arguments


def _mount(*args: str) -> None:
    """Run ``mount``; a refusal becomes ``OSError`` with mount's own words."""
    done = _system("mount", *args)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    # Lazy: a daemon killed a moment ago may still hold a file open; the mount goes regardless.
    _system("umount", "-l", str(path))


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB on ``path`` (created), unmounted on exit whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` made read-only: a read-only bind mount as root, else mode 0555; always undone."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
        return
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system refuses another byte; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    try:
        (directory / "probe").write_bytes(b"x" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return filler
    raise AssertionError(f"{directory} still takes writes after filling it")


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """Where Dr Green is and the holder's key pair, as a config names them."""

    base_url: str
    api_key: str
    secret_key: str


@dataclass(frozen=True)
class Sandbox(Upstream):
    """A ``drgreen-poller sandbox`` process and what its ready line announced."""

    control_url: str
    process: asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def sandbox_process(log_path: Path) -> AsyncIterator[Sandbox]:
    """Start the sandbox on a free port, read its JSON ready line; stop it on exit."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *CLI, "sandbox", "--port", "0", stdout=PIPE, stderr=log
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
            ready = json.loads(line)
            yield Sandbox(
                ready["base_url"], ready["api_key"], ready["secret_key"], ready["control_url"],
                process,
            )  # fmt: skip
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


SINK = """
[[sinks]]
name = "store"
kind = "webhook"
url = "{hook_url}"
secret_file = "store.whsec"
events = ["order.*"]
"""


def write_config(
    directory: Path, upstream: Upstream, state_path: Path, hook_url: str | None
) -> Path:
    """A config for the sandbox's holder: tiny intervals, a webhook sink for order events.

    Without ``hook_url`` there is no sink: events are only recorded.
    """
    (directory / "demo.api_key").write_text(upstream.api_key)
    (directory / "demo.secret_key").write_text(upstream.secret_key)
    (directory / "store.whsec").write_text(generate_webhook_secret())
    path = directory / "config.toml"
    path.write_text(
        f"""
[daemon]
state_path = "{state_path}"
http_listen = ""

[api]
base_url = "{upstream.base_url}"
requests_per_second = 200
burst = 20

[[holders]]
name = "{HOLDER}"
api_key_file = "demo.api_key"
secret_key_file = "demo.secret_key"
strain_countries = ["GBR"]

[schedule]
active_orders = "0.2s"
stale_orders = "0.2s"
pending_kyc = "0.2s"
commissions = "0.2s"
strains = "0.2s"
jitter = 0

[delivery]
retry_schedule = ["0s", "0.2s", "0.5s", "1s", "1s", "1s", "1s", "1s"]
"""
        + (SINK.format(hook_url=hook_url) if hook_url else "")
    )
    return path


async def run_cli(config: Path, *args: str) -> tuple[int, str, str]:
    """Run one CLI command on ``config`` to its end: exit code, stdout, stderr."""
    return await cli_run.run_cli("-c", str(config), *args, timeout_s=START_TIMEOUT_S)


@dataclass
class Daemon:
    """A ``drgreen-poller run`` process logging JSON; its output is collected as it comes."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, config: Path) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            *CLI, "-c", str(config), "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        daemon = cls(process)
        assert process.stdout is not None
        assert process.stderr is not None
        daemon._readers = [
            asyncio.create_task(_collect(process.stdout, daemon.lines)),
            asyncio.create_task(_collect(process.stderr, daemon.stderr)),
        ]
        return daemon

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (anything else printed on stdout is left out)."""
        parsed = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                parsed.append(json.loads(line))
        return parsed

    def count(self, event: str, *, after: datetime | None = None, **fields: Any) -> int:
        """How many log lines named ``event`` carry ``fields`` (and came after ``after``)."""
        return sum(
            1
            for record in self.records()
            if record.get("event") == event
            and all(record.get(key) == value for key, value in fields.items())
            and (after is None or datetime.fromisoformat(record["timestamp"]) > after)
        )

    async def wait_for(
        self, event: str, *, times: int = 1, timeout_s: float = 15.0, **fields: Any
    ) -> None:
        """Wait until ``event`` with ``fields`` was logged ``times`` times; fail on an exit."""
        async with asyncio.timeout(timeout_s):
            while self.count(event, **fields) < times:
                if self.process.returncode is not None:
                    raise AssertionError(f"the daemon exited before {event}: {self.output()}")
                await CLOCK.sleep(0.05)

    async def synced(self) -> None:
        """Wait until the orders tier has polled once: later orders are new, hence events."""
        await self.wait_for("poll_finished", tier="active_orders")

    async def exit_code(self, timeout_s: float) -> int | None:
        """The exit code once the process ends within ``timeout_s``, else None (still running)."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            return None
        await asyncio.gather(*self._readers)
        return code

    async def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL if it does not stop within the timeout)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await self.exit_code(START_TIMEOUT_S)
        if code is None:
            self.process.kill()
            code = await self.exit_code(START_TIMEOUT_S)
        assert code is not None
        return code

    async def kill(self) -> None:
        """SIGKILL if still running; then wait for the process and its output to end."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.gather(*self._readers)

    def output(self) -> str:
        return "\n".join([*self.lines[-20:], *self.stderr])


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace").rstrip("\n"))


def exceptions(daemon: Daemon) -> list[dict[str, Any]]:
    """Log records that carry an exception (a traceback, rendered as data in JSON)."""
    return [r for r in daemon.records() if "exc_info" in r or "exception" in r]


def problem_lines(daemon_or_text: Daemon | str) -> list[str]:
    """The ``error:`` lines a user reads on stderr."""
    text = daemon_or_text if isinstance(daemon_or_text, str) else "\n".join(daemon_or_text.stderr)
    return [line for line in text.splitlines() if line.startswith("error:")]


# --- upstream changes and what the receiver must have got ----------------------------------------


@dataclass
class Driver:
    """Moves orders through the sandbox (create, approve, pay, process) and records each step."""

    session: aiohttp.ClientSession
    control_url: str
    rng: random.Random
    expected: set[tuple[str, str]] = field(default_factory=set)
    _progress: dict[str, int] = field(default_factory=dict)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.control_url + path, json=body) as response:
            reply: dict[str, Any] = await response.json()
            assert response.status in (200, 201), reply
            return reply

    async def create_order(self) -> str:
        order = await self._post(f"/holders/{HOLDER}/orders", {})
        self._progress[order["id"]] = 0
        self.expected.add((order["id"], "order.created"))
        return str(order["id"])

    async def step(self) -> None:
        """One upstream change: a new order, or the next step of an unfinished one."""
        open_orders = [o for o, done in self._progress.items() if done < len(ORDER_STEPS)]
        if not open_orders or self.rng.random() < 0.3:
            await self.create_order()
            return
        order_id = self.rng.choice(open_orders)
        action, event_type = ORDER_STEPS[self._progress[order_id]]
        await self._post(f"/orders/{order_id}/{action}", {})
        self._progress[order_id] += 1
        self.expected.add((order_id, event_type))

    async def run(self, stop: asyncio.Event, pause_s: float = 0.05) -> None:
        """Step until ``stop`` is set."""
        while not stop.is_set():
            await self.step()
            await CLOCK.sleep(pause_s)


def delivered(receiver: WebhookReceiver) -> dict[tuple[str, str], set[str]]:
    """Each (order id, event type) the receiver accepted, with the webhook ids it came under."""
    seen: dict[tuple[str, str], set[str]] = {}
    for delivery in receiver.accepted():
        event = delivery.event
        seen.setdefault((event["resource"]["id"], event["type"]), set()).add(delivery.id)
    return seen


async def until_delivered(
    receiver: WebhookReceiver, expected: set[tuple[str, str]], timeout_s: float = 20.0
) -> None:
    """Wait until the receiver accepted every expected transition (or the time is up)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not expected <= delivered(receiver).keys():
                await CLOCK.sleep(0.05)


def check_deliveries(receiver: WebhookReceiver, expected: set[tuple[str, str]]) -> None:
    """Every transition delivered, each under exactly one id, and nothing invented."""
    seen = delivered(receiver)
    assert expected - seen.keys() == set(), "transitions never delivered"
    assert seen.keys() - expected == set(), "events for transitions that never happened"
    shared = {key: ids for key, ids in seen.items() if len(ids) != 1}
    assert shared == {}, "one transition under several ids"
