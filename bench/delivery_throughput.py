"""Delivery throughput: signed events per second from the daemon, against raw aiohttp POSTs.

N events (real ``order.created`` events, committed by the poller's first sync) wait in a SQLite
state; the real daemon (``drgreen-poller run`` in its own process, ``[delivery] concurrency`` =
16, then 64) delivers them to a loopback receiver in a third process, which answers 204 and
counts. The baseline, in the same run: the same bodies with the same headers, POSTed by a fixed
pool of as many coroutines over one ``aiohttp.ClientSession`` with the same connection limit,
to the same receiver. Runs alternate (raw, daemon, raw, daemon, ...) and the medians are
reported. Events per second are measured at the receiver, from the first event's arrival to
the last, so neither side's start-up counts; the daemon's time from start is printed beside.

The daemon's store (``--backend``): the SQLite file, or a PostgreSQL database (a server the
bench starts, ``_pg``) with one or two daemons on it (``--instances``); each is a row beside the
same raw baseline, and a round runs raw, then the daemon in each setup in turn.

    .venv/bin/python bench/delivery_throughput.py [--profile quick|full] [--no-append]
        [--backend sqlite|postgresql|both] [--instances 1 2]
        quick: 5,000 events, 3 runs of each per concurrency, SQLite;
        full: 20,000 events, 5 runs, SQLite and PostgreSQL with 1 and 2 instances
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

SECTION = "Delivery throughput"
INTRO = (
    "`bench/delivery_throughput.py`: N real `order.created` events already in the state, "
    "delivered by `drgreen-poller run` (its own process) to a loopback receiver (its own "
    "process, answering 204), against raw aiohttp POSTs of the same bodies and headers "
    "(signed beforehand) at the same concurrency to the same receiver. The daemon logs its "
    "line per attempt (JSON, to a file, its output buffered as under systemd) and polls one "
    "quiet sandbox holder meanwhile, as in production. Events/s are measured at the receiver "
    "from the first arrival to the last; runs alternate and the medians are shown. The state "
    "is SQLite, or PostgreSQL with one or two daemons on it (a row each). "
    "Target: ≥ 0.8 × raw."
)
PROFILES = {"quick": (5_000, 3), "full": (20_000, 5)}
CONCURRENCIES = (16, 64)
TARGET_RATIO = 0.8


def _rate(received: Received) -> str:
    return f"{received.rate():,.0f}/s"


def rows(
    concurrency: int, count: int, rounds: list[Round], chosen: Sequence[Setup]
) -> list[list[str]]:
    """A row per setup, each beside the same raw runs."""
    found = []
    for setup in chosen:
        pairs = pairs_of(rounds, setup)
        if pairs:
            found.append(row(setup, concurrency, count, pairs))
        else:
            raw = median([raw.received.rate() for raw, _ in rounds])
            found.append(
                [
                    setup.label,
                    str(concurrency),
                    f"{count:,}",
                    NOT_SUPPORTED,
                    f"{raw:,.0f}",
                    *["–"] * 6,
                ]
            )
    return found


def row(setup: Setup, concurrency: int, count: int, pairs: list[Pair]) -> list[str]:
    ours = [run.received.rate() for _, run in pairs]
    raw = [raw.received.rate() for raw, _ in pairs]
    ratio = median(ours) / median(raw)
    return [
        setup.label,
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


async def main(args: argparse.Namespace) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs = PROFILES[args.profile]
    chosen = setups(args.profile, args.backend, args.instances)
    share = CpuShare()
    share.start()
    found: list[list[str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as workdir, postgres(chosen) as pg:
        tmp = Path(workdir)
        async with backlog(count, tmp, pg) as events:
            for concurrency in CONCURRENCIES:
                rounds = await measure(
                    events, concurrency, runs, tmp, chosen, shown=_rate,
                    label=f"concurrency {concurrency}, ",
                )  # fmt: skip
                found += rows(concurrency, count, rounds, chosen)
        if pg is not None:
            notes.append(pg.settings())
    headers = [
        "store", "concurrency", "events", "daemon events/s", "raw events/s", "ratio", "target",
        "met?", "daemon s from start", CPU_HEADER, "each run daemon:raw (events/s)",
    ]  # fmt: skip
    result = table(headers, found, "lrrrrrllrll")
    notes[:0] = [
        f"Medians of {runs} alternating runs per concurrency. {share.sentence()}",
        CPU_NOTE,
        *store_note(chosen),
    ]
    report(SECTION, INTRO, args.profile, result, notes, not args.no_append)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    backend_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
