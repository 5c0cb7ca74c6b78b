"""Delivery throughput: signed events per second from the daemon, against raw aiohttp POSTs.

N events (real ``order.created`` events, committed by the poller's first sync) wait in a SQLite
state; the real daemon (``drgreen-poller run`` in its own process, ``[delivery] concurrency`` =
16, then 64) delivers them to a loopback receiver in a third process, which answers 204 and
counts. The baseline, in the same run: the same bodies with the same headers, POSTed by a fixed
pool of as many coroutines over one ``aiohttp.ClientSession`` with the same connection limit,
to the same receiver. Runs alternate (raw, daemon, raw, daemon, ...) and the medians are
reported. Events per second are measured at the receiver, from the first event's arrival to
the last, so neither side's start-up counts; the daemon's time from start is printed beside.

    .venv/bin/python bench/delivery_throughput.py [--profile quick|full] [--no-append]
        quick: 5,000 events, 3 runs of each per concurrency; full: 20,000 events, 5 runs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import CpuShare, main_with_profile, median, report, table
from _delivery import CPU_HEADER, CPU_NOTE, Backlog, Pair, alternate, backlog, cpu_cell

from drgreen_poller import logs

SECTION = "Delivery throughput"
INTRO = (
    "`bench/delivery_throughput.py`: N real `order.created` events already in the state, "
    "delivered by `drgreen-poller run` (its own process) to a loopback receiver (its own "
    "process, answering 204), against raw aiohttp POSTs of the same bodies and headers "
    "(signed beforehand) at the same concurrency to the same receiver. The daemon logs its "
    "line per attempt (JSON, to a file, its output buffered as under systemd) and polls one "
    "quiet sandbox holder meanwhile, as in production. Events/s are measured at the receiver "
    "from the first arrival to the last; runs alternate and the medians are shown. "
    "Target: ≥ 0.8 × raw."
)
PROFILES = {"quick": (5_000, 3), "full": (20_000, 5)}
CONCURRENCIES = (16, 64)
TARGET_RATIO = 0.8


async def measure(events: Backlog, concurrency: int, runs: int, workdir: Path) -> list[Pair]:
    """Alternating runs of raw POSTs and of the daemon, to one receiver."""
    pairs: list[Pair] = []
    async for raw, run in alternate(events, concurrency, runs, workdir):
        pairs.append((raw, run))
        print(
            f"  concurrency {concurrency}, run {len(pairs)}/{runs}: "
            f"raw {raw.received.rate():,.0f}/s, daemon {run.received.rate():,.0f}/s "
            f"({run.from_start_s():.1f} s from start)",
            file=sys.stderr,
        )
    return pairs


def row(concurrency: int, count: int, pairs: list[Pair]) -> list[str]:
    ours = [run.received.rate() for _, run in pairs]
    raw = [raw.received.rate() for raw, _ in pairs]
    ratio = median(ours) / median(raw)
    return [
        str(concurrency),
        f"{count:,}",
        f"{median(ours):,.0f}",
        f"{median(raw):,.0f}",
        f"{ratio:.2f}",
        f"≥ {TARGET_RATIO}",
        "yes" if ratio >= TARGET_RATIO else "no",
        f"{median([run.from_start_s() for _, run in pairs]):.1f}",
        cpu_cell(pairs),
        " / ".join(f"{o:,.0f}:{r:,.0f}" for o, r in zip(ours, raw, strict=True)),
    ]


async def main(profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs = PROFILES[profile]
    share = CpuShare()
    share.start()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        tmp = Path(workdir)
        async with backlog(count, tmp) as events:
            for concurrency in CONCURRENCIES:
                rows.append(row(concurrency, count, await measure(events, concurrency, runs, tmp)))
    headers = [
        "concurrency", "events", "daemon events/s", "raw events/s", "ratio", "target", "met?",
        "daemon s from start", CPU_HEADER, "each run daemon:raw (events/s)",
    ]  # fmt: skip
    result = table(headers, rows, "rrrrrllrll")
    notes = [f"Medians of {runs} alternating runs per concurrency. {share.sentence()}", CPU_NOTE]
    report(SECTION, INTRO, profile, result, notes, append)


if __name__ == "__main__":
    main_with_profile(__doc__, main)
