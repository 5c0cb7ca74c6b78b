"""What the reliability suite's processes share: the console script they run, the one clock
they read, how long a start or stop may take, the size of a run (short inside ``make test``,
full under ``make reliability``) and ``wait_for``.

The processes themselves are in ``sandbox_process`` (the sandbox and its control API),
``receiver`` (a verifying webhook receiver) and ``daemon_process`` (``drgreen-poller run``).
None of them may reach into the daemon's internals: only files, processes and HTTP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from drgreen_poller.clock import SystemClock

# The console script of the venv running the tests: what `pip install` gives an operator.
CLI = str(Path(sys.executable).with_name("drgreen-poller"))
# Waiting on real processes takes real time: the one clock these tests read.
CLOCK = SystemClock()
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
FULL_ENV = "RELIABILITY_FULL"  # "1" under `make reliability`


@dataclass(frozen=True, slots=True)
class Scale:
    """How big a run is: the short form runs in ``make test``, the full one separately."""

    name: str
    kills: int
    orders: int
    clients: int
    min_moves: int  # the driver goes on until each resource moved this often (or ended)
    fault_count: int  # failed upstream answers per injected fault
    page_orders: int  # orders of the holder whose sweeps span several pages
    shift_orders: int  # orders inserted or deleted while a sweep pages
    timeout_s: int  # per test


SHORT = Scale("short", kills=5, orders=8, clients=4, min_moves=2, fault_count=1, page_orders=130,
              shift_orders=20, timeout_s=150)  # fmt: skip
FULL = Scale("full", kills=24, orders=44, clients=16, min_moves=3, fault_count=3, page_orders=260,
             shift_orders=60, timeout_s=480)  # fmt: skip


def current_scale() -> Scale:
    """The full form when ``RELIABILITY_FULL=1`` (``make reliability``), else the short one."""
    return FULL if os.environ.get(FULL_ENV) == "1" else SHORT


SCALE = current_scale()


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str, step_s: float = 0.05
) -> float:
    """Wait until ``check()`` holds; returns the seconds it took.

    Raises:
        AssertionError: it did not hold within ``timeout_s`` (the message says what).
    """
    started = CLOCK.monotonic()
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return CLOCK.monotonic() - started
        if CLOCK.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        await CLOCK.sleep(step_s)
