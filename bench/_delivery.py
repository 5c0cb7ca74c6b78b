"""The delivery benches' shared parts: a state with N due deliveries, the daemon run against it,
and raw aiohttp POSTs of the same bodies, both to the receiver process.

The backlog is made by the real poller (first sync with ``first_sync = "emit"`` over N orders of
a sandbox holder, so every body is a real ``order.created`` event) once, then copied for every
run. The daemon is the real ``drgreen-poller run`` in its own process, polling a quiet sandbox
holder at the default intervals while it delivers. Nothing here judges the figures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import CLOCK, Received, Receiver, receiver

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.sinks import EXCERPT_BYTES, WebhookSink
from drgreen_poller.store import SinkRoute, Store
from drgreen_poller.tiers import Tier
from drgreen_poller.webhook_signing import generate_webhook_secret

SINK = "store"
# Generous: a run that has not finished by then has stalled, and the bench says so.
SLOWEST_RATE = 100.0  # events/s
STALL_S = 60.0

CONFIG = """
[daemon]
state_path = "state.db"
http_listen = ""
log_format = "json"

[api]
base_url = "{base_url}"

[[holders]]
name = "quiet"
api_key_file = "quiet.api_key"
secret_key_file = "quiet.secret_key"
strain_countries = []

[delivery]
concurrency = {concurrency}

[[sinks]]
name = "{sink}"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = ["*"]
"""


@dataclass
class Backlog:
    """A state file holding ``count`` due deliveries, and the same requests for raw POSTs."""

    seed: Path
    requests: list[tuple[bytes, dict[str, str]]]
    base_url: str
    quiet: HolderInfo
    secret: str

    @property
    def count(self) -> int:
        return len(self.requests)


@asynccontextmanager
async def backlog(count: int, workdir: Path) -> AsyncIterator[Backlog]:
    """A sandbox (serving the daemon's quiet holder while in use) and the backlog of ``count``."""
    state = SandboxState(CLOCK)
    state.create_holder("shop")
    quiet = state.create_holder("quiet")
    state.orders.create_many("shop", count, spacing_s=0.001)
    async with LocalSandbox(state) as box:
        seed = workdir / "seed.db"
        await _first_sync(box, state.holder("shop").credentials, seed)
        secret = generate_webhook_secret()
        requests = await _requests(seed, workdir / "scratch.db", secret)
        if len(requests) != count:
            raise SystemExit(f"the poller made {len(requests)} deliveries, not {count}")
        yield Backlog(seed, requests, box.base_url, quiet, secret)


async def _first_sync(box: LocalSandbox, credentials: ApiCredentials, seed: Path) -> None:
    """The real poller's first sweep with ``first_sync = "emit"``: one event per order."""
    bucket = TokenBucket(rate=1.0, burst=10**9, clock=CLOCK)  # no politeness wait here
    async with aiohttp.ClientSession() as session:
        api = ApiClient(session, ApiSettings(box.base_url), credentials, CLOCK, bucket=bucket)
        store = await Store.open(seed, sinks=[SinkRoute(SINK, ("*",))])
        try:
            poller = HolderPoller("shop", [], api, store, CLOCK, PollSettings(first_sync="emit"))
            await poller.poll_tier(Tier.ACTIVE_ORDERS, next_due_at=0)
        finally:
            await store.close()


async def _requests(seed: Path, scratch: Path, secret: str) -> list[tuple[bytes, dict[str, str]]]:
    """The exact bodies the daemon will send (claimed from a copy), with the sink's headers."""
    shutil.copy(seed, scratch)
    store = await Store.open(scratch, sinks=())
    try:
        rows = (await store.settle([], CLOCK.now(), {SINK: 10**9})).claimed
    finally:
        await store.close()
    config = WebhookSinkConfig(SINK, url="http://127.0.0.1/", secrets=(Secret(secret, "bench"),))
    sink = WebhookSink(config, DeliveryConfig())
    now = CLOCK.now()
    return [
        (row.body.encode(), sink.headers(row.event_id, row.event_type, row.body.encode(), now))
        for row in rows
    ]


# --- one run of each ------------------------------------------------------------------------------


# The daemon's environment: this one without PYTHONUNBUFFERED (which some shells and CI images
# export), so its output is buffered as under systemd, where the unit does not set it.
AS_UNDER_SYSTEMD = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# How often the daemon's CPU is read while it delivers (and the receiver asked how far it got).
SAMPLE_S = 0.1


def _cpu_s(stat: Path) -> float:
    """utime + stime from a ``/proc/.../stat`` file, in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _threads_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime of each thread of ``pid``, in seconds, from ``/proc``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = _cpu_s(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
    return found


@dataclass(frozen=True)
class CpuPerEvent:
    """CPU microseconds per delivered event: the sender's event loop thread, its other threads
    (SQLite's, for the daemon), and the receiver's."""

    loop_us: float
    others_us: float
    receiver_us: float

    @property
    def sender_us(self) -> float:
        return self.loop_us + self.others_us


CPU_HEADER = "CPU µs/event: daemon loop + other threads : raw · receiver daemon:raw"
CPU_NOTE = (
    "CPU µs/event: CPU time per delivered event, medians over the runs, from /proc (the daemon's "
    "from its first event's arrival on, each of its threads; the raw side's whole process), and "
    "the receiver's in each kind of run."
)


def cpu_cell(pairs: Sequence[Pair]) -> str:
    """``loop + others : raw · receiver ours:raw``, each a median over the runs."""

    def mid(values: list[float]) -> float:
        return statistics.median(values)

    ours = [run.cpu for _, run in pairs]
    raw = [raw.cpu for raw, _ in pairs]
    return (
        f"{mid([c.loop_us for c in ours]):.0f} + {mid([c.others_us for c in ours]):.0f} : "
        f"{mid([c.sender_us for c in raw]):.0f} · "
        f"{mid([c.receiver_us for c in ours]):.0f}:{mid([c.receiver_us for c in raw]):.0f}"
    )


@dataclass(frozen=True)
class Sample:
    """How far the receiver had got, and the CPU seconds used so far, at one moment."""

    distinct: int
    threads: dict[int, float]
    receiver_s: float


def cpu_between(first: Sample, last: Sample, loop_tid: int) -> CpuPerEvent:
    """CPU per event between two samples of a daemon run."""
    events = max(1, last.distinct - first.distinct)

    def used(tids: set[int]) -> float:
        return sum(last.threads[t] - first.threads.get(t, 0.0) for t in tids) / events * 1e6

    others = set(last.threads) - {loop_tid}
    receiver = (last.receiver_s - first.receiver_s) / events * 1e6
    return CpuPerEvent(used({loop_tid}), used(others), receiver)


@dataclass(frozen=True)
class RawRun:
    """What the receiver saw of one raw run, and the CPU both sides used per event."""

    received: Received
    cpu: CpuPerEvent


@dataclass(frozen=True)
class DaemonRun:
    """What the receiver saw of one daemon run, when the daemon was started, and the CPU per
    event from the first arrival on (start-up left out)."""

    received: Received
    spawned_s: float
    cpu: CpuPerEvent

    def from_start_s(self) -> float:
        """Seconds from starting the daemon to the last event's arrival (start-up included)."""
        return (self.received.last_s or self.spawned_s) - self.spawned_s


def write_config(backlog: Backlog, rundir: Path, url: str, concurrency: int) -> Path:
    rundir.mkdir(parents=True)
    shutil.copy(backlog.seed, rundir / "state.db")
    (rundir / "quiet.api_key").write_text(backlog.quiet.credentials.api_key)
    (rundir / "quiet.secret_key").write_text(backlog.quiet.credentials.secret_key)
    (rundir / "store.whsec").write_text(backlog.secret)
    config = rundir / "config.toml"
    config.write_text(
        CONFIG.format(base_url=backlog.base_url, concurrency=concurrency, sink=SINK, url=url)
    )
    return config


async def run_daemon(
    backlog: Backlog, receiver: Receiver, concurrency: int, rundir: Path
) -> DaemonRun:
    """``drgreen-poller run`` on a copy of the backlog until the receiver has every event."""
    config = write_config(backlog, rundir, receiver.url, concurrency)
    await receiver.reset()
    with (rundir / "daemon.log").open("wb") as log:
        spawned = CLOCK.monotonic()
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "drgreen_poller", "-c", str(config), "run",
            stdout=log, stderr=asyncio.subprocess.STDOUT, env=AS_UNDER_SYSTEMD,
        )  # fmt: skip
        try:
            received, cpu = await _until_all(backlog.count, receiver, daemon)
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            code = await daemon.wait()
    if code != 0:
        raise SystemExit(f"the daemon exited {code}; its log: {rundir / 'daemon.log'}")
    await _check_delivered(rundir / "state.db")
    shutil.rmtree(rundir)
    return DaemonRun(received, spawned, cpu)


async def _until_all(
    count: int, receiver: Receiver, daemon: asyncio.subprocess.Process
) -> tuple[Received, CpuPerEvent]:
    """Until the receiver has every event; the daemon's CPU is read every ``SAMPLE_S``."""
    deadline = CLOCK.monotonic() + count / SLOWEST_RATE + STALL_S
    receiver_stat = Path(f"/proc/{receiver.process.pid}/stat")
    first: Sample | None = None
    while True:
        got = await receiver.wait_for(count, SAMPLE_S)
        if daemon.returncode is not None:
            raise SystemExit(f"the daemon stopped (exit {daemon.returncode}) at {got.distinct}")
        sample = Sample(got.distinct, _threads_cpu_s(daemon.pid), _cpu_s(receiver_stat))
        if first is None and got.distinct > 0:
            first = sample
        if got.distinct >= count and first is not None:
            return got, cpu_between(first, sample, daemon.pid)
        if CLOCK.monotonic() > deadline:
            raise SystemExit(f"the daemon delivered only {got.distinct} of {count} in time")


async def _check_delivered(state: Path) -> None:
    """Every row is recorded delivered: the receiver's count is not ahead of the state."""
    store = await Store.open_reader(state)
    try:
        owed = await store.undelivered()
    finally:
        await store.close()
    if owed:
        raise SystemExit(f"rows left undelivered after the run: {owed}")


async def run_raw(backlog: Backlog, receiver: Receiver, concurrency: int) -> RawRun:
    """The same bodies and headers, POSTed by ``concurrency`` coroutines over one session."""
    await receiver.reset()
    receiver_stat = Path(f"/proc/{receiver.process.pid}/stat")
    own, theirs = _cpu_s(Path("/proc/self/stat")), _cpu_s(receiver_stat)
    pending = iter(backlog.requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=DeliveryConfig().timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post_all() -> None:
            for body, headers in pending:
                async with session.post(
                    receiver.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.content.read(EXCERPT_BYTES)
                    if response.status != 204:
                        raise SystemExit(f"the receiver answered {response.status}")

        await asyncio.gather(*(post_all() for _ in range(concurrency)))
    received = await receiver.wait_for(backlog.count, STALL_S)
    own, theirs = _cpu_s(Path("/proc/self/stat")) - own, _cpu_s(receiver_stat) - theirs
    count = max(1, received.distinct)
    return RawRun(received, CpuPerEvent(own / count * 1e6, 0.0, theirs / count * 1e6))


Pair = tuple[RawRun, DaemonRun]


async def alternate(
    backlog: Backlog, concurrency: int, runs: int, workdir: Path
) -> AsyncIterator[Pair]:
    """``runs`` pairs, each raw POSTs then the daemon over the same backlog, to one receiver."""
    async with receiver() as target:
        for index in range(runs):
            rundir = workdir / f"c{concurrency}-{index}"
            raw = await run_raw(backlog, target, concurrency)
            run = await run_daemon(backlog, target, concurrency, rundir)
            yield raw, run
