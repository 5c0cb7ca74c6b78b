"""The shared tables of the sandbox world: every entity by id, the per-holder indexes, ids, time.

Owns the dicts every part of the world reads and writes, the seeded id generator, the clock and
the creation sequence, and holder lookup by name. It must not hold rules: the parts
(``catalogue``, ``clients``, ``carts``, ``commissions``, ``orders``, ``lifecycle``) do, and
they share one ``Tables`` instead of inheriting from each other.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime

from drgreen_poller.clock import Clock
from drgreen_poller.sandbox.world.model import (
    Client,
    Commission,
    HolderInfo,
    Location,
    Manager,
    Order,
    Strain,
    UnknownEntity,
    country_name,
    to_ms,
)

DEFAULT_ETH_PER_USD = 0.00032

HolderRef = str | HolderInfo


class Tables:
    """Every entity of the world by id, the indexes the rules keep, and the id and time sources."""

    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.clear()

    def clear(self) -> None:
        """Forget every entity (the id generator keeps its position)."""
        self.holders: dict[str, HolderInfo] = {}
        self.holders_by_key: dict[str, HolderInfo] = {}
        self.locations: dict[str, Location] = {}
        self.strains: dict[str, Strain] = {}
        self.clients: dict[str, Client] = {}
        self.orders: dict[str, Order] = {}
        self.commissions: dict[str, Commission] = {}
        self.holder_clients: dict[str, list[Client]] = {}
        self.holder_orders: dict[str, list[Order]] = {}
        self.holder_commissions: dict[str, list[Commission]] = {}
        self.managers: dict[str, Manager] = {}
        self.holder_managers: dict[str, list[Manager]] = {}
        self.order_commissions: dict[str, Commission] = {}
        self.clients_by_cart: dict[str, Client] = {}
        self.client_emails: dict[str, str] = {}
        self.client_phones: dict[str, str] = {}
        self.eth_per_usd = DEFAULT_ETH_PER_USD
        self.seq = 0

    def new_id(self) -> str:
        """A UUID v4 string drawn from the seeded generator (so runs are reproducible)."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_hex(self, digits: int) -> str:
        """``digits`` lowercase hex characters from the seeded generator."""
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def now(self) -> datetime:
        """The clock's time, cut to milliseconds like every stored timestamp."""
        return to_ms(self.clock.now())

    def next_seq(self) -> int:
        """A number that orders entities by creation (the tie-break of equal timestamps)."""
        self.seq += 1
        return self.seq

    def holder(self, ref: HolderRef) -> HolderInfo:
        """The holder named ``ref`` (or ``ref`` itself).

        Raises:
            UnknownEntity: no such holder.
        """
        name = ref.name if isinstance(ref, HolderInfo) else ref
        try:
            return self.holders[name]
        except KeyError:
            raise UnknownEntity("holder", name) from None

    def location(self, country_code: str) -> Location:
        """The location for a country code, created on first use."""
        if country_code not in self.locations:
            name = country_name(country_code)
            self.locations[country_code] = Location(self.new_id(), name, country_code)
        return self.locations[country_code]
