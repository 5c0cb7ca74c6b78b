"""A running daemon over sandbox holders with pools of untouched orders and clients.

Owns setting up the fault tests' world (holders, their pools, a receiver, the daemon through
its first silent sync), handing out fresh resources, and the checks every fault case ends with:
exactly the expected events arrived, once each, and the daemon is still running cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.daemon_process import Daemon, write_config
from tests.reliability.harness import CLOCK, wait_for
from tests.reliability.receiver import Receiver
from tests.reliability.sandbox_process import Control, Keys, SandboxProcess

JITTER = 0.1  # write_config's jitter
# Loopback delivery and scheduling on a busy 2-core machine: the slack on "one interval".
SLACK_S = 2.0
EVENTS = ("order.*", "client.*", "poller.*")

Seen = set[tuple[str, str, str]]  # (resource type, resource id, event type)


@dataclass(frozen=True, slots=True)
class PoolSize:
    """How many untouched orders and clients a holder starts with."""

    orders: int
    clients: int = 0


@dataclass
class Pool:
    """A holder's untouched resources, handed out one by one, and its KYC-complete buyer."""

    buyer: str
    orders: list[str]
    clients: list[str]

    def order(self) -> str:
        return self.orders.pop(0)

    def client(self) -> str:
        return self.clients.pop(0)


@dataclass
class World:
    """Holders with pools, the receiver, and the daemon that polls them every ``interval_s``."""

    control: Control
    receiver: Receiver
    daemon: Daemon
    interval_s: float
    pools: dict[str, Pool] = field(default_factory=dict)

    @property
    def recovery_s(self) -> float:
        """How soon after a fault ends the next change must arrive: one interval, plus slack."""
        return self.interval_s * (1 + JITTER) + SLACK_S

    def got(self, mark: int) -> Seen:
        """What arrived since ``mark`` (an index into the arrivals)."""
        return {
            (a.event["resource"]["type"], a.event["resource"]["id"], a.event["type"])
            for a in self.receiver.since(mark)
        }

    async def delivered(self, mark: int, want: Seen, what: str) -> float:
        """Wait for ``want``, at most one interval (plus slack): the recovery check."""
        return await wait_for(lambda: want <= self.got(mark), self.recovery_s, f"{what}: {want}")

    def assert_well(self) -> None:
        """The daemon runs, printed no traceback, and every request was signed right."""
        assert self.daemon.running, "the daemon exited:\n" + self.daemon.output()[-3000:]
        assert not self.daemon.troubles(), self.daemon.troubles()[:5]
        assert not self.receiver.rejected, self.receiver.rejected

    async def settle(self, mark: int, want: Seen) -> None:
        """After a quiet interval, exactly ``want`` arrived since ``mark``, each under one id."""
        await CLOCK.sleep(self.interval_s * (1 + JITTER) + 0.5)
        got = self.got(mark)
        assert got == want, f"missing {sorted(want - got)}; not expected {sorted(got - want)}"
        ids = {a.id for a in self.receiver.since(mark)}
        assert len(ids) == len(want), f"{len(want)} changes arrived under {len(ids)} ids"
        self.assert_well()


async def first_syncs(daemon: Daemon, holders: list[str]) -> None:
    """Wait until each holder's order and KYC tiers have run once (the silent seed)."""
    tiers = {(h, t) for h in holders for t in ("active_orders", "pending_kyc")}

    def synced() -> bool:
        assert daemon.running, "the daemon exited:\n" + daemon.output()[-3000:]
        done = {(e.get("holder"), e.get("tier")) for e in daemon.log_events()
                if e.get("event") == "poll_finished"}  # fmt: skip
        return tiers <= done

    await wait_for(synced, 30, "the first sync of every tier")


async def make_pool(control: Control, holder: str, size: PoolSize) -> Pool:
    """A KYC-complete buyer, then ``size`` untouched orders (for the buyer) and clients."""
    verified = {"kyc": True, "adminApproval": "VERIFIED"}
    buyer = (await control.ok("POST", f"/holders/{holder}/clients", verified))["id"]
    orders: list[str] = []
    if size.orders:
        body = {"count": size.orders, "clientId": buyer}
        orders = (await control.ok("POST", f"/holders/{holder}/orders", body))["ids"]
    clients: list[str] = []
    if size.clients:
        body = {"count": size.clients}
        clients = (await control.ok("POST", f"/holders/{holder}/clients", body))["ids"]
    return Pool(buyer, orders, clients)


@asynccontextmanager
async def open_world(
    control: Control,
    sandbox: SandboxProcess,
    directory: Path,
    sizes: Mapping[str, PoolSize],
    *,
    interval_s: float,
    api_timeout_s: float = 5.0,
    schedule_extra: str = "",
) -> AsyncIterator[World]:
    """New holders with their pools, a receiver and the daemon, its first syncs done."""
    receiver = Receiver()
    await receiver.start()
    keys: list[Keys] = []
    pools = {}
    for holder, size in sizes.items():
        keys.append(await control.holder(holder))
        pools[holder] = await make_pool(control, holder, size)
    config = write_config(
        directory, base_url=sandbox.base_url, holders=keys, receiver=receiver, events=EVENTS,
        interval=f"{interval_s}s", api_timeout=f"{api_timeout_s}s", schedule_extra=schedule_extra,
    )  # fmt: skip
    daemon = Daemon(config)
    await daemon.start()
    try:
        await first_syncs(daemon, list(sizes))
        yield World(control, receiver, daemon, interval_s, pools)
    finally:
        if daemon.running:
            await daemon.stop()
        await receiver.close()
