"""Delivery floor: from raw aiohttp POSTs to the daemon, one necessary step at a time.

Where does the daemon's delivery rate go, against raw POSTs of the same bodies (the baseline of
``delivery_throughput.py``)? The same N real ``order.created`` events are sent to the same
loopback receiver (its own process, answering 204) at the same concurrency by, in turn: raw
aiohttp POSTs (headers signed beforehand); the floor's sender (``_floor.py``, its own process)
at each of its steps, each adding one thing every signed, durable sender must do (``signed``:
sign each event and classify the answer through the real sink, every row claimed beforehand;
``claimed``: claim rows from the state while sending; ``logged``: the canonical line per
attempt; ``recorded``: record every attempt durably, one transaction per turn); and the real
daemon (``drgreen-poller run``). Runs alternate (raw, each step, the daemon) and the medians
are shown; events/s are measured at the receiver from the first arrival to the last. SQLite,
as the daemon's default.

The last floor step is the least a sender that keeps the daemon's promises can do with these
parts (aiohttp, the sink, the store, structlog); what the daemon loses beyond it is what its own
structure costs (a task per attempt, fairness between sinks, retries, the gate of a shared
database, metrics, the poller beside).

    .venv/bin/python bench/delivery_floor.py [--profile quick|full] [--no-append]
        quick: 5,000 events, 2 runs of each, concurrency 16;
        full: 20,000 events, 5 runs, concurrency 16 and 64
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import BENCH_DIR, CpuShare, Receiver, median, profile_arguments, receiver, report
from _common import table as markdown_table
from _daemons import AS_UNDER_SYSTEMD, STALL_S
from _delivery import Backlog, backlog, check_delivered, run_daemon, run_raw, write_config
from _floor import STEPS
from _pg import Setup

from drgreen_poller import logs

SECTION = "Delivery floor"
INTRO = (
    "`bench/delivery_floor.py`: the same N real `order.created` events sent to the same "
    "loopback receiver at the same concurrency by raw aiohttp POSTs (headers signed beforehand), "
    "by a minimal sender (`bench/_floor.py`, its own process) at each of its steps, each adding "
    "one thing every signed, durable sender must do (signed: sign and classify through the real "
    "sink, rows claimed beforehand; claimed: claim rows from the SQLite state while sending; "
    "logged: the canonical line per attempt; recorded: record every attempt, one transaction "
    "per turn), and by the daemon. Events/s at the receiver, medians of alternating runs; each "
    "figure's ratio is to the raw runs of the same rounds."
)
PROFILES = {"quick": (5_000, 2, (16,)), "full": (20_000, 5, (16, 64))}
FLOOR = BENCH_DIR / "_floor.py"


async def run_floor(step: str, events: Backlog, target: Receiver, c: int, rundir: Path) -> float:
    """One run of the floor's sender at ``step`` on a copy of the backlog; events/s."""
    config = write_config(events, rundir, target.url, c)
    await target.reset()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, str(FLOOR), step, str(rundir / "state.db"), target.url,
        str(rundir / "store.whsec"), str(c), str(config.parent / "floor.log"),
        env=AS_UNDER_SYSTEMD,
    )  # fmt: skip
    received = await target.wait_for(events.count, events.count / 100 + STALL_S)
    code = await sender.wait()
    if code != 0 or received.distinct != events.count:
        raise SystemExit(f"the floor's {step} run exited {code}, {received.distinct} received")
    if step == "recorded":
        await check_delivered(rundir / "state.db")  # it did record every attempt
    shutil.rmtree(rundir)
    return received.rate()


async def measure(events: Backlog, c: int, runs: int, workdir: Path) -> dict[str, list[float]]:
    """``runs`` rounds: raw, each step, the daemon; events/s of each, in round order."""
    rates: dict[str, list[float]] = {"raw": [], **{step: [] for step in STEPS}, "daemon": []}
    async with receiver() as target:
        for index in range(runs):
            rates["raw"].append((await run_raw(events, target, c)).received.rate())
            for step in STEPS:
                rundir = workdir / f"c{c}-{index}-{step}"
                rates[step].append(await run_floor(step, events, target, c, rundir))
            rundir = workdir / f"c{c}-{index}-daemon"
            daemon = await run_daemon(events, target, c, rundir, Setup("sqlite"))
            rates["daemon"].append(daemon.received.rate())
            shown = ", ".join(f"{name} {values[-1]:,.0f}/s" for name, values in rates.items())
            print(f"  concurrency {c}, run {index + 1}/{runs}: {shown}", file=sys.stderr)
    return rates


def rows(c: int, rates: dict[str, list[float]]) -> list[list[str]]:
    raw = median(rates["raw"])
    return [
        [
            str(c), name, f"{median(values):,.0f}", f"{median(values) / raw:.2f}",
            " / ".join(f"{value:,.0f}" for value in values),
        ]
        for name, values in rates.items()
    ]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs, concurrencies = PROFILES[args.profile]
    share = CpuShare()
    share.start()
    found: list[list[str]] = []
    with tempfile.TemporaryDirectory() as workdir:
        async with backlog(count, Path(workdir)) as events:
            for c in concurrencies:
                found += rows(c, await measure(events, c, runs, Path(workdir)))
    headers = ["concurrency", "sender", "events/s", "× raw", "each run (events/s)"]
    notes = [
        f"{count:,} events; medians of {runs} alternating runs per concurrency. {share.sentence()}",
        "Each floor step keeps the ones above it: signed < claimed < logged < recorded. "
        "The daemon's target is ≥ 0.8 × raw (delivery_throughput.py).",
    ]
    result = markdown_table(headers, found, "rlrrl")
    report(SECTION, INTRO, args.profile, result, notes, not args.no_append)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
