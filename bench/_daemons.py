"""The daemon processes of one delivery bench run: ``drgreen-poller run`` started as systemd
would (output buffered), the CPU of its threads, the receiver's and the PostgreSQL server's read
from ``/proc`` while it delivers, until the receiver has every event; then stopped by SIGTERM.
It makes no backlog and judges no figure (``_delivery`` does the first, the benches the second).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import CLOCK, Received, Receiver
from _cpu import CpuPerEvent, Sample, cpu_between, cpu_s, threads_cpu_s
from _pg import InstancesRefused, Postgres, refused

# Generous: a run that has not finished by then has stalled, and the bench says so.
SLOWEST_RATE = 100.0  # events/s
STALL_S = 60.0

# The daemon's environment: this one without PYTHONUNBUFFERED (which some shells and CI images
# export), so its output is buffered as under systemd, where the unit does not set it.
AS_UNDER_SYSTEMD = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
# How often the daemon's CPU is read while it delivers (and the receiver asked how far it got).
SAMPLE_S = 0.1


@dataclass(frozen=True)
class DaemonRun:
    """What the receiver saw of one daemon run, when the daemon was started, and the CPU per
    event from the first arrival on (start-up left out)."""

    received: Received
    spawned_s: float
    cpu: CpuPerEvent

    def from_start_s(self) -> float:
        """Seconds from starting the daemon to the last event's arrival (start-up included)."""
        return (self.received.last_s or self.spawned_s) - self.spawned_s


async def run_instances(
    count: int, receiver: Receiver, config: Path, instances: int, pg: Postgres | None
) -> DaemonRun:
    """Start the daemons, wait for every event, stop them; a refused second one is told apart
    from a failure by its log."""
    logs = [config.parent / f"daemon-{i + 1}.log" for i in range(instances)]
    await receiver.reset()
    daemons: list[asyncio.subprocess.Process] = []
    spawned = CLOCK.monotonic()
    try:
        for log in logs:
            daemons.append(await _spawn(config, log))
        server = pg.server_cpu_s if pg is not None else dict
        received, cpu = await _until_all(count, receiver, daemons, logs, server)
    finally:
        codes = await _stop(daemons)
    if any(code != 0 for code in codes):
        if instances > 1 and refused(logs):
            raise InstancesRefused
        raise SystemExit(f"a daemon exited {codes}; the logs: {', '.join(map(str, logs))}")
    return DaemonRun(received, spawned, cpu)


async def _spawn(config: Path, log: Path) -> asyncio.subprocess.Process:
    """One ``drgreen-poller run`` on ``config``, its output to ``log``."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "drgreen_poller", "-c", str(config), "run",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=AS_UNDER_SYSTEMD,
        )  # fmt: skip


async def _stop(daemons: Sequence[asyncio.subprocess.Process]) -> list[int]:
    """SIGTERM to every daemon still running; their exit codes."""
    for daemon in daemons:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
    return [await daemon.wait() for daemon in daemons]


async def _until_all(
    count: int,
    receiver: Receiver,
    daemons: Sequence[asyncio.subprocess.Process],
    logs: Sequence[Path],
    server: Callable[[], dict[int, float]],
) -> tuple[Received, CpuPerEvent]:
    """Until the receiver has every event; the daemons' CPU is read every ``SAMPLE_S``."""
    deadline = CLOCK.monotonic() + count / SLOWEST_RATE + STALL_S
    receiver_stat = Path(f"/proc/{receiver.process.pid}/stat")
    first: Sample | None = None
    loops = {(d.pid, d.pid) for d in daemons}
    while True:
        got = await receiver.wait_for(count, SAMPLE_S)
        stopped = [d.returncode for d in daemons if d.returncode is not None]
        if stopped:
            if len(daemons) > 1 and refused(logs):
                raise InstancesRefused
            raise SystemExit(f"a daemon stopped (exit {stopped[0]}) at {got.distinct}")
        threads = {key: s for d in daemons for key, s in threads_cpu_s(d.pid).items()}
        sample = Sample(got.distinct, threads, cpu_s(receiver_stat), server())
        if first is None and got.distinct > 0:
            first = sample
        if got.distinct >= count and first is not None:
            return got, cpu_between(first, sample, loops)
        if CLOCK.monotonic() > deadline:
            raise SystemExit(f"the daemons delivered only {got.distinct} of {count} in time")
