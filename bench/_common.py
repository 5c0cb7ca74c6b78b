"""What every bench script shares: the machine line, profiles, CPU sharing, the loopback receiver
process, tables and the ``BENCHMARKS.md`` appender.

Bench scripts run as ``python bench/NAME.py`` and import this as ``_common``; each takes
``--profile quick|full`` and ``--no-append`` (``profile_arguments``), since ``make bench`` and
``make bench-full`` run every ``bench/*.py`` not starting with ``_`` that way. Nothing here
measures the product itself, and nothing here writes anywhere but ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from drgreen_poller.clock import SystemClock

CLOCK = SystemClock()
BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = BENCH_DIR.parent / "BENCHMARKS.md"
# New sections go before this one (the list of what is not measured yet stays last).
LAST_SECTION = "## Not measured yet"
RECEIVER = BENCH_DIR / "_receiver.py"


# --- the machine and the run --------------------------------------------------------------------


def memory_gb() -> float:
    """Total memory of the machine, from ``/proc/meminfo``."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def machine() -> str:
    """One line: architecture, kernel, Python, cores and memory."""
    return (
        f"{platform.machine()} {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{memory_gb():.1f} GB memory"
    )


def command() -> str:
    """The exact command this script was started with."""
    return shlex.join(sys.orig_argv)


def revision() -> str:
    """The commit measured, marked ``+ changes`` when the work tree differs from it."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"

    def ask(*args: str) -> str:
        run = subprocess.run(  # noqa: S603 -- fixed arguments to git, no shell
            [git, *args], cwd=BENCHMARKS.parent, capture_output=True, text=True, check=False
        )
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = ask("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    # BENCHMARKS.md itself changes as each script of a `make bench` appends to it.
    dirty = ask("status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md")
    return commit + (" + changes" if dirty else "")


def today() -> str:
    return CLOCK.now().strftime("%Y-%m-%d %H:%M UTC")


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile quick|full`` (``make bench`` / ``make bench-full``) and ``--no-append``."""
    parser.add_argument(
        "--profile",
        choices=("quick", "full"),
        default="quick",
        help="quick: small sizes for `make bench`; full: the sizes the targets name",
    )
    parser.add_argument(
        "--no-append", action="store_true", help="print the table only; leave BENCHMARKS.md"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- how busy the machine was ---------------------------------------------------------------------


def _machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class CpuShare:
    """How much of the machine other programs used while the bench ran (were we alone?)."""

    started: float = 0.0
    busy: float = 0.0
    own: float = 0.0

    def start(self) -> None:
        self.started, self.busy, self.own = CLOCK.monotonic(), _machine_busy_s(), _own_cpu_s()

    def others_cores(self) -> float:
        """Cores' worth of CPU used by other programs since ``start`` (0 = the bench was alone)."""
        elapsed = CLOCK.monotonic() - self.started
        others = (_machine_busy_s() - self.busy) - (_own_cpu_s() - self.own)
        return max(0.0, others / elapsed) if elapsed > 0 else 0.0

    def sentence(self) -> str:
        others = self.others_cores()
        shared = "shared" if others >= 0.1 else "not shared (other programs used < 0.1 core)"
        return (
            f"Other programs used {others:.2f} of the {os.cpu_count()} cores on average during "
            f"the run: the machine was {shared}."
        )


# --- the receiver, in its own process -------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What the receiver counted: POSTs, distinct ``webhook-id``s, first and last arrival."""

    posts: int
    distinct: int
    first_s: float | None  # monotonic, comparable across processes on Linux
    last_s: float | None

    def rate(self) -> float:
        """Events per second between the first and the last arrival."""
        if self.first_s is None or self.last_s is None or self.last_s <= self.first_s:
            return 0.0
        return (self.distinct - 1) / (self.last_s - self.first_s)

    def window_s(self) -> float:
        """Seconds from the first arrival to the last."""
        if self.first_s is None or self.last_s is None:
            return 0.0
        return self.last_s - self.first_s


class Receiver:
    """The loopback webhook receiver (``_receiver.py``): answers 204 to every POST and counts."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/events"
        self._control = f"http://127.0.0.1:{port}/_bench"
        self._session = aiohttp.ClientSession()

    async def reset(self) -> None:
        async with self._session.post(f"{self._control}/reset") as response:
            response.raise_for_status()

    async def wait_for(self, distinct: int, timeout_s: float) -> Received:
        """Once ``distinct`` event ids have arrived, or after ``timeout_s``: what was counted."""
        params = {"until": str(distinct), "timeout": str(timeout_s)}
        timeout = aiohttp.ClientTimeout(total=timeout_s + 10)
        async with self._session.get(
            f"{self._control}/stats", params=params, timeout=timeout
        ) as response:
            response.raise_for_status()
            data = await response.json()
        return Received(data["posts"], data["distinct"], data["first_s"], data["last_s"])

    async def close(self) -> None:
        await self._session.close()
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """Start the receiver process on a free port; stop it on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(RECEIVER), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line:
        await process.wait()
        raise SystemExit(f"the bench receiver did not start (exit {process.returncode})")
    running = Receiver(process, int(json.loads(line)["port"]))
    try:
        yield running
    finally:
        await running.close()


# --- tables and BENCHMARKS.md ---------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table; ``align`` has one letter per column: ``r`` right, ``l`` left."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def wrap(text: str) -> str:
    """A paragraph wrapped at the repository's line length."""
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def run_record(profile: str, body: str, notes: Sequence[str] = ()) -> str:
    """One run's entry: heading, date, machine, command, the table and notes."""
    parts = [
        f"### Run of {today()} ({profile} profile)",
        f"Machine: {machine()}.\nCommand: `{command()}` at commit {revision()}.",
        body,
        *(wrap(note) for note in notes),
    ]
    return "\n\n".join(parts) + "\n"


def append_run(section: str, intro: str, record: str, path: Path = BENCHMARKS) -> None:
    """Add ``record`` at the end of ``## section`` (created with ``intro`` when missing),
    keeping every earlier run."""
    text = path.read_text(encoding="utf-8")
    heading = f"## {section}"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == heading), None)
    if start is None:
        block = f"{heading}\n\n{wrap(intro)}\n\n{record}\n"
        cut = text.find(f"\n{LAST_SECTION}\n")
        text = text + "\n" + block if cut < 0 else text[: cut + 1] + block + text[cut + 1 :]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "".join(lines[:end]).rstrip("\n") + "\n\n"
        after = "".join(lines[end:])
        text = before + record + ("\n" + after if after else "")
    path.write_text(text, encoding="utf-8")
    print(f"appended to {path} under '{heading}'")


def report(
    section: str, intro: str, profile: str, result: str, notes: Sequence[str], append: bool
) -> None:
    """Print a run's table and notes; with ``append``, add the run to ``BENCHMARKS.md``."""
    print(result, *notes, sep="\n")
    if append:
        append_run(section, intro, run_record(profile, result, notes))


def main_with_profile(doc: str, main: Callable[[str, bool], Coroutine[Any, Any, None]]) -> None:
    """The ``__main__`` of a script taking ``--profile`` and ``--no-append`` only."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    profile_arguments(parser)
    args = parser.parse_args()
    asyncio.run(main(args.profile, not args.no_append))
