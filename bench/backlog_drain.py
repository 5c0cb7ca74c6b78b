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

import sys
import tempfile
from pathlib import Path

from _common import CpuShare, main_with_profile, median, report, table
from _delivery import CPU_HEADER, CPU_NOTE, Backlog, Pair, alternate, backlog, cpu_cell

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


async def measure(events: Backlog, runs: int, workdir: Path) -> list[Pair]:
    """Alternating runs of raw POSTs and the daemon over the same backlog."""
    pairs: list[Pair] = []
    async for raw, run in alternate(events, CONCURRENCY, runs, workdir):
        pairs.append((raw, run))
        print(
            f"  run {len(pairs)}/{runs}: raw {raw.received.window_s():.1f} s, daemon "
            f"{run.received.window_s():.1f} s ({run.from_start_s():.1f} s from start)",
            file=sys.stderr,
        )
    return pairs


def row(count: int, pairs: list[Pair]) -> list[str]:
    drains = [run.received.window_s() for _, run in pairs]
    raws = [raw.received.window_s() for raw, _ in pairs]
    ours, raw = median(drains), median(raws)
    target_s = TARGET_S_PER_100K * count / 100_000
    met = ours <= target_s and ours <= TARGET_RATIO * raw
    return [
        f"{count:,}",
        str(CONCURRENCY),
        f"{ours:.1f}",
        f"{median([run.from_start_s() for _, run in pairs]):.1f}",
        f"{raw:.1f}",
        f"{ours / raw:.2f}",
        f"≤ {target_s:g} s and ≤ {TARGET_RATIO:g}",
        "yes" if met else "no",
        cpu_cell(pairs),
        " / ".join(f"{o:.1f}:{r:.1f}" for o, r in zip(drains, raws, strict=True)),
    ]


async def main(profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs = PROFILES[profile]
    share = CpuShare()
    share.start()
    with tempfile.TemporaryDirectory() as tmp:
        async with backlog(count, Path(tmp)) as events:
            pairs = await measure(events, runs, Path(tmp))
    headers = [
        "events", "concurrency", "daemon s", "daemon s from start", "raw s", "ratio",
        "target", "met?", CPU_HEADER, "each run daemon:raw (s)",
    ]  # fmt: skip
    result = table(headers, [row(count, pairs)], "rrrrrrllll")
    notes = [f"Medians of {runs} alternating runs. {share.sentence()}", CPU_NOTE]
    if profile == "quick":
        target_s = TARGET_S_PER_100K * count / 100_000
        notes.append(
            f"Quick profile: {count:,} events, not 100,000; the 30 s target scaled to "
            f"{target_s:g} s."
        )
    report(SECTION, INTRO, profile, result, notes, append)


if __name__ == "__main__":
    main_with_profile(__doc__, main)
