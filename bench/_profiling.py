"""Profiling a daemon during a bench: py-spy's folded stacks, and the functions most often on
them (idle waits left out). Used by ``scale.py --py-spy``; it measures nothing of its own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent / "drgreen-poller"


async def py_spy(pid: int, seconds: float, out: Path, *, gil: bool = False) -> None:
    """Sample ``pid`` for ``seconds`` into folded stacks at ``out``; print the top functions.

    ``gil``: only the thread holding the GIL (Python's own CPU; waits and C code without the
    GIL left out), instead of every thread.
    """
    spy = await asyncio.create_subprocess_exec(
        str(BIN.parent / "py-spy"), "record", "--nonblocking", "-p", str(pid),
        "-d", str(round(seconds)), "-r", "100", "-f", "raw", "-o", str(out),
        *(["--gil"] if gil else []),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await spy.wait()
    print(top_functions(out.read_text().splitlines()))  # noqa: ASYNC240 - once, sampling over


def top_functions(folded: Sequence[str], count: int = 40) -> str:
    """The functions most often on the stack (inclusive share of the samples), idle excluded."""
    # Waiting in epoll, and aiosqlite's worker thread blocked on its queue (``tx.get()``).
    idle = (".select (selectors.py", "_connection_worker_thread (aiosqlite/core.py:59)")
    totals: dict[str, int] = {}
    samples = 0
    for line in folded:
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if any(mark in frames[-1] for mark in idle):
            continue
        samples += int(number)
        for name in {f.split(":")[0] + ")" if ":" in f else f for f in frames}:
            totals[name] = totals.get(name, 0) + int(number)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:count]
    lines = [f"{100 * n / max(1, samples):5.1f} %  {name}" for name, n in ranked]
    return "\n".join([f"busy samples: {samples}", *lines])
