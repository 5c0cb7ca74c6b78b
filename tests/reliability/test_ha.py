"""Several instances on one PostgreSQL database (issue 11, point 5): three ``run`` processes
share three holders while their upstream keeps moving; one instance is SIGKILLed at random
moments and restarted each time, and one is once SIGSTOPped past its lease (caught sending, rows
claimed behind) and resumed. At the end every transition must have reached the receiver under
exactly one id, each resource's events in order and none after a newer one (not even a repeat),
and the sandbox's request log (each request's User-Agent names its instance) must show no two
instances polling one holder at the same time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PgDatabase
from tests.reliability.daemon_process import Daemon, write_config
from tests.reliability.driver import Driver
from tests.reliability.expected import check_deliveries, stale_arrivals
from tests.reliability.harness import CLOCK, SCALE, wait_for
from tests.reliability.receiver import Receiver
from tests.reliability.sandbox_process import Control, Keys, SandboxProcess

INSTANCES = 3
HOLDERS = ("north", "south", "east")
TTL_S = 3.0  # [store] lease_ttl of the test: a takeover within a few seconds
# Two moves of one resource are this far apart: a kill, the lease expiring (TTL), the next
# round of a live instance (TTL / 3) and two poll intervals fit in between.
SPACING_S = 8.0
KILLS = 10 if SCALE.name == "full" else 3
DRAIN_TIMEOUT_S = 90.0
START_WAIT_S = 60.0
# Another instance can have a holder back no sooner than one lease round after it changed
# hands (a release happens at a round, a takeover after the lease expired): two instances'
# requests alternating faster than this are two instances polling it at once.
HANDOVER_FLOOR_S = TTL_S / 3 / 2
# The pause: the receiver holds its answers this long while an instance is caught sending, which
# comes within PAUSE_CATCH_S (else a random instance is paused).
PAUSE_HOLD_S = 1.0
PAUSE_CATCH_S = 10.0
AGENT = re.compile(r"\(instance ([^)]+)\)")


@dataclass
class Cluster:
    """The instances, restartable, each with its own directory and log."""

    daemons: list[Daemon]
    rng: random.Random
    kills: int = 0
    stopped: bool = False
    started_at: float = field(default_factory=CLOCK.monotonic)

    def uptime(self) -> float:
        """Wall time since the start: some instance is always up to poll the holders."""
        return CLOCK.monotonic() - self.started_at

    async def kill_one(self) -> None:
        """SIGKILL a random instance at a random moment, and restart it."""
        await CLOCK.sleep(self.rng.uniform(0.5, 4.0))
        victim = self.rng.choice(self.daemons)
        await victim.kill()
        self.kills += 1
        await CLOCK.sleep(self.rng.uniform(0.0, 1.5))
        await victim.start()

    async def pause_one(self, receiver: Receiver) -> None:
        """SIGSTOP an instance past its lease (twice the TTL), then SIGCONT it: one caught
        sending, with rows claimed behind that attempt (the receiver holds its answers a
        moment, each instance has one slot), which another instance sends meanwhile, and
        then newer events of their resources: a stale send on resuming would show."""
        receiver.hold_s = lambda: PAUSE_HOLD_S
        seen = len(receiver.arrivals)
        for _ in range(int(PAUSE_CATCH_S / 0.05)):  # drivers keep moving: one comes soon
            if len(receiver.arrivals) > seen:
                break
            await CLOCK.sleep(0.05)
        await CLOCK.sleep(PAUSE_HOLD_S / 2)  # rows pile up in the claims behind held ones
        sending = receiver.arrivals[-1].via if len(receiver.arrivals) > seen else ""
        victim = self.daemons[int(sending)] if sending else self.rng.choice(self.daemons)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)
        receiver.hold_s = lambda: 0.0
        await CLOCK.sleep(2 * TTL_S)
        victim.process.send_signal(signal.SIGCONT)
        self.stopped = True


def _configs(
    tmp_path: Path, sandbox: SandboxProcess, keys: list[Keys], receiver: Receiver, db: PgDatabase
) -> list[Path]:
    store = f'\n[store]\nurl = "{db.url}"\npassword_file = "pg.password"\nlease_ttl = "{TTL_S}s"\n'
    paths = []
    for n in range(INSTANCES):
        config = write_config(
            tmp_path / f"instance{n}", base_url=sandbox.base_url, holders=keys,
            receiver=receiver, events=["order.*", "client.*"], first_sync="emit",
        )  # fmt: skip
        (config.parent / "pg.password").write_text(db.password + "\n")
        # One slot each, and the receiver told which instance sent (``pause_one``).
        text = config.read_text().replace(
            f'url = "{receiver.url}"', f'url = "{receiver.url}?via={n}"'
        )
        config.write_text(text.replace("[delivery]\n", "[delivery]\nconcurrency = 1\n") + store)
        paths.append(config)
    return paths


async def _drive(drivers: list[Driver], cluster: Cluster, receiver: Receiver) -> None:
    """Move every holder's world while instances are killed (and once paused)."""

    def settled() -> bool:
        return all(d.settled(SCALE.min_moves) for d in drivers)

    async def moves(driver: Driver) -> None:
        while not (settled() and cluster.kills >= KILLS and cluster.stopped):
            await driver.step()
            await CLOCK.sleep(driver.rng.uniform(0.05, 0.3))

    async def crashes() -> None:
        while not (settled() and cluster.kills >= KILLS and cluster.stopped):
            if cluster.kills == KILLS // 2 and not cluster.stopped:
                await cluster.pause_one(receiver)
            else:
                await cluster.kill_one()

    async with asyncio.TaskGroup() as group:
        for driver in drivers:
            group.create_task(moves(driver))
        group.create_task(crashes())


def overlaps(log: list[dict[str, Any]]) -> list[str]:
    """Where two instances polled one holder at once, from its requests in arrival order: an
    instance that had the holder got it back faster than a lease round allows."""
    blocks: list[tuple[str, float]] = []  # (instance, first request) of each run of requests
    for entry in sorted(log, key=lambda e: e["t"]):
        found = AGENT.search(entry["user_agent"])
        instance = found.group(1) if found else "?"
        if not blocks or blocks[-1][0] != instance:
            blocks.append((instance, entry["t"]))
    return [
        f"{first[0]} and {middle[0]} both polled it around t={middle[1]:.2f}"
        for first, middle, last in zip(blocks, blocks[1:], blocks[2:], strict=False)
        if first[0] == last[0] and last[1] - middle[1] < HANDOVER_FLOOR_S
    ]


def _handovers(log: list[dict[str, Any]]) -> int:
    """How often a holder changed instance in its request log."""
    agents = [e["user_agent"] for e in sorted(log, key=lambda e: e["t"])]
    return sum(1 for before, after in itertools.pairwise(agents) if before != after)


async def _until_polled(control: Control) -> None:
    """Until every holder has been polled once: the instances are up, so the drivers' spacing
    counts from there, not from processes still starting on a busy machine (seconds, seen)."""

    async def polled() -> bool:
        return all([await control.request_log(name) for name in HOLDERS])

    await wait_for(polled, START_WAIT_S, "every holder polled once")


async def _drain(cluster: Cluster, receiver: Receiver, expected: int, seed: int) -> None:
    """Every instance up until every expected event arrived and a quiet spell passed."""
    for daemon in cluster.daemons:
        if not daemon.running:
            await daemon.start()
    await wait_for(
        lambda: len({a.id for a in receiver.arrivals}) >= expected,
        DRAIN_TIMEOUT_S, f"{expected} distinct events (seed {seed})",
    )  # fmt: skip
    await CLOCK.sleep(3.0)  # anything invented would come now


class TestSharedDatabase:
    @pytest.mark.timeout(SCALE.timeout_s + 120)
    async def test_every_transition_once_across_instances(
        self,
        sandbox: SandboxProcess,
        control: Control,
        receiver: Receiver,
        pg_database: PgDatabase,
        tmp_path: Path,
    ) -> None:
        """Three instances, kills and a pause: every transition once, in order per resource,
        and never two instances polling one holder at once."""
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        await control.ok("PATCH", "/settings", {"payment_vocabulary": "docs"})
        keys = [await control.holder(name) for name in HOLDERS]
        await control.ok("DELETE", "/requests")
        configs = _configs(tmp_path, sandbox, keys, receiver, pg_database)
        cluster = Cluster([Daemon(config) for config in configs], rng)
        uptime: Callable[[], float] = cluster.uptime
        orders, clients = max(2, SCALE.orders // 3), max(1, SCALE.clients // 3)
        drivers = [
            Driver(control, k.name, orders, clients, SPACING_S, random.Random(rng.random()), uptime)
            for k in keys
        ]
        for driver in drivers:
            await driver.prepare()
        try:
            for daemon in cluster.daemons:
                await daemon.start()
            await _until_polled(control)
            await _drive(drivers, cluster, receiver)
            expected = sum(len(h.expected()) for d in drivers for h in d.histories)
            await _drain(cluster, receiver, expected, seed)
            codes = [await daemon.stop() for daemon in cluster.daemons]
        finally:
            for daemon in cluster.daemons:
                if daemon.running:
                    await daemon.kill()
        problems = [p for d in drivers for p in await d.disagreements()]
        problems += check_deliveries([h for d in drivers for h in d.histories], receiver.arrivals)
        problems += stale_arrivals(receiver.arrivals)  # nothing old sent after the pause
        handovers = 0
        for name in HOLDERS:
            log = await control.request_log(name)
            problems += [f"{name}: a request without an instance id" for e in log
                         if AGENT.search(e["user_agent"]) is None][:1]  # fmt: skip
            handovers += _handovers(log)
            problems += [f"{name}: {p}" for p in overlaps(log)]
        troubles = [t for daemon in cluster.daemons for t in daemon.troubles()]
        print(
            f"seed {seed}: {cluster.kills} kills, 1 pause, {expected} transitions, "
            f"{len(receiver.arrivals)} arrivals, {handovers} handovers of a holder"
        )
        assert not receiver.rejected, receiver.rejected
        assert not problems, f"seed {seed}\n" + "\n".join(problems[:30])
        assert not troubles, troubles[:5]
        assert codes == [0] * INSTANCES
        assert cluster.kills >= KILLS


class TestOverlapRule:
    def test_alternating_instances_are_caught(self) -> None:
        """Two instances' requests of one holder interleaved within a lease round show up;
        a handover and a later return do not."""
        agent = "drgreen-poller/1 (instance {})"

        def entry(t: float, instance: str) -> dict[str, Any]:
            return {"t": t, "user_agent": agent.format(instance)}

        handed = [entry(0.0, "a"), entry(0.5, "a"), entry(1.0, "b"), entry(5.0, "a")]
        assert overlaps(handed) == []
        both = [entry(0.0, "a"), entry(0.1, "b"), entry(0.2, "a"), entry(0.3, "b")]
        assert len(overlaps(both)) == 2
