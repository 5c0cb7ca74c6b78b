"""Backlog drain: seconds for the daemon to deliver 100,000 due events, against raw aiohttp.

100,000 real ``order.created`` events (the poller's first sync with ``first_sync = "emit"``) wait
as due deliveries in a SQLite state, as after a receiver outage; the real daemon (``drgreen-poller
run`` in its own process, default ``[delivery] concurrency`` of 16) drains them to a loopback
receiver in a third process, which answers 204 and counts. The baseline, in the same run: the
same bodies and headers POSTed by 16 coroutines over one ``aiohttp.ClientSession`` with the same
connection limit, to the same receiver. Runs alternate (raw, daemon, ...); medians are reported.
The drain time is measured at the receiver, from the first event's arrival to the last; the
daemon's time from its start is printed beside it.

    .venv/bin/python bench/backlog_drain.py [--profile quick|full] [--no-append]
        quick: 10,000 events, 2 runs of each (the 30 s target scaled to 3 s); full: 100,000, 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import CpuShare, append_run, median, profile_arguments, receiver, run_record, table
from _delivery import (
    CPU_HEADER,
    CPU_NOTE,
    Backlog,
    CpuPerEvent,
    backlog,
    cpu_cell,
    run_daemon,
    run_raw,
)

from drgreen_poller import logs
from drgreen_poller.config import DeliveryConfig

SECTION = "Backlog drain"
INTRO = (
    "`bench/backlog_drain.py`: N real `order.created` events due in the state (as after a "
    "receiver outage), drained by `drgreen-poller run` (its own process, default concurrency "
    "16) to a loopback receiver (its own process, answering 204), against raw aiohttp POSTs of "
    "the same bodies and headers (signed beforehand) at the same concurrency to the same "
    "receiver. Seconds are measured at the receiver from the first arrival to the last; runs "
    "alternate and the medians are shown. Targets: 100,000 in ≤ 30 s and ≤ 2 × raw (the quick "
    "profile scales the 30 s to its size)."
)
PROFILES = {"quick": (10_000, 2), "full": (100_000, 3)}
CONCURRENCY = DeliveryConfig().concurrency
TARGET_S_PER_100K = 30.0
TARGET_RATIO = 2.0


@dataclass
class Drains:
    """Seconds per run: the daemon's drain, its time from start, and raw's drain."""

    ours: list[float] = field(default_factory=list)
    from_start: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    our_cpu: list[CpuPerEvent] = field(default_factory=list)
    raw_cpu: list[CpuPerEvent] = field(default_factory=list)


async def measure(events: Backlog, runs: int, workdir: Path) -> Drains:
    """Alternating runs of raw POSTs and the daemon over the same backlog."""
    drains = Drains()
    async with receiver() as target:
        for index in range(runs):
            raw = await run_raw(events, target, CONCURRENCY)
            drains.raw.append(raw.received.window_s())
            drains.raw_cpu.append(raw.cpu)
            run = await run_daemon(events, target, CONCURRENCY, workdir / f"run-{index}")
            drains.ours.append(run.received.window_s())
            drains.from_start.append(run.from_start_s())
            drains.our_cpu.append(run.cpu)
            print(
                f"  run {index + 1}/{runs}: raw {drains.raw[-1]:.1f} s, daemon "
                f"{drains.ours[-1]:.1f} s ({drains.from_start[-1]:.1f} s from start)",
                file=sys.stderr,
            )
    return drains


def row(count: int, drains: Drains) -> list[str]:
    ours, raw = median(drains.ours), median(drains.raw)
    target_s = TARGET_S_PER_100K * count / 100_000
    met = ours <= target_s and ours <= TARGET_RATIO * raw
    return [
        f"{count:,}",
        str(CONCURRENCY),
        f"{ours:.1f}",
        f"{median(drains.from_start):.1f}",
        f"{raw:.1f}",
        f"{ours / raw:.2f}",
        f"≤ {target_s:g} s and ≤ {TARGET_RATIO:g}",
        "yes" if met else "no",
        cpu_cell(drains.our_cpu, drains.raw_cpu),
        " / ".join(f"{o:.1f}:{r:.1f}" for o, r in zip(drains.ours, drains.raw, strict=True)),
    ]


async def main(profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs = PROFILES[profile]
    share = CpuShare()
    share.start()
    with tempfile.TemporaryDirectory() as tmp:
        async with backlog(count, Path(tmp)) as events:
            drains = await measure(events, runs, Path(tmp))
    headers = [
        "events", "concurrency", "daemon s", "daemon s from start", "raw s", "ratio",
        "target", "met?", CPU_HEADER, "each run daemon:raw (s)",
    ]  # fmt: skip
    result = table(headers, [row(count, drains)], "rrrrrrllll")
    notes = [f"Medians of {runs} alternating runs. {share.sentence()}", CPU_NOTE]
    if profile == "quick":
        target_s = TARGET_S_PER_100K * count / 100_000
        notes.append(
            f"Quick profile: {count:,} events, not 100,000; the 30 s target scaled to "
            f"{target_s:g} s."
        )
    print(result, *notes, sep="\n")
    if append:
        append_run(SECTION, INTRO, run_record(profile, result, notes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    args = parser.parse_args()
    asyncio.run(main(args.profile, not args.no_append))
