"""Real processes for the reliability suite: the sandbox, the daemon, a verifying receiver.

Owns starting ``drgreen-poller sandbox --port 0`` and ``drgreen-poller run`` as an operator
would (the console script of this venv, a TOML file, SIGKILL and SIGTERM), the sandbox's control
API, a Standard Webhooks receiver that records every request, and the size of a run (short
inside ``make test``, full under ``make reliability``). It must not reach into the daemon's
internals: only files, processes and HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from drgreen_poller.clock import SystemClock
from drgreen_poller.webhook_signing import generate_webhook_secret

# The console script of the venv running the tests: what `pip install` gives an operator.
CLI = str(Path(sys.executable).with_name("drgreen-poller"))
# Waiting on real processes takes real time: the one clock these tests read.
CLOCK = SystemClock()
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
FULL_ENV = "RELIABILITY_FULL"  # "1" under `make reliability`
# Log events written only when something crashed at a loop boundary.
CRASH_LOG_EVENTS = ("poll_crashed", "delivery_attempt_crashed", "state_database_failed")


@dataclass(frozen=True, slots=True)
class Scale:
    """How big a run is: the short form runs in ``make test``, the full one separately."""

    name: str
    kills: int
    orders: int
    clients: int
    min_moves: int  # the driver goes on until each resource moved this often (or ended)
    fault_count: int  # failed upstream answers per injected fault
    page_orders: int  # orders of the holder whose sweeps span several pages
    shift_orders: int  # orders inserted or deleted while a sweep pages
    timeout_s: int  # per test


SHORT = Scale("short", kills=5, orders=8, clients=4, min_moves=2, fault_count=1, page_orders=130,
              shift_orders=20, timeout_s=150)  # fmt: skip
FULL = Scale("full", kills=24, orders=44, clients=16, min_moves=3, fault_count=3, page_orders=260,
             shift_orders=60, timeout_s=480)  # fmt: skip


def current_scale() -> Scale:
    """The full form when ``RELIABILITY_FULL=1`` (``make reliability``), else the short one."""
    return FULL if os.environ.get(FULL_ENV) == "1" else SHORT


SCALE = current_scale()


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str, step_s: float = 0.05
) -> float:
    """Wait until ``check()`` holds; returns the seconds it took.

    Raises:
        AssertionError: it did not hold within ``timeout_s`` (the message says what).
    """
    started = CLOCK.monotonic()
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return CLOCK.monotonic() - started
        if CLOCK.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        await CLOCK.sleep(step_s)


# --- the sandbox ---------------------------------------------------------------------------------


class SandboxProcess:
    """``drgreen-poller sandbox --port 0`` in its own process; its logs go to ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.control_url = ""

    def start(self) -> None:
        """Start it and read its ready line (base_url, control_url)."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
            [CLI, "sandbox", "--port", "0"], stdout=subprocess.PIPE, stderr=self._log
        )
        assert self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT_S):
                self.stop()
                raise AssertionError(f"the sandbox printed no ready line; see {self.log_path}")
        ready = json.loads(self._process.stdout.readline())
        self.base_url, self.control_url = ready["base_url"], ready["control_url"]

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL if it lingers)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        if self._log is not None:
            self._log.close()


class ControlError(AssertionError):
    """The control API refused a call the test expected to succeed."""


@dataclass(frozen=True, slots=True)
class Keys:
    """A sandbox holder's name and key pair."""

    name: str
    api_key: str
    secret_key: str


class Control:
    """The sandbox's control API (``/_sandbox``) over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, control_url: str) -> None:
        self.session = session
        self.url = control_url

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One control call: its status and JSON answer."""
        async with self.session.request(method, self.url + path, json=body) as answer:
            return answer.status, await answer.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A control call that must succeed (200 or 201); its JSON answer."""
        status, data = await self.call(method, path, body)
        if status not in (200, 201):
            raise ControlError(f"{method} {path} answered {status}: {data}")
        return data

    async def holder(self, name: str) -> Keys:
        """A new holder with a working key pair."""
        made = await self.ok("POST", "/holders", {"name": name})
        return Keys(name, made["api_key"], made["secret_key"])

    async def fault(self, spec: dict[str, Any]) -> int:
        """Inject a fault; its id."""
        fault_id: int = (await self.ok("POST", "/faults", spec))["id"]
        return fault_id

    async def fault_active(self, fault_id: int) -> bool:
        """Whether the fault can still fire (spent faults leave the list)."""
        faults = (await self.ok("GET", "/faults"))["faults"]
        return any(f["id"] == fault_id for f in faults)

    async def request_log(self, holder: str) -> list[dict[str, Any]]:
        """The sandbox's recent requests of one holder: ``{t, at, holder, endpoint, status}``."""
        log: list[dict[str, Any]] = (await self.ok("GET", f"/requests?holder={holder}"))["log"]
        return log


# --- the receiver ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One verified webhook request: its ``webhook-id``, the event, and when it came."""

    id: str
    event: dict[str, Any]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A store's webhook endpoint that verifies Standard Webhooks signatures and records all.

    ``hold_s`` (drawn per request) delays the 204, so a SIGKILL can land mid-delivery;
    ``arrived`` is set on every request and cleared by whoever waits on it.
    """

    secret: str = field(default_factory=generate_webhook_secret)
    hold_s: Callable[[], float] = lambda: 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hooks"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(f"{request.headers.get('webhook-id')}: {exc}")
            return web.Response(status=401)
        self.arrivals.append(Arrival(request.headers["webhook-id"], event, body, CLOCK.monotonic()))
        self.arrived.set()
        hold = self.hold_s()
        if hold > 0:
            await CLOCK.sleep(hold)
        return web.Response(status=204)

    def since(self, index: int) -> list[Arrival]:
        """Arrivals from ``index`` on."""
        return self.arrivals[index:]


# --- the daemon ----------------------------------------------------------------------------------


# Order and KYC tiers every ``interval``; backoff never longer than one interval, so "recovery
# within one interval of the fault ending" is what an operator with this file would expect.
CONFIG_TEMPLATE = """
[daemon]
state_path = "state.db"
http_listen = ""
first_sync = "{first_sync}"

[api]
base_url = "{base_url}"
timeout = "{api_timeout}"
requests_per_second = 50
burst = 20

{holders}
[schedule]
active_orders = "{interval}"
stale_orders = "{interval}"
pending_kyc = "{interval}"
commissions = "1h"
strains = "1h"
jitter = 0.1
backoff_base = "0.5s"
backoff_max = "{interval}"
{schedule_extra}

[delivery]
retry_schedule = ["0s", "0.5s", "1s", "2s", "5s", "10s"]

[[sinks]]
name = "store"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = [{patterns}]
"""
HOLDER_TEMPLATE = """[[holders]]
name = "{name}"
api_key_file = "{name}.api_key"
secret_key_file = "{name}.secret_key"
strain_countries = []
"""


def write_config(
    directory: Path,
    *,
    base_url: str,
    holders: Iterable[Keys],
    receiver: Receiver,
    events: Iterable[str],
    first_sync: str = "seed",
    interval: str = "1s",
    api_timeout: str = "5s",
    schedule_extra: str = "",
) -> Path:
    """A daemon config (``CONFIG_TEMPLATE``) with the holders' key files and the sink's secret."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "store.whsec").write_text(receiver.secret + "\n")
    tables = []
    for keys in holders:
        (directory / f"{keys.name}.api_key").write_text(keys.api_key + "\n")
        (directory / f"{keys.name}.secret_key").write_text(keys.secret_key + "\n")
        tables.append(HOLDER_TEMPLATE.format(name=keys.name))
    path = directory / "config.toml"
    text = CONFIG_TEMPLATE.format(
        first_sync=first_sync, base_url=base_url, api_timeout=api_timeout,
        holders="\n".join(tables), interval=interval, schedule_extra=schedule_extra,
        url=receiver.url, patterns=", ".join(f'"{p}"' for p in events),
    )  # fmt: skip
    path.write_text(text)
    return path


def shows_a_crash(line: str) -> bool:
    """Whether an output line shows a crash (see ``Daemon.troubles``)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "Traceback" in line
    if not isinstance(entry, dict):
        return "Traceback" in line
    return "exception" in entry or entry.get("event") in CRASH_LOG_EVENTS


class Daemon:
    """``drgreen-poller -c CONFIG --log-format json run``, restartable; all output in one file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.with_name("daemon.log")
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.starts = 0
        self._up_s = 0.0  # the runtime of the runs that ended

    async def start(self) -> None:
        """Start a new run (the previous one must have ended)."""
        assert not self.running, "the daemon is already running"
        with self.log_path.open("ab") as log:
            log.write(f'{{"harness": "run {self.starts + 1}"}}\n'.encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                CLI, "-c", str(self.config), "--log-format", "json", "run",
                stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent,
            )  # fmt: skip
        self.started_at = CLOCK.monotonic()
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def uptime(self) -> float:
        """Seconds the daemon has been running, over all its runs."""
        current = CLOCK.monotonic() - self.started_at if self.running else 0.0
        return self._up_s + current

    def _ended(self) -> None:
        self._up_s += CLOCK.monotonic() - self.started_at

    async def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            self._ended()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait for the exit (SIGKILL after ``STOP_TIMEOUT_S``); the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            self._ended()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                await self.kill()
        assert self.process.returncode is not None
        return self.process.returncode

    def output(self) -> str:
        """Everything every run printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far (lines torn by SIGKILL are skipped)."""
        lines = []
        for line in self.output().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def troubles(self) -> list[str]:
        """Lines that show a crash: a traceback (printed, or a JSON line's ``exception``) or a
        loop-boundary failure."""
        return [line for line in self.output().splitlines() if shows_a_crash(line)]
