"""The sandbox world's storage, identities and holders, and the sandbox-only machinery around it.

Owns the in-memory tables and their indexes, deterministic ids, the clock, holders and their
keys, the ETH rate, settings, faults and request counts. The lifecycle rules of strains, clients
and orders live in the modules that extend ``World``; nothing here knows about HTTP.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import SigningError
from drgreen_poller.sandbox.counters import ANONYMOUS, RequestLog, RequestRecord
from drgreen_poller.sandbox.endpoints import ENDPOINTS
from drgreen_poller.sandbox.faults import Fault, FaultBook
from drgreen_poller.sandbox.inputs import as_number
from drgreen_poller.sandbox.model import (
    Client,
    Commission,
    HolderInfo,
    InvalidInput,
    Location,
    Nft,
    Order,
    StateConflict,
    Strain,
    UnknownEntity,
    country_name,
    iso,
    to_ms,
)
from drgreen_poller.sandbox.settings import SandboxSettings
from drgreen_poller.signing import (
    ApiCredentials,
    generate_credentials,
    load_public_key,
)

DEFAULT_ETH_PER_USD = 0.00032
FIRST_TOKEN_ID = 1000

HolderRef = str | HolderInfo


class World:
    """Tables of the world plus the machinery every rule needs (ids, time, holders)."""

    def __init__(self, clock: Clock | None = None, *, seed: int = 0) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.settings = SandboxSettings()
        self.faults = FaultBook()
        self.requests = RequestLog()
        self._rng = random.Random(seed)
        self._clear_tables()

    def _clear_tables(self) -> None:
        self.holders: dict[str, HolderInfo] = {}
        self._holders_by_key: dict[str, HolderInfo] = {}
        self.locations: dict[str, Location] = {}
        self.strains: dict[str, Strain] = {}
        self.clients: dict[str, Client] = {}
        self.orders: dict[str, Order] = {}
        self.commissions: dict[str, Commission] = {}
        self._holder_clients: dict[str, list[Client]] = {}
        self._holder_orders: dict[str, list[Order]] = {}
        self._holder_commissions: dict[str, list[Commission]] = {}
        self._order_commissions: dict[str, Commission] = {}
        self._clients_by_cart: dict[str, Client] = {}
        self._client_emails: dict[str, str] = {}
        self._client_phones: dict[str, str] = {}
        self.eth_per_usd = DEFAULT_ETH_PER_USD
        self._seq = 0

    def reset(self) -> None:
        """Empty the world: holders, catalogue, clients, orders, commissions, faults, counts.

        Settings are kept: they choose which variant of the API is simulated, not what exists.
        """
        self._clear_tables()
        self.faults.clear()
        self.requests.clear()

    # --- identities and time -------------------------------------------------------------------

    def new_id(self) -> str:
        """A UUID v4 string drawn from the seeded generator (so runs are reproducible)."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def random_hex(self, digits: int) -> str:
        """``digits`` lowercase hex characters from the seeded generator."""
        return f"{self._rng.getrandbits(digits * 4):0{digits}x}"

    def now(self) -> datetime:
        """The clock's time, cut to milliseconds like every stored timestamp."""
        return to_ms(self.clock.now())

    def next_seq(self) -> int:
        """A number that orders entities by creation (the tie-break of equal timestamps)."""
        self._seq += 1
        return self._seq

    # --- holders -------------------------------------------------------------------------------

    def create_holder(
        self, name: str, *, nft: bool = True, credentials: ApiCredentials | None = None
    ) -> HolderInfo:
        """Issue a key pair to a new holder; with ``nft`` the holder owns a primary NFT.

        Raises:
            StateConflict: a holder with that name exists.
            InvalidInput: the name is empty or ``credentials`` hold an unusable API key.
        """
        if not name:
            raise InvalidInput("a holder needs a non-empty name")
        if name in self.holders or name == ANONYMOUS:
            raise StateConflict(f"holder {name!r} already exists")
        creds = credentials if credentials is not None else generate_credentials()
        try:
            public_key = load_public_key(creds.api_key)
        except SigningError as exc:
            raise InvalidInput(str(exc)) from exc
        token = Nft(self.new_id(), FIRST_TOKEN_ID + len(self.holders), "0x" + self.random_hex(40))
        holder = HolderInfo(name, creds, self.new_id(), token if nft else None)
        holder.public_key = public_key
        self.holders[name] = holder
        self._holders_by_key[creds.api_key] = holder
        self._holder_clients[name] = []
        self._holder_orders[name] = []
        self._holder_commissions[name] = []
        return holder

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

    def holder_for_key(self, api_key: str | None) -> HolderInfo | None:
        """The holder who was issued ``api_key`` (revoked or not), if any."""
        return None if api_key is None else self._holders_by_key.get(api_key)

    def revoke_holder_key(self, ref: HolderRef) -> HolderInfo:
        """Soft-delete the holder's key: every later call with it gets 401."""
        holder = self.holder(ref)
        holder.revoked = True
        return holder

    def restore_holder_key(self, ref: HolderRef) -> HolderInfo:
        """Undo ``revoke_holder_key``: the same key pair is accepted again."""
        holder = self.holder(ref)
        holder.revoked = False
        return holder

    # --- per-holder views ----------------------------------------------------------------------

    def holder_clients(self, ref: HolderRef) -> list[Client]:
        """The holder's clients in creation order."""
        return self._holder_clients[self.holder(ref).name]

    def holder_orders(self, ref: HolderRef) -> list[Order]:
        """The holder's orders in creation order."""
        return self._holder_orders[self.holder(ref).name]

    def holder_commissions(self, ref: HolderRef) -> list[Commission]:
        """The holder's commissions in creation order."""
        return self._holder_commissions[self.holder(ref).name]

    def location(self, country_code: str) -> Location:
        """The location for a country code, created on first use."""
        if country_code not in self.locations:
            name = country_name(country_code)
            self.locations[country_code] = Location(self.new_id(), name, country_code)
        return self.locations[country_code]

    # --- sandbox machinery ---------------------------------------------------------------------

    def update_settings(self, changes: Mapping[str, Any]) -> SandboxSettings:
        """Change variant switches (see ``SandboxSettings``)."""
        self.settings.update(changes)
        return self.settings

    def set_eth_rate(self, eth_per_usd: float) -> None:
        """Set the cached ETH price, in ETH per USD, used for ``amountInEth``."""
        rate = as_number(eth_per_usd, "ethPerUsd")
        if rate <= 0:
            raise InvalidInput("ethPerUsd must be greater than 0")
        self.eth_per_usd = rate

    def add_fault(self, spec: Mapping[str, Any]) -> Fault:
        """Activate a fault (see ``faults.parse_fault``); it applies to ``/api/v1`` requests."""
        return self.faults.add(spec, ENDPOINTS)

    def remove_fault(self, fault_id: int) -> None:
        """Deactivate one fault (``UnknownEntity`` when no active fault has that id)."""
        self.faults.remove(fault_id)

    def clear_faults(self) -> None:
        """Deactivate every fault."""
        self.faults.clear()

    def record_request(
        self, *, arrival_s: float, arrived_at: datetime, holder: str, endpoint: str, status: int
    ) -> None:
        """Count a request to the Dr Green API.

        Args:
            arrival_s: the clock's monotonic time when the request arrived.
            arrived_at: the clock's wall time when it arrived.
            holder: the holder whose key it carried, or ``anonymous``.
            endpoint: the route template (``GET /dapp/orders/{orderId}``) or ``unmatched``.
            status: the HTTP status it got.
        """
        entry = RequestRecord(arrival_s, iso(to_ms(arrived_at)), holder, endpoint, status)
        self.requests.record(entry)

    def request_counts(self, holder: str | None = None) -> dict[str, Any]:
        """Request counts since the last reset (see ``RequestLog.snapshot``)."""
        return self.requests.snapshot(holder)

    def reset_request_counts(self) -> None:
        """Start counting from zero."""
        self.requests.clear()
