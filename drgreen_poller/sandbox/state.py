"""``SandboxState``: one sandbox, the world plus the traffic its simulated Dr Green API sees.

Owns joining the two: the pure world (``world.World``, with its parts ``state.orders``,
``state.clients``, ...) and the service's ``traffic`` (faults and request counts, which belong
to ``dapp/``), so that ``reset`` empties both. It must not hold rules of either.
"""

from __future__ import annotations

from drgreen_poller.clock import Clock
from drgreen_poller.sandbox.dapp.traffic import Traffic
from drgreen_poller.sandbox.world import World


class SandboxState(World):
    """A sandbox: the ``World`` (its parts and holders) and ``traffic`` (faults, request counts).

    Build it with ``SandboxState(clock=None, *, seed=0)`` (the system clock by default). The
    world's parts: ``catalogue``, ``clients``, ``carts``, ``orders``, ``lifecycle``,
    ``commissions`` (see ``World``); the traffic: ``traffic.add_fault``, ``traffic.faults``,
    ``traffic.request_counts`` (see ``Traffic``).
    """

    def __init__(self, clock: Clock | None = None, *, seed: int = 0) -> None:
        super().__init__(clock, seed=seed)
        self.traffic = Traffic()

    def reset(self) -> None:
        """Empty the world, deactivate every fault and count from zero (settings are kept)."""
        super().reset()
        self.traffic.clear()
