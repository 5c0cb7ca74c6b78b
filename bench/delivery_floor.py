"""Delivery floor: from raw aiohttp POSTs to the daemon, one necessary step at a time.

Where does the daemon's delivery rate go, against raw POSTs of the same bodies (the baseline of
``delivery_throughput.py``)? The same N real ``order.created`` events are sent to the same
loopback receiver (its own process, answering 204) at the same concurrency by, in turn: raw
aiohttp POSTs (headers signed beforehand); the floor's sender (``_floor.py``, its own process,
set up as the daemon is) at each of its steps, the first a control doing raw's work in that
process (``posted``), each next one adding one thing every signed, durable sender does
(``signed``: sign each event as it is sent and classify the answer through the real sink;
``claimed``: claim rows from the state while sending; ``logged``: the canonical line per
attempt; ``recorded``: record every attempt durably, one transaction per turn); and the real
daemon (``drgreen-poller run``). Every round runs each sender once, the order rotated from one
round to the next; events/s are measured at the receiver from the first arrival to the last.
Each sender's ratio is the median over the rounds of its rate over the same round's raw rate.
SQLite, as the daemon's default.

The last floor step is the least a sender that keeps the daemon's promises does with the
daemon's own parts (aiohttp, the webhook sink, the store, the structlog set-up); what the daemon
loses beyond it is what its own structure costs (a task per attempt, fairness between sinks,
retries, the gate of a shared database, metrics, the poller beside).

    .venv/bin/python bench/delivery_floor.py [--profile quick|full] [--no-append]
        quick: 5,000 events, 2 rounds, concurrency 16;
        full: 20,000 events, 5 rounds, concurrency 16 and 64
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from _common import BENCH_DIR, CpuShare, Receiver, main_with_profile, median, receiver, report
from _common import table as markdown_table
from _daemons import AS_UNDER_SYSTEMD, SLOWEST_RATE, STALL_S
from _delivery import Backlog, backlog, check_delivered, run_daemon, run_raw, write_config
from _floor import STEPS
from _pg import Setup

from drgreen_poller import logs

SECTION = "Delivery floor"
INTRO = (
    "`bench/delivery_floor.py`: the same N real `order.created` events sent to the same "
    "loopback receiver at the same concurrency by raw aiohttp POSTs (headers signed beforehand), "
    "by a minimal sender (`bench/_floor.py`, its own process, set up as the daemon is) at each "
    "of its steps, and by the daemon. The steps: posted (a control: raw's work in that process), "
    "then each adding one thing every signed, durable sender does: signed (sign each event as "
    "it is sent and classify the answer, through the real sink), claimed (claim rows from the "
    "SQLite state while sending), logged (the canonical line per attempt), recorded (record "
    "every attempt, one transaction per turn). Each round runs every sender once, in an order "
    "rotated from round to round; events/s at the receiver; a sender's ratio is the median over "
    "the rounds of its rate over the same round's raw rate."
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
    limit_s = events.count / SLOWEST_RATE + STALL_S
    received = await target.wait_for(events.count, limit_s)
    try:
        code = await asyncio.wait_for(sender.wait(), STALL_S)
    except TimeoutError:
        sender.kill()
        raise SystemExit(f"the floor's {step} run did not end") from None
    if code != 0 or received.distinct != events.count:
        raise SystemExit(f"the floor's {step} run exited {code}, {received.distinct} received")
    if step == "recorded":
        await check_delivered(rundir / "state.db")  # it did record every attempt
    shutil.rmtree(rundir)
    return received.rate()


SENDERS = ("raw", *STEPS, "daemon")


async def run_sender(name: str, events: Backlog, target: Receiver, c: int, rundir: Path) -> float:
    """One run of sender ``name``; events/s at the receiver."""
    if name == "raw":
        return (await run_raw(events, target, c)).received.rate()
    if name == "daemon":
        return (await run_daemon(events, target, c, rundir, Setup("sqlite"))).received.rate()
    return await run_floor(name, events, target, c, rundir)


async def measure(events: Backlog, c: int, runs: int, workdir: Path) -> list[dict[str, float]]:
    """``runs`` rounds, each running every sender once, the order rotated round to round (so
    no sender always follows the same one); each round's events/s per sender."""
    rounds: list[dict[str, float]] = []
    async with receiver() as target:
        for index in range(runs):
            turn = index % len(SENDERS)
            rates: dict[str, float] = {}
            for name in SENDERS[turn:] + SENDERS[:turn]:
                rundir = workdir / f"c{c}-{index}-{name}"
                rates[name] = await run_sender(name, events, target, c, rundir)
            rounds.append(rates)
            shown = ", ".join(f"{name} {rates[name]:,.0f}/s" for name in SENDERS)
            print(f"  concurrency {c}, round {index + 1}/{runs}: {shown}", file=sys.stderr)
    return rounds


def rows(c: int, rounds: list[dict[str, float]]) -> list[list[str]]:
    """A row per sender: median events/s, the median of its per-round ratios to raw, and the
    same as µs of wall time per event, each round's figure."""
    found = []
    for name in SENDERS:
        rates = [r[name] for r in rounds]
        ratios = [r[name] / r["raw"] for r in rounds]
        found.append(
            [
                str(c), name, f"{median(rates):,.0f}", f"{median(ratios):.2f}",
                f"{1e6 / median(rates):.1f}",
                " / ".join(
                    f"{rate:,.0f} ({ratio:.2f})" for rate, ratio in zip(rates, ratios, strict=True)
                ),
            ]
        )  # fmt: skip
    return found


async def main(profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    count, runs, concurrencies = PROFILES[profile]
    share = CpuShare()
    share.start()
    found: list[list[str]] = []
    with tempfile.TemporaryDirectory() as workdir:
        async with backlog(count, Path(workdir)) as events:
            for c in concurrencies:
                found += rows(c, await measure(events, c, runs, Path(workdir)))
    headers = [
        "concurrency", "sender", "events/s", "× raw (median of rounds)", "µs/event",
        "each round: events/s (× that round's raw)",
    ]  # fmt: skip
    notes = [
        f"{count:,} events; {runs} rounds per concurrency, the senders' order rotated from "
        f"round to round. {share.sentence()}",
        "Each floor step keeps the ones above it: posted (the control), then signed < claimed "
        "< logged < recorded. µs/event: wall time per event at the receiver (1 / the median "
        "events/s). The daemon's target is ≥ 0.8 × raw (delivery_throughput.py).",
    ]
    result = markdown_table(headers, found, "rlrrrl")
    report(SECTION, INTRO, profile, result, notes, append)


if __name__ == "__main__":
    main_with_profile(__doc__, main)
