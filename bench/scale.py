"""Scale: H holders × 100 active orders, the daemon and the sandbox each in its own process.

Starts ``drgreen-poller sandbox --port 0`` and fills it through its control API (holders, then
100 orders each in one bulk call per holder), writes a config naming every holder (key files,
a file sink, the daemon's default politeness budget), and runs ``drgreen-poller run`` on it.
It times every holder × tier's first sweep from the daemon's ``poll_finished`` lines, then reads
``/proc/<pid>/stat`` (utime + stime) of both processes over whole ``active_orders`` intervals,
and the daemon's VmRSS. Intervals may be scaled (every ``[schedule]`` interval times the scale);
the share of a core at the default intervals is CPU seconds per interval / 60 s.

    .venv/bin/python bench/scale.py [--profile quick|full] [--no-append]
    .venv/bin/python bench/scale.py --holders 1000 --scale 1 --intervals 3
    .venv/bin/python bench/scale.py --holders 1000 --scale 0.5 --py-spy /tmp/daemon.folded

``--py-spy FILE`` (py-spy installed in the venv) samples the daemon during the measured
intervals (non-blocking) and writes folded stacks to FILE, with its top functions printed;
``--gil`` samples only the thread holding the GIL (Python's own CPU, without waits).

quick (``make bench``, about 100 s): 1,000 holders at scale 0.5 over one interval: the
1,000-holder cost (CPU per interval as a share of a core at the default 60 s, RSS, first sweeps)
in half the time. It shows no growth: that needs sizes at one scale, which ``full`` runs.
full (about 16 minutes): 1,000 holders at the default intervals over three intervals (the
targets), then 100, 1,000 and 5,000 holders all at scale 2 over one interval each, so that the
growth table compares sizes measured the same way in the same run.

The growth table compares each size with the previous one at the same scale and store: how
many times the holders, the daemon's CPU per interval, its CPU per holder (1.00: linear), its CPU
until every first sweep, its RSS, and the resident memory each added holder costs.

The daemon's store (``--backend``): the SQLite file, or a PostgreSQL database (a server the
bench starts, ``_pg``; a new database per size) with one or two daemons on it
(``--instances``: both daemons' CPU summed, each one's RSS shown). Each size runs every store in
turn, a row each. quick: SQLite only (PostgreSQL would take ``make bench`` past 5 minutes); full:
SQLite, and PostgreSQL with one and two instances, at every size (about 45 minutes).

    .venv/bin/python bench/scale.py --holders 1000 --backend both --instances 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _common import CpuShare, append_run, machine, profile_arguments, run_record
from _cpu import process_cpu_s as cpu_s
from _cpu import rss_mb
from _first_sweeps import InstanceRefused, drain, first_sweeps
from _pg import (
    NOT_SUPPORTED,
    SQLITE,
    Postgres,
    Setup,
    backend_arguments,
    postgres,
    setups,
    store_note,
)
from _profiling import py_spy

from drgreen_poller.clock import SystemClock

ORDERS = 100
DEFAULT_INTERVALS_S = {
    "active_orders": 60.0,
    "stale_orders": 1800.0,
    "pending_kyc": 300.0,
    "commissions": 900.0,
    "strains": 3600.0,
}
FIRST_RUN_WINDOW_S = 60.0  # scheduler.FIRST_RUN_WINDOW_S: the target is this + 10 s
PROFILES = {  # (holders, scale, intervals measured)
    "quick": [(1000, 0.5, 1)],
    "full": [(1000, 1.0, 3), (100, 2.0, 1), (1000, 2.0, 1), (5000, 2.0, 1)],
}
BIN = Path(sys.executable).parent / "drgreen-poller"
INTRO = (
    "`bench/scale.py`: H holders × 100 active orders each; the sandbox and the daemon (a file "
    "sink, the default budget of 1 request/s per holder) each in its own process. CPU is utime + "
    "stime from /proc over whole active_orders intervals after every first sweep, per interval. "
    "The state is SQLite, or PostgreSQL with one or two daemons on it (their CPU summed)."
)
TARGETS = (
    "Targets at 1,000 holders: ≤ 8 % of a core and ≤ 150 MB at the default intervals, every "
    f"first sweep within the first-run window ({FIRST_RUN_WINDOW_S:g} s, or the active_orders "
    "interval when shorter) + 10 s. With a scale, every [schedule] interval is multiplied by it; "
    "the share of a core is the CPU per interval over the default 60 s."
)
CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class Spy:
    """Where py-spy writes its folded stacks, and whether it samples only the GIL's holder."""

    out: Path
    gil: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """One size's figures (CPU: every instance's summed; RSS: each instance's)."""

    setup: Setup
    holders: int
    scale: float
    intervals: int
    first_active_s: float  # daemon start → every holder's first active_orders sweep
    first_all_s: float  # daemon start → every holder × tier's first sweep
    first_cpu_s: float  # the daemon's CPU from its start until every first sweep
    daemon_cpu_s: float  # per active_orders interval
    sandbox_cpu_s: float
    server_cpu_s: float | None  # the PostgreSQL server's processes, per interval (None: SQLite)
    rss_mb: tuple[float, ...]
    peak_rss_mb: tuple[float, ...]  # VmHWM: the most each daemon was ever resident

    @property
    def total_rss_mb(self) -> float:
        return sum(self.rss_mb)


@dataclass(frozen=True, slots=True)
class Refused:
    """A size whose second instance was refused at start (this build runs one per database)."""

    setup: Setup
    holders: int
    scale: float


async def start_sandbox() -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), "sandbox", "--port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    ready: dict[str, Any] = json.loads(await proc.stdout.readline())
    return proc, ready


async def populate(control: str, holders: int, directory: Path) -> None:
    """Create the holders and their orders; write each key pair to two files."""
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:

        async def one(name: str) -> None:
            async with limit:
                async with http.post(f"{control}/holders", json={"name": name}) as r:
                    keys = await r.json()
                url = f"{control}/holders/{name}/orders"
                async with http.post(url, json={"count": ORDERS}) as r:
                    assert r.status == 201, await r.text()
            (directory / f"{name}.api_key").write_text(keys["api_key"])
            (directory / f"{name}.secret_key").write_text(keys["secret_key"])

        await asyncio.gather(*(one(f"h{i:05d}") for i in range(holders)))


def write_config(
    directory: Path, base_url: str, holders: int, scale: float, store: str = ""
) -> Path:
    schedule = "\n".join(f'{tier} = "{s * scale:g}s"' for tier, s in DEFAULT_INTERVALS_S.items())
    holder_tables = "".join(
        f'[[holders]]\nname = "h{i:05d}"\napi_key_file = "h{i:05d}.api_key"\n'
        f'secret_key_file = "h{i:05d}.secret_key"\n\n'
        for i in range(holders)
    )
    text = (
        f'[daemon]\nstate_path = "state.db"\nhttp_listen = ""\nlog_format = "json"\n\n'
        f'[api]\nbase_url = "{base_url}"\n\n[schedule]\n{schedule}\n\n{holder_tables}'
        '[[sinks]]\nname = "audit"\nkind = "file"\npath = "events.jsonl"\nevents = ["*"]\n'
        f"{store}"
    )
    path = directory / "config.toml"
    path.write_text(text)
    return path


@dataclass(frozen=True, slots=True)
class Size:
    """One measurement: holders, interval scale, intervals measured, and the store."""

    holders: int
    scale: float
    intervals: int
    setup: Setup


async def measure(size: Size, spy: Spy | None, pg: Postgres | None) -> Result | Refused:
    """The sandbox filled with ``size.holders``, then the daemons run on it until measured."""
    database = pg.new_database() if pg is not None and size.setup.backend != SQLITE else ""
    try:
        with tempfile.TemporaryDirectory(prefix="drgreen-scale-") as tmp:
            directory = Path(tmp)
            store = pg.store_section(database, directory) if pg and database else ""
            sandbox, ready = await start_sandbox()
            try:
                await populate(ready["control_url"], size.holders, directory)
                config = write_config(directory, ready["base_url"], size.holders, size.scale, store)
                server = pg.server_cpu_s if pg and database else None
                return await run_instances(config, size, sandbox.pid, spy, server)
            finally:
                sandbox.terminate()
                await sandbox.wait()
    finally:
        if pg is not None and database:
            pg.drop_database(database)


async def run_instances(
    config: Path, size: Size, sandbox_pid: int, spy: Spy | None, server: ServerCpu
) -> Result | Refused:
    """``size.setup.instances`` daemons on ``config``, measured, then stopped."""
    daemons = []
    try:
        for _ in range(size.setup.instances):
            daemons.append(await spawn(config))
        try:
            return await steady_state(daemons, sandbox_pid, size, spy, server)
        except InstanceRefused:
            return Refused(size.setup, size.holders, size.scale)
    finally:
        for daemon in daemons:
            if daemon.returncode is None:
                daemon.terminate()
            await daemon.wait()


async def spawn(config: Path) -> asyncio.subprocess.Process:
    """One ``drgreen-poller run`` on ``config``, its output (log lines and any error) piped."""
    return await asyncio.create_subprocess_exec(
        str(BIN), "-c", str(config), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=config.parent,
    )  # fmt: skip


# Each PostgreSQL server process's CPU seconds (``Postgres.server_cpu_s``); None with SQLite.
ServerCpu = Callable[[], dict[int, float]] | None


def server_s(server: ServerCpu) -> dict[int, float]:
    return server() if server is not None else {}


async def steady_state(
    daemons: Sequence[asyncio.subprocess.Process],
    sandbox_pid: int,
    size: Size,
    spy: Spy | None,
    server: ServerCpu,
) -> Result:
    first_active, first_all = await first_sweeps(daemons, size.holders)
    first_cpu = sum(cpu_s(d.pid) for d in daemons)
    readers = [asyncio.create_task(drain(d.stdout)) for d in daemons if d.stdout is not None]
    interval = DEFAULT_INTERVALS_S["active_orders"] * size.scale
    d0, s0, p0 = sum(cpu_s(d.pid) for d in daemons), cpu_s(sandbox_pid), server_s(server)
    k = size.intervals
    if spy is None:
        await CLOCK.sleep(interval * k)
    else:
        await py_spy(daemons[0].pid, interval * k, spy.out, gil=spy.gil)
    d1, s1, p1 = sum(cpu_s(d.pid) for d in daemons), cpu_s(sandbox_pid), server_s(server)
    pg_s = sum(s - p0.get(pid, 0.0) for pid, s in p1.items()) / k if server else None
    rss = tuple(rss_mb(d.pid) for d in daemons)
    peak = tuple(rss_mb(d.pid, "VmHWM") for d in daemons)
    for reader in readers:
        reader.cancel()
    return Result(
        size.setup, size.holders, size.scale, k, first_active, first_all, first_cpu,
        (d1 - d0) / k, (s1 - s0) / k, pg_s, rss, peak,
    )  # fmt: skip


def table(results: Sequence[Result | Refused]) -> str:
    rows = [
        "| holders | store | scale | active_orders interval | intervals measured "
        "| daemon CPU s/interval | % of a core at 60 s | daemon CPU ms per holder per interval "
        "| sandbox CPU s/interval | sandbox % at 60 s | PostgreSQL server CPU s/interval "
        "| daemon RSS MB (peak) "
        "| every first active_orders sweep | every tier's first sweep | daemon CPU s until then |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for r in results:
        start = f"| {r.holders:,} | {r.setup.label} | {r.scale:g} | {60 * r.scale:g} s "
        if isinstance(r, Refused):
            rows.append(start + f"| {NOT_SUPPORTED} |" + " – |" * 10)
            continue
        rows.append(
            start + f"| {r.intervals} "
            f"| {r.daemon_cpu_s:.2f} | {r.daemon_cpu_s / 60 * 100:.1f} % "
            f"| {r.daemon_cpu_s / r.holders * 1000:.2f} "
            f"| {r.sandbox_cpu_s:.2f} | {r.sandbox_cpu_s / 60 * 100:.1f} % "
            f"| {'–' if r.server_cpu_s is None else f'{r.server_cpu_s:.2f}'} "
            f"| {' + '.join(f'{m:.0f}' for m in r.rss_mb)} "
            f"({' + '.join(f'{m:.0f}' for m in r.peak_rss_mb)}) "
            f"| {r.first_active_s:.0f} s | {r.first_all_s:.0f} s | {r.first_cpu_s:.1f} |"
        )
    return "\n".join(rows)


def growth(results: Sequence[Result | Refused]) -> str:
    """How cost grows from each size to the next measured at the same scale and store: the
    ratios, and the resident memory each added holder costs (linear growth: every ratio at most
    the holders' ratio, and the same memory per added holder at every step). RSS: every
    instance's summed."""
    rows = [
        "| store | from → to holders | holders × | daemon CPU/interval × | CPU per holder × "
        "| daemon CPU until every first sweep × | RSS × | RSS per added holder |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    measured = [r for r in results if isinstance(r, Result)]
    for setup in dict.fromkeys(r.setup for r in measured):
        for a, b in itertools.pairwise(r for r in measured if r.setup == setup):
            if a.scale != b.scale or b.holders <= a.holders:
                continue
            ratio = b.holders / a.holders
            cpu = b.daemon_cpu_s / a.daemon_cpu_s if a.daemon_cpu_s else float("nan")
            added_kb = (b.total_rss_mb - a.total_rss_mb) * 1024 / (b.holders - a.holders)
            rows.append(
                f"| {setup.label} | {a.holders:,} → {b.holders:,} | {ratio:.1f} | {cpu:.2f} "
                f"| {cpu / ratio:.2f} | {b.first_cpu_s / a.first_cpu_s:.2f} "
                f"| {b.total_rss_mb / a.total_rss_mb:.2f} | {added_kb:.0f} KB |"
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def sizes_of(args: argparse.Namespace) -> list[Size]:
    """Each size of the profile (or of ``--holders``), in every chosen store in turn."""
    chosen = setups(args.profile, args.backend, args.instances)
    if args.holders:
        plan = [(n, args.scale, args.intervals) for n in args.holders]
    else:
        plan = PROFILES[args.profile]
    return [Size(n, scale, k, setup) for n, scale, k in plan for setup in chosen]


async def main(args: argparse.Namespace) -> None:
    if args.py_spy and not (BIN.parent / "py-spy").exists():
        raise SystemExit(f"--py-spy needs py-spy in {BIN.parent}: {BIN.parent}/pip install py-spy")
    sizes = sizes_of(args)
    print(f"machine: {machine()}", flush=True)
    results: list[Result | Refused] = []
    share = CpuShare()
    share.start()
    with postgres([size.setup for size in sizes]) as pg:
        for size in sizes:
            print(
                f"{size.holders} holders × {ORDERS} orders, intervals × {size.scale:g}, "
                f"{size.setup.label} ...",
                flush=True,
            )
            spy = Spy(args.py_spy, args.gil) if args.py_spy else None
            results.append(await measure(size, spy, pg))
        settings = pg.settings() if pg is not None else ""
    text = "\n\n".join(part for part in (table(results), growth(results)) if part)
    print(text)
    if not args.no_append:
        notes = [TARGETS, share.sentence(), *store_note([s.setup for s in sizes])]
        notes += [settings] if settings else []
        profile = args.profile if not args.holders else "chosen sizes"
        append_run("Scale", INTRO, run_record(profile, text, notes))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    backend_arguments(parser)
    parser.add_argument("--holders", type=int, nargs="*", help="sizes (overrides the profile)")
    parser.add_argument("--scale", type=float, default=1.0, help="with --holders")
    parser.add_argument("--intervals", type=int, default=1, help="with --holders")
    parser.add_argument("--py-spy", type=Path, help="profile the (first) daemon into this file")
    parser.add_argument(
        "--gil", action="store_true", help="with --py-spy: sample only the thread holding the GIL"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
