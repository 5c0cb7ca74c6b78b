"""Waiting in tests for something another task or process does: the suite's one polling helper.

Owns ``eventually``: it polls a condition in real time (the work it waits on runs on real
servers, real processes and real sockets) and fails with a clear message, at once when a task
the condition depends on has ended. It must not be used to wait on time itself: code under test
takes an injected clock, and tests advance a ``FakeClock`` instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from drgreen_poller.clock import FakeClock, SystemClock

CLOCK = SystemClock()

Check = Callable[[], bool] | Callable[[], Awaitable[bool]]


async def eventually(
    check: Check,
    *,
    timeout_s: float = 5.0,
    step_s: float = 0.02,
    what: str = "the condition",
    task: asyncio.Task[Any] | None = None,
) -> None:
    """Return once ``check()`` (plain or awaitable) holds; poll every ``step_s`` of real time.

    Raises:
        AssertionError: ``timeout_s`` passed first, or ``task`` (the daemon, say) ended first;
            a task that ended with an error raises that error instead.
    """
    deadline = CLOCK.monotonic() + timeout_s
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the task ended on its own before {what} held")
        if CLOCK.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        await CLOCK.sleep(step_s)


async def until_sleeping(clock: FakeClock, task: asyncio.Task[Any]) -> None:
    """Until something sleeps on ``clock`` (a slow answer, the token bucket), or ``task`` has
    ended: the point where a test advances the fake clock."""
    await eventually(
        lambda: bool(clock.sleepers) or task.done(),
        step_s=0.005,
        what="something sleeping on the fake clock",
    )
