"""NFT rules of the sandbox world: minting a holder's key, finding a token, changing its metadata,
and what ``GET /nfts/{tokenId}`` derives from the rest of the world.

Owns which strains a key shows (a Standard key its planet's, Gold and Platinum keys every one;
removed strains too, as the backend's unfiltered query does), the owner's one period with the
clients and orders scoped to the key, and the fields the control API may set. The world has no
transfers: a holder has owned its key since the mint. It must not know about HTTP nor wire
shapes (``dapp/nfts.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.sandbox.world.inputs import (
    as_bool,
    as_choice,
    as_int,
    as_non_negative,
    as_opt_str,
    as_str,
)
from drgreen_poller.sandbox.world.model import HolderInfo, InvalidInput, UnknownEntity
from drgreen_poller.sandbox.world.tables import HolderRef, Tables
from drgreen_poller.sandbox.world.tokens import NFT_TYPES, Nft, NftMetadata

Converter = Callable[[Any, str], Any]
# Wire name → (attribute of the NFT or of its metadata, converter that raises InvalidInput).
NFT_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "price": ("price", lambda v, n: None if v is None else as_non_negative(v, n)),
    "isListedForSale": ("listed_for_sale", as_bool),
}
METADATA_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "nftType": ("nft_type", lambda v, n: as_choice(v, n, NFT_TYPES)),
    "nftName": ("nft_name", as_opt_str),
    "imageUrl": ("image_url", as_opt_str),
    "description": ("description", as_opt_str),
    "planetNo": ("planet_no", lambda v, n: as_int(v, n, minimum=1)),
    "planetName": ("planet_name", as_str),
    "clientCount": ("client_count", lambda v, n: as_int(v, n, minimum=0)),
    "txCount": ("tx_count", lambda v, n: as_int(v, n, minimum=0)),
    "txVolume": ("tx_volume", lambda v, n: as_int(v, n, minimum=0)),
}


@dataclass(frozen=True, slots=True)
class Ownership:
    """One owner's period of a key, with what was scoped to the key while they held it."""

    wallet: str
    start: datetime
    clients: int
    orders: int


class Nfts:
    """The NFT rules, over the world's shared tables."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def mint(self, token_id: int) -> Nft:
        """A new key with token ``token_id``, owned by a new wallet, with default metadata."""
        when = self._t.now()
        nft_id, wallet = self._t.new_id(), "0x" + self._t.random_hex(40)
        metadata = NftMetadata(token_id, nft_name=f"Digital Key #{token_id}")
        return Nft(nft_id, token_id, wallet, minted_at=when, updated_at=when, metadata=metadata)

    def by_token(self, token_id: int) -> tuple[HolderInfo, Nft]:
        """The owner of the key with that token id, and the key.

        Raises:
            UnknownEntity: no holder owns such a key.
        """
        for holder in self._t.holders.values():
            if holder.nft is not None and holder.nft.token_id == token_id:
                return holder, holder.nft
        raise UnknownEntity("NFT", str(token_id))

    def of(self, holder: HolderRef) -> Nft:
        """The holder's key.

        Raises:
            UnknownEntity: no such holder.
            InvalidInput: the holder was issued a key without an NFT.
        """
        owner = self._t.holder(holder)
        if owner.nft is None:
            raise InvalidInput(f"holder {owner.name!r} has no NFT")
        return owner.nft

    def update(self, holder: HolderRef, changes: Mapping[str, Any]) -> Nft:
        """Set the key's sale fields and metadata from wire names; all are checked first.

        Raises:
            InvalidInput: an unknown field or a wrong value (nothing is changed).
        """
        nft = self.of(holder)
        converted: list[tuple[object, str, Any]] = []
        for name, value in changes.items():
            target: object = nft if name in NFT_FIELDS else nft.metadata
            fields = NFT_FIELDS if name in NFT_FIELDS else METADATA_FIELDS
            if name not in fields:
                known = ", ".join(sorted([*NFT_FIELDS, *METADATA_FIELDS]))
                raise InvalidInput(f"{name!r} cannot be set; settable fields: {known}")
            attribute, convert = fields[name]
            converted.append((target, attribute, convert(value, name)))
        for target, attribute, value in converted:
            setattr(target, attribute, value)
        nft.updated_at = self._t.now()
        return nft

    def strain_names(self, nft: Nft) -> list[str]:
        """The strains the key shows, in catalogue order: its planet's, or every one."""
        strains = sorted(self._t.strains.values(), key=lambda s: s.seq)
        if nft.metadata.nft_type != "Standard":
            return [s.name for s in strains]
        number = nft.metadata.planet_no
        return [s.name for s in strains if any(_names(p, number) for p in s.planets)]

    def current_owner(self, holder: HolderInfo) -> Ownership:
        """The key's owner since the mint, the holder, with everything scoped to the key."""
        nft = self.of(holder)
        clients = self._t.holder_clients[holder.name]
        orders = self._t.holder_orders[holder.name]
        return Ownership(nft.owner_id, self.minted_at(holder), len(clients), len(orders))

    def minted_at(self, holder: HolderInfo) -> datetime:
        """When the key was minted: never after the first client or order scoped to it (one
        created with an earlier ``createdAt`` moves the mint back with it)."""
        nft = self.of(holder)
        clients, orders = self._t.holder_clients[holder.name], self._t.holder_orders[holder.name]
        created = [*(c.created_at for c in clients), *(o.created_at for o in orders)]
        return min([nft.minted_at, *created])


def _names(planet: Mapping[str, Any], number: int) -> bool:
    """Whether a strain's planet entry (``{planetDetailId, planetDetail: {planetNo, name}}``)
    is planet ``number``."""
    detail = planet.get("planetDetail")
    listed = isinstance(detail, dict) and detail.get("planetNo") == number
    return listed or planet.get("planetDetailId") == number
