"""The crash loop (issue 7, point 11a): SIGKILLs at random moments under a moving upstream.

The daemon (the real CLI) is killed right after start, while it polls (a share of the
sandbox's answers are slowed so polls last) and while a delivery is in flight (the receiver
holds its answers), and restarted each time, while a driver moves orders and clients through
their lifecycles. At the end a last run drains everything and the receiver must hold every
transition under exactly one id, nothing invented, each resource's events in order (a retry
after a kill never after the resource's next event).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.daemon_process import Daemon, write_config
from tests.reliability.driver import Driver
from tests.reliability.expected import check_deliveries, stale_arrivals
from tests.reliability.harness import CLOCK, SCALE, wait_for
from tests.reliability.receiver import Receiver
from tests.reliability.sandbox_process import Control, SandboxProcess

INTERVAL_S = 1.0
# Two moves of one resource are this far apart, in wall time and in the daemon's uptime (a slow
# start on a busy machine does not count): a restart, a kill right after it, another restart
# and two poll intervals fit in between, so every state is observable.
SPACING_S = 6.0
KILL_MODES = ("start", "polling", "delivery")
DRAIN_TIMEOUT_S = 60.0


@dataclass
class Killer:
    """Restarts the daemon and SIGKILLs it at random moments of the chosen kind.

    ``polling`` kills land while a slowed upstream answer is pending (the sandbox's slow fault
    counts a request when it arrives); ``delivery`` kills while the receiver holds its answer.
    """

    daemon: Daemon
    receiver: Receiver
    control: Control
    slow_fault: int
    rng: random.Random
    modes: Counter[str] = field(default_factory=Counter)
    last: str = ""

    @property
    def kills(self) -> int:
        return sum(self.modes.values())

    async def cycle(self) -> None:
        """One run of the daemon, ended by a SIGKILL (never two right-after-start in a row)."""
        choices = KILL_MODES[1:] if self.last == "start" else KILL_MODES
        mode = self.rng.choice(choices)
        await self.daemon.start()
        if mode == "start":
            await CLOCK.sleep(self.rng.uniform(0.05, 0.6))
        else:
            await CLOCK.sleep(self.rng.uniform(0.5, 2.0))
            mode = await self._mid_delivery() if mode == "delivery" else await self._mid_poll()
        await self.daemon.kill()
        self.modes[mode] += 1
        self.last = mode

    async def _mid_poll(self) -> str:
        """Return while a slowed request of the daemon waits for its answer (0.3 s)."""
        before = await self._slowed()

        async def arrived() -> bool:
            return await self._slowed() > before

        try:
            await wait_for(arrived, 10, "a slowed upstream request", step_s=0.02)
        except AssertionError:
            counts = await self.control.ok("GET", "/requests?holder=crash")
            print(f"no slowed request in 10 s: {counts['total']} requests {counts['by_status']}")
            return "idle"  # the drain still proves whether the daemon kept polling
        await CLOCK.sleep(self.rng.uniform(0.0, 0.2))
        return "polling"

    async def _mid_delivery(self) -> str:
        """Return while the receiver holds a delivery (or say it was a poll when none came)."""
        self.receiver.arrived.clear()
        try:
            await asyncio.wait_for(self.receiver.arrived.wait(), 5.0)
        except TimeoutError:
            return "idle"  # nothing to deliver this time
        await CLOCK.sleep(self.rng.uniform(0.0, 0.03))
        return "delivery"

    async def _slowed(self) -> int:
        faults = (await self.control.ok("GET", "/faults"))["faults"]
        return int(next(f["fired"] for f in faults if f["id"] == self.slow_fault))


async def _drive(driver: Driver, killer: Killer, kills: int) -> None:
    """Run the driver and the killer together until both have done their share."""

    async def moves() -> None:
        while not (driver.settled(SCALE.min_moves) and killer.kills >= kills):
            await driver.step()
            await CLOCK.sleep(driver.rng.uniform(0.05, 0.2))

    async def crashes() -> None:
        while not (driver.settled(SCALE.min_moves) and killer.kills >= kills):
            await killer.cycle()

    async with asyncio.TaskGroup() as group:
        group.create_task(moves())
        group.create_task(crashes())


async def _drain(daemon: Daemon, receiver: Receiver, expected: int, seed: int) -> list[str]:
    """A last run until every expected event arrived and a quiet spell passed; its troubles."""
    await daemon.start()
    await wait_for(
        lambda: len({a.id for a in receiver.arrivals}) >= expected,
        DRAIN_TIMEOUT_S, f"{expected} distinct events (seed {seed})",
    )  # fmt: skip
    await CLOCK.sleep(3 * INTERVAL_S)  # anything invented would come now
    troubles = daemon.troubles()
    await daemon.stop()
    return troubles


class TestCrashLoop:
    @pytest.mark.timeout(SCALE.timeout_s + 60)
    async def test_every_transition_once_under_sigkill(
        self, sandbox: SandboxProcess, control: Control, receiver: Receiver, tmp_path: Path
    ) -> None:
        """Under SIGKILLs at random moments every upstream transition arrives under one id."""
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        await control.ok("PATCH", "/settings", {"payment_vocabulary": "docs"})
        keys = await control.holder("crash")
        slow = await control.fault({"kind": "slow", "delay_s": 0.3, "fraction": 0.3,
                                    "seed": seed, "holder": "crash"})  # fmt: skip
        receiver.hold_s = lambda: rng.choice((0.0, rng.uniform(0.02, 0.15)))
        config = write_config(
            tmp_path, base_url=sandbox.base_url, holders=[keys], receiver=receiver,
            events=["order.*", "client.*"], first_sync="emit",
        )  # fmt: skip
        daemon = Daemon(config)
        driver = Driver(control, "crash", SCALE.orders, SCALE.clients, SPACING_S, rng,
                        daemon.uptime)  # fmt: skip
        killer = Killer(daemon, receiver, control, slow, rng)
        await driver.prepare()
        try:
            await _drive(driver, killer, SCALE.kills)
            expected = sum(len(h.expected()) for h in driver.histories)
            troubles = await _drain(daemon, receiver, expected, seed)
        finally:
            if daemon.running:
                await daemon.kill()

        problems = await driver.disagreements()
        problems += check_deliveries(driver.histories, receiver.arrivals)
        problems += stale_arrivals(receiver.arrivals)  # a retry never follows a newer event
        summary = (
            f"seed {seed}: {killer.kills} kills {dict(killer.modes)}, {daemon.starts} starts, "
            f"{driver.calls} control calls ({driver.refused} refused with 409), "
            f"{expected} transitions, {len(receiver.arrivals)} arrivals"
        )
        print(summary)
        assert not receiver.rejected, receiver.rejected
        assert not problems, summary + "\n" + "\n".join(problems[:30])
        assert not troubles, troubles[:5]
        assert killer.kills >= SCALE.kills
        moved = Counter(h.kind for h in driver.histories if len(h.states) > 1)
        assert moved == {"order": SCALE.orders, "client": SCALE.clients}, moved
