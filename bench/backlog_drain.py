"""Backlog drain: seconds for the daemon to deliver 100,000 due events, against raw aiohttp.

100,000 real ``order.created`` events (the poller's first sync with ``first_sync = "emit"``) wait
as due deliveries in a SQLite state, as after a receiver outage; the real daemon (``drgreen-poller
run`` in its own process, default ``[delivery] concurrency`` of 16) drains them to a loopback
receiver in a third process, which answers 204 and counts. The baseline, in the same run: the
same bodies and headers POSTed by 16 coroutines over one ``aiohttp.ClientSession`` with the same
connection limit, to the same receiver. Runs alternate (raw, daemon, ...); medians are reported.
The drain time is measured at the receiver, from the first event's arrival to the last; the
daemon's time from its start is printed beside it.

The daemon's store (``--backend``): the SQLite file, or a PostgreSQL database (a server the
bench starts, ``_pg``) with one or two daemons on it (``--instances``); each is a row beside the
same raw baseline, and a round runs raw, then the daemon in each setup in turn.

    .venv/bin/python bench/backlog_drain.py [--profile quick|full] [--no-append]
        [--backend sqlite|postgresql|both] [--instances 1 2]
        quick: 10,000 events, 2 runs of each (the 30 s target scaled to 3 s), SQLite;
        full: 100,000, 3 runs, SQLite and PostgreSQL with 1 and 2 instances
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import CpuShare, Received, median, profile_arguments, report, table
from _cpu import CPU_HEADER, CPU_NOTE
from _delivery import (
    Pair,
    Round,
    backlog,
    cpu_cell,
    measure,
    pairs_of,
)
from _pg import NOT_SUPPORTED, Setup, backend_arguments, postgres, setups, store_note

from drgreen_poller import logs
from drgreen_poller.config import DeliveryConfig

SECTION = "Backlog drain"
INTRO = (
    "`bench/backlog_drain.py`: N real `order.created` events due in the state (as after a "
    "receiver outage), drained by `drgreen-poller run` (its own process, default concurrency "
    "16) to a loopback receiver (its own process, answering 204), against raw aiohttp POSTs of "
    "the same bodies and headers (signed beforehand) at the same concurrency to the same "
    "receiver. Seconds are measured at the receiver from the first arrival to the last; runs "
    "alternate and the medians are shown. The state is SQLite, or PostgreSQL with one or two "
    "daemons on it (a row each). Targets: 100,000 in ≤ 30 s and ≤ 2 × raw (the quick profile "
    "scales the 30 s to its size)."
)
PROFILES = {"quick": (10_000, 2), "full": (100_000, 3)}
CONCURRENCY = DeliveryConfig().concurrency
TARGET_S_PER_100K = 30.0
TARGET_RATIO = 2.0


def _seconds(received: Received) -> str:
    return f"{received.window_s():.1f} s"


def rows(count: int, rounds: list[Round], chosen: Sequence[Setup]) -> list[list[str]]:
    """A row per setup, each beside the same raw runs."""
    found = []
    for setup in chosen:
        pairs = pairs_of(rounds, setup)
        if pairs:
            found.append([setup.label, *row(count, pairs)])
        else:
            raw = median([raw.received.window_s() for raw, _ in rounds])
            cells = [f"{count:,}", str(CONCURRENCY), NOT_SUPPORTED, "–", f"{raw:.1f}"]
            found.append([setup.label, *cells, *["–"] * 5])
    return found


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


async def main(args: argparse.Namespace) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    profile = args.profile
    count, runs = PROFILES[profile]
    chosen = setups(profile, args.backend, args.instances)
    share = CpuShare()
    share.start()
    settings = ""
    with tempfile.TemporaryDirectory() as tmp, postgres(chosen) as pg:
        async with backlog(count, Path(tmp), pg) as events:
            rounds = await measure(events, CONCURRENCY, runs, Path(tmp), chosen, shown=_seconds)
        settings = pg.settings() if pg is not None else ""
    headers = [
        "store", "events", "concurrency", "daemon s", "daemon s from start", "raw s", "ratio",
        "target", "met?", CPU_HEADER, "each run daemon:raw (s)",
    ]  # fmt: skip
    result = table(headers, rows(count, rounds, chosen), "lrrrrrrllll")
    notes = [f"Medians of {runs} alternating runs. {share.sentence()}", CPU_NOTE]
    notes += store_note(chosen)
    if settings:
        notes.append(settings)
    if profile == "quick":
        target_s = TARGET_S_PER_100K * count / 100_000
        notes.append(
            f"Quick profile: {count:,} events, not 100,000; the 30 s target scaled to "
            f"{target_s:g} s."
        )
    report(SECTION, INTRO, profile, result, notes, not args.no_append)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    backend_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
