"""CPU and memory read from ``/proc``: per delivered event (each thread of a sender, the receiver,
the PostgreSQL server's processes, between two samples of a run, and the notes the tables
print), and a process's CPU seconds and resident memory (the scale bench).

Owns what a "CPU µs/event" figure means (the daemon's event loop thread apart from its other
threads, so the table shows which one limits delivery). It runs nothing and judges nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(stat: Path) -> float:
    """utime + stime from a ``/proc/.../stat`` file, in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def threads_cpu_s(pid: int) -> dict[tuple[int, int], float]:
    """utime + stime of each thread of ``pid`` (keyed by pid and thread id), in seconds, from
    ``/proc``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[pid, int(task.name)] = cpu_s(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
    return found


@dataclass(frozen=True)
class CpuPerEvent:
    """CPU microseconds per delivered event: the sender's event loop thread, its other threads
    (SQLite's or psycopg's, for the daemon), the receiver's, and the PostgreSQL server's
    processes (0 with SQLite, whose work is in the daemon's own thread)."""

    loop_us: float
    others_us: float
    receiver_us: float
    server_us: float = 0.0

    @property
    def sender_us(self) -> float:
        return self.loop_us + self.others_us


CPU_HEADER = (
    "CPU µs/event: daemon loop + other threads (+ PostgreSQL server) : raw · receiver daemon:raw"
)
CPU_NOTE = (
    "CPU µs/event: CPU time per delivered event, medians over the runs, from /proc (the daemon's "
    "from its first event's arrival on, each of its threads; the raw side's whole process), and "
    "the receiver's in each kind of run. With PostgreSQL, the server's processes (the daemons' "
    "connections, the WAL writer, the checkpointer, autovacuum) are a third term: with SQLite "
    "that work is in the daemon's own threads."
)


@dataclass(frozen=True)
class Sample:
    """How far the receiver had got, and the CPU seconds used so far, at one moment."""

    distinct: int
    threads: dict[tuple[int, int], float]
    receiver_s: float
    server: dict[int, float]  # each PostgreSQL server process's CPU (none with SQLite)


def cpu_between(first: Sample, last: Sample, loops: set[tuple[int, int]]) -> CpuPerEvent:
    """CPU per event between two samples of a daemon run (``loops``: each daemon's main
    thread, whose CPU is the event loop's; with two daemons, both summed)."""
    events = max(1, last.distinct - first.distinct)

    def used(tids: set[tuple[int, int]]) -> float:
        return sum(last.threads[t] - first.threads.get(t, 0.0) for t in tids) / events * 1e6

    others = set(last.threads) - loops
    receiver = (last.receiver_s - first.receiver_s) / events * 1e6
    server = sum(s - first.server.get(pid, 0.0) for pid, s in last.server.items())
    return CpuPerEvent(
        used(loops & set(last.threads)), used(others), receiver, server / events * 1e6
    )


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    return cpu_s(Path(f"/proc/{pid}/stat"))


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of ``pid`` from /proc/<pid>/status (VmRSS now, VmHWM its peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0
