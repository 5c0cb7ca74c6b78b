"""An upstream that keeps moving: orders and clients driven through their lifecycles at random.

Owns the random moves made through the sandbox's control API (approve, reject, pay, unpay,
fail-payment, refund, process, ship, deliver, cancel; verify-kyc, approve, reject, activate,
deactivate), the 409s Dr Green's rules answer to forbidden moves (counted, never recorded), and
the history of every state each resource went through. A resource moves at most once per
``spacing_s`` (of wall time, and of the daemon's uptime, so restarts do not eat into it) and
never after the poller stops watching it, so every recorded state is one a
poller can observe. It must not look at the daemon.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.expected import History, client_terminal, fields_of, order_terminal
from tests.reliability.harness import CLOCK
from tests.reliability.sandbox_process import Control

# Weights of each action: approvals and forward moves dominate so lifecycles end.
ORDER_ACTIONS = {"approve": 4, "reject": 0.5, "pay": 2, "unpay": 1, "fail-payment": 1,
                 "refund": 0.5, "process": 2, "ship": 2, "deliver": 1.2, "cancel": 0.4}  # fmt: skip
CLIENT_ACTIONS = {"verify-kyc": 2, "approve": 1.2, "reject": 0.4, "activate": 1, "deactivate": 1}


@dataclass
class Tracked:
    """A resource the driver made, its history, and when it last moved."""

    history: History
    moved_at: float
    moved_up_s: float = 0.0  # the daemon's uptime then
    moves: int = 0

    @property
    def terminal(self) -> bool:
        state = self.history.states[-1]
        return order_terminal(state) if self.history.kind == "order" else client_terminal(state)


@dataclass
class Driver:
    """Creates ``orders`` orders and ``clients`` clients for ``holder`` and moves them.

    Args:
        control: the sandbox's control API.
        holder: the holder whose world moves.
        orders: how many orders to create.
        clients: how many clients to create.
        spacing_s: the least time between two moves of one resource (several poll intervals),
            both in wall time and in the daemon's uptime.
        uptime: the daemon's uptime in seconds, over all its runs.
        rng: the randomness (seeded by the test, printed on failure).
    """

    control: Control
    holder: str
    orders: int
    clients: int
    spacing_s: float
    rng: random.Random
    uptime: Callable[[], float]
    tracked: list[Tracked] = field(default_factory=list)
    refused: int = 0
    calls: int = 0
    buyer: str = ""

    async def prepare(self) -> None:
        """Create the customer every order is placed for (KYC-complete, so it never moves).

        Without one the sandbox would make a customer per order on its own.
        """
        body = {"kyc": True, "adminApproval": "VERIFIED"}
        record = await self.control.ok("POST", f"/holders/{self.holder}/clients", body)
        self.buyer = record["id"]
        self.tracked.append(
            Tracked(History("client", self.buyer, [fields_of("client", record)]), 0)
        )

    @property
    def histories(self) -> list[History]:
        return [t.history for t in self.tracked]

    def settled(self, min_moves: int) -> bool:
        """Every resource exists and either ended its lifecycle or moved ``min_moves`` times."""
        made = len(self.tracked) == 1 + self.orders + self.clients
        return made and all(t.terminal or t.moves >= min_moves for t in self.tracked)

    async def disagreements(self) -> list[str]:
        """Where the sandbox's final state differs from the driver's log (empty when it agrees).

        The expected events come from the log of successful control calls; this check makes
        sure that log is the whole upstream story.
        """
        last = {(t.history.kind, t.history.id): t.history.states[-1] for t in self.tracked}
        upstream: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in ("order", "client"):
            listing = await self.control.ok("GET", f"/holders/{self.holder}/{kind}s")
            upstream |= {(kind, r["id"]): fields_of(kind, r) for r in listing[f"{kind}s"]}
        return [
            f"{kind} {rid}: the driver logged {last.get((kind, rid))}, the sandbox has "
            f"{upstream.get((kind, rid))}"
            for kind, rid in sorted(last.keys() | upstream.keys())
            if last.get((kind, rid)) != upstream.get((kind, rid))
        ]

    async def step(self) -> None:
        """One driver step: create a resource while some are missing (half the time), or move."""
        missing = 1 + self.orders + self.clients - len(self.tracked)
        if missing and (self.rng.random() < 0.5 or not self._movable()):
            await self._create()
        elif movable := self._movable():
            await self._move(self.rng.choice(movable))

    def _movable(self) -> list[Tracked]:
        now, up = CLOCK.monotonic(), self.uptime()
        return [
            t
            for t in self.tracked
            if not t.terminal
            and now - t.moved_at >= self.spacing_s
            and up - t.moved_up_s >= self.spacing_s
        ]

    async def _create(self) -> None:
        made_orders = sum(1 for t in self.tracked if t.history.kind == "order")
        made_clients = len(self.tracked) - 1 - made_orders
        want_order = made_clients >= self.clients or (
            made_orders < self.orders
            and self.rng.random() < self.orders / (self.orders + self.clients)
        )
        kind = "order" if want_order else "client"
        body = {"clientId": self.buyer} if kind == "order" else {}
        record = await self.control.ok("POST", f"/holders/{self.holder}/{kind}s", body)
        self.calls += 1
        history = History(kind, record["id"], [fields_of(kind, record)])
        self.tracked.append(Tracked(history, CLOCK.monotonic(), self.uptime()))

    async def _move(self, target: Tracked) -> None:
        kind = target.history.kind
        actions = ORDER_ACTIONS if kind == "order" else CLIENT_ACTIONS
        action = self.rng.choices(list(actions), weights=list(actions.values()))[0]
        status, record = await self.control.call("POST", f"/{kind}s/{target.history.id}/{action}")
        self.calls += 1
        if status == 409:
            self.refused += 1  # a move Dr Green forbids (ship before approval, pay twice...)
            return
        assert status == 200, f"{kind} {action} answered {status}: {record}"
        state = fields_of(kind, record)
        if state != target.history.states[-1]:  # approving an approved order changes nothing
            target.history.states.append(state)
            target.moved_at, target.moved_up_s = CLOCK.monotonic(), self.uptime()
            target.moves += 1
