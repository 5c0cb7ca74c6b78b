"""``World``: the composition root of the sandbox world, its parts over one set of shared tables.

Owns building the parts (``catalogue``, ``clients``, ``profiles``, ``carts``, ``managers``,
``commissions``, ``orders``, ``lifecycle``, ``reports``, ``nfts``) over one ``Tables``, and the few
whole-world operations: holders and their keys, the clock, the variant settings and ``reset``.
It must not hold entity rules (the parts do) nor know about HTTP, faults or request counts
(``dapp/`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import SigningError
from drgreen_poller.request_signing import ApiCredentials, generate_credentials, load_public_key
from drgreen_poller.sandbox.world.carts import Carts
from drgreen_poller.sandbox.world.catalogue import Catalogue
from drgreen_poller.sandbox.world.clients import Clients
from drgreen_poller.sandbox.world.commissions import Commissions
from drgreen_poller.sandbox.world.lifecycle import OrderLifecycle
from drgreen_poller.sandbox.world.managers import Managers
from drgreen_poller.sandbox.world.model import HolderInfo, InvalidInput, StateConflict
from drgreen_poller.sandbox.world.nfts import Nfts
from drgreen_poller.sandbox.world.orders import Orders
from drgreen_poller.sandbox.world.profiles import Profiles
from drgreen_poller.sandbox.world.reports import Reports
from drgreen_poller.sandbox.world.settings import SandboxSettings
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

FIRST_TOKEN_ID = 1000
# The holder name request counts use for requests without a known key; no holder may take it.
ANONYMOUS = "anonymous"


class World:
    """The sandbox world: build it with ``World(clock=None, *, seed=0)`` (system clock by default).

    Parts: ``catalogue`` (strains), ``clients`` (KYC and approval), ``profiles`` (the store's
    client edits), ``carts``, ``orders`` (checkout, direct creation, raw sets), ``lifecycle``
    (approval, payment, fulfilment of orders), ``commissions`` (accrual, payment, ETH rate),
    ``managers`` (the NFT's commission managers), ``reports`` (charts, breakdowns, sales and
    revenue read from the rest), ``nfts`` (the holders' keys: metadata, owners). The root keeps
    holders (``create_holder``, ``holder``, ``holders``, ``holder_for_key``,
    ``revoke_holder_key``, ``restore_holder_key``), the clock (``clock``, ``now``), ``settings``
    and ``reset``.

    Every change bumps the entity's ``updatedAt``. Methods raise ``UnknownEntity`` (404),
    ``InvalidInput`` (400) or ``StateConflict`` (409), all ``SandboxError``s;
    ``orders.checkout`` and the carts raise ``ServiceRefusal`` with Dr Green's own answer.
    """

    def __init__(self, clock: Clock | None = None, *, seed: int = 0) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.settings = SandboxSettings()
        self.tables = Tables(self.clock, seed)
        self.catalogue = Catalogue(self.tables)
        self.clients = Clients(self.tables)
        self.profiles = Profiles(self.tables, self.clients)
        self.carts = Carts(self.tables, self.catalogue, self.clients)
        self.managers = Managers(self.tables)
        self.commissions = Commissions(self.tables)
        self.orders = Orders(self.tables, self.catalogue, self.clients, self.commissions)
        self.lifecycle = OrderLifecycle(self.tables, self.orders, self.commissions, self.settings)
        self.reports = Reports(self.tables, self.commissions)
        self.nfts = Nfts(self.tables)

    def reset(self) -> None:
        """Empty the world: holders, catalogue, clients, orders, commissions, the ETH rate.

        Settings are kept: they choose which variant of the API is simulated, not what exists.
        """
        self.tables.clear()

    def now(self) -> datetime:
        """The clock's time, cut to milliseconds like every stored timestamp."""
        return self.tables.now()

    def update_settings(self, changes: Mapping[str, Any]) -> SandboxSettings:
        """Change variant switches (see ``SandboxSettings``)."""
        self.settings.update(changes)
        return self.settings

    # --- holders -------------------------------------------------------------------------------

    @property
    def holders(self) -> dict[str, HolderInfo]:
        """Every holder by name."""
        return self.tables.holders

    def create_holder(
        self, name: str, *, nft: bool = True, credentials: ApiCredentials | None = None
    ) -> HolderInfo:
        """Issue a key pair to a new holder; with ``nft`` the holder owns a primary NFT.

        Raises:
            StateConflict: a holder with that name exists.
            InvalidInput: the name is empty or ``credentials`` hold an unusable API key.
        """
        t = self.tables
        if not name:
            raise InvalidInput("a holder needs a non-empty name")
        if name in t.holders or name == ANONYMOUS:
            raise StateConflict(f"holder {name!r} already exists")
        creds = credentials if credentials is not None else generate_credentials()
        try:
            public_key = load_public_key(creds.api_key)
        except SigningError as exc:
            raise InvalidInput(str(exc)) from exc
        token = self.nfts.mint(FIRST_TOKEN_ID + len(t.holders))
        holder = HolderInfo(name, creds, t.new_id(), token if nft else None)
        holder.public_key = public_key
        t.holders[name] = holder
        t.holders_by_key[creds.api_key] = holder
        t.holder_clients[name] = []
        t.holder_orders[name] = []
        t.holder_commissions[name] = []
        t.holder_managers[name] = []
        return holder

    def holder(self, ref: HolderRef) -> HolderInfo:
        """The holder named ``ref`` (or ``ref`` itself).

        Raises:
            UnknownEntity: no such holder.
        """
        return self.tables.holder(ref)

    def holder_for_key(self, api_key: str | None) -> HolderInfo | None:
        """The holder who was issued ``api_key`` (revoked or not), if any."""
        return None if api_key is None else self.tables.holders_by_key.get(api_key)

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
