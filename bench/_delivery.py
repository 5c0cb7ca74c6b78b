"""The delivery benches' shared parts: a state with N due deliveries, the daemon run against it,
and raw aiohttp POSTs of the same bodies, both to the receiver process.

The backlog is made by the real poller (first sync with ``first_sync = "emit"`` over N orders of
a sandbox holder, so every body is a real ``order.created`` event) once per backend (a SQLite
file; a PostgreSQL database, ``_pg``), then copied for every run (the file; ``CREATE DATABASE
... TEMPLATE``). The daemon is the real ``drgreen-poller run`` in its own process (two of them on
one PostgreSQL database for ``--instances 2``), polling a quiet sandbox holder at the default
intervals while it delivers. Nothing here judges the figures.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import CLOCK, Received, Receiver, receiver
from _cpu import CpuPerEvent, cpu_s
from _daemons import STALL_S, DaemonRun, run_instances
from _pg import SQLITE, InstancesRefused, Postgres, Setup

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.config import DeliveryConfig, Secret, StoreConfig
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
    """A state file holding ``count`` due deliveries (and, with ``pg``, a database holding the
    same), and the same requests for raw POSTs."""

    seed: Path
    requests: list[tuple[bytes, dict[str, str]]]
    base_url: str
    quiet: HolderInfo
    secret: str
    pg: Postgres | None = None
    pg_seed: str = ""

    @property
    def count(self) -> int:
        return len(self.requests)


@asynccontextmanager
async def backlog(count: int, workdir: Path, pg: Postgres | None = None) -> AsyncIterator[Backlog]:
    """A sandbox (serving the daemon's quiet holder while in use) and the backlog of ``count``,
    also in a database of ``pg`` when given (a template the runs' databases are copied from)."""
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
        pg_seed = ""
        if pg is not None:
            pg_seed = pg.new_database()
            await _first_sync(box, state.holder("shop").credentials, pg.store(pg_seed))
            pg.analyze(pg_seed)
        try:
            yield Backlog(seed, requests, box.base_url, quiet, secret, pg, pg_seed)
        finally:
            if pg is not None:
                pg.drop_database(pg_seed)


async def _first_sync(
    box: LocalSandbox, credentials: ApiCredentials, seed: Path | StoreConfig
) -> None:
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


def cpu_cell(pairs: Sequence[Pair]) -> str:
    """``loop + others : raw · receiver ours:raw``, each a median over the runs."""

    def mid(values: list[float]) -> float:
        return statistics.median(values)

    ours = [run.cpu for _, run in pairs]
    raw = [raw.cpu for raw, _ in pairs]
    server = mid([c.server_us for c in ours])
    return (
        f"{mid([c.loop_us for c in ours]):.0f} + {mid([c.others_us for c in ours]):.0f}"
        + (f" + {server:.0f}" if server else "")
        + " : "
        f"{mid([c.sender_us for c in raw]):.0f} · "
        f"{mid([c.receiver_us for c in ours]):.0f}:{mid([c.receiver_us for c in raw]):.0f}"
    )


@dataclass(frozen=True)
class RawRun:
    """What the receiver saw of one raw run, and the CPU both sides used per event."""

    received: Received
    cpu: CpuPerEvent


def write_config(
    backlog: Backlog, rundir: Path, url: str, concurrency: int, database: str = ""
) -> Path:
    """The run's directory and configuration: a copy of the SQLite seed, or with ``database``
    (a copy of the PostgreSQL seed) a ``[store]`` section naming it."""
    rundir.mkdir(parents=True)
    (rundir / "quiet.api_key").write_text(backlog.quiet.credentials.api_key)
    (rundir / "quiet.secret_key").write_text(backlog.quiet.credentials.secret_key)
    (rundir / "store.whsec").write_text(backlog.secret)
    text = CONFIG.format(base_url=backlog.base_url, concurrency=concurrency, sink=SINK, url=url)
    if database and backlog.pg is not None:
        text += backlog.pg.store_section(database, rundir)
    else:
        shutil.copy(backlog.seed, rundir / "state.db")
    config = rundir / "config.toml"
    config.write_text(text)
    return config


async def run_daemon(
    backlog: Backlog, receiver: Receiver, concurrency: int, rundir: Path, setup: Setup
) -> DaemonRun:
    """``setup.instances`` × ``drgreen-poller run`` on a copy of the backlog until the receiver
    has every event.

    Raises:
        InstancesRefused: a second instance was refused at start (this build runs one).
    """
    pg = backlog.pg if setup.backend != SQLITE else None
    database = pg.new_database(template=backlog.pg_seed) if pg is not None else ""
    try:
        config = write_config(backlog, rundir, receiver.url, concurrency, database)
        state = pg.store(database) if pg is not None else rundir / "state.db"
        run = await run_instances(backlog.count, receiver, config, setup.instances, pg)
        await check_delivered(state)
    finally:
        if pg is not None:
            pg.drop_database(database)
    shutil.rmtree(rundir)
    return run


async def check_delivered(state: Path | StoreConfig) -> None:
    """Every row is recorded delivered: the receiver's count is not ahead of the state."""
    store = await Store.open_reader(state)
    try:
        owed = await store.undelivered()
    finally:
        await store.close()
    if owed:
        raise SystemExit(f"rows left undelivered after the run: {owed}")


def raw_session(concurrency: int) -> aiohttp.ClientSession:
    """The session raw POSTs go through (``run_raw``, and ``_floor``'s control step): as many
    connections as the daemon's concurrency, its default timeout."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=DeliveryConfig().timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def run_raw(backlog: Backlog, receiver: Receiver, concurrency: int) -> RawRun:
    """The same bodies and headers, POSTed by ``concurrency`` coroutines over one session."""
    await receiver.reset()
    receiver_stat = Path(f"/proc/{receiver.process.pid}/stat")
    own, theirs = cpu_s(Path("/proc/self/stat")), cpu_s(receiver_stat)
    pending = iter(backlog.requests)
    async with raw_session(concurrency) as session:
        # Written out here, not called: the baseline's loop is the plainest a sender can be.
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
    own, theirs = cpu_s(Path("/proc/self/stat")) - own, cpu_s(receiver_stat) - theirs
    count = max(1, received.distinct)
    return RawRun(received, CpuPerEvent(own / count * 1e6, 0.0, theirs / count * 1e6))


Pair = tuple[RawRun, DaemonRun]
# One round: the raw run, and each setup's daemon run (None: its second instance was refused).
Round = tuple[RawRun, dict[Setup, DaemonRun | None]]


async def alternate(
    backlog: Backlog, concurrency: int, runs: int, workdir: Path, chosen: Sequence[Setup]
) -> AsyncIterator[Round]:
    """``runs`` rounds over the same backlog, to one receiver: raw POSTs, then the daemon in
    each setup in turn. A setup refused once is not started again."""
    refusals: set[Setup] = set()
    async with receiver() as target:
        for index in range(runs):
            raw = await run_raw(backlog, target, concurrency)
            runs_of: dict[Setup, DaemonRun | None] = {}
            for setup in chosen:
                rundir = workdir / f"c{concurrency}-{index}-{setup.backend}-{setup.instances}"
                if setup not in refusals:
                    try:
                        runs_of[setup] = await run_daemon(
                            backlog, target, concurrency, rundir, setup
                        )
                        continue
                    except InstancesRefused:
                        refusals.add(setup)
                        shutil.rmtree(rundir, ignore_errors=True)
                runs_of[setup] = None
            yield raw, runs_of


async def measure(
    backlog: Backlog,
    concurrency: int,
    runs: int,
    workdir: Path,
    chosen: Sequence[Setup],
    *,
    shown: Callable[[Received], str],
    label: str = "",
) -> list[Round]:
    """Every round of ``alternate``, each told on stderr as it ends: raw's and each setup's
    figure (``shown``: a rate, or the seconds it took), ``label`` before the round's number."""
    rounds: list[Round] = []
    async for raw, runs_of in alternate(backlog, concurrency, runs, workdir, chosen):
        rounds.append((raw, runs_of))
        daemons = ", ".join(
            f"{setup.label} "
            + (
                f"{shown(run.received)} ({run.from_start_s():.1f} s from start)"
                if run
                else "refused"
            )
            for setup, run in runs_of.items()
        )
        print(
            f"  {label}run {len(rounds)}/{runs}: raw {shown(raw.received)}, {daemons}",
            file=sys.stderr,
        )
    return rounds


def pairs_of(rounds: Sequence[Round], setup: Setup) -> list[Pair]:
    """The (raw, daemon) pairs of one setup: each of its runs beside the same round's raw one;
    empty when the setup was refused."""
    found = [(raw, runs[setup]) for raw, runs in rounds]
    return [(raw, run) for raw, run in found if run is not None]
