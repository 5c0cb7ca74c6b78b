"""Handler of ``GET /nfts/{tokenId}``: a key's details, metadata, owners and contract, in the
backend snapshot's wire shape (``NftService.GetTokenDetailsWithOwnersHistory``).

Owns the route's parameter DTO (``tokenId`` through ``parseInt``, then ``@IsNumber``: 400 for
NaN or Infinity; a value Postgres' 4-byte integer cannot hold fails in the database, a 500),
the answer for a token nobody owns (404 ``key not found``) and the body: the token's row, its
owner, its metadata as ``internal`` and ``external`` attributes, the ownership history and the
contract's fields spread in. The route does not check that the token is the caller's: any
admitted key may read any key. It must not hold rules: ``world/nfts.py`` does.
"""

from __future__ import annotations

import math
from typing import Any

from drgreen_poller.sandbox.dapp.records import Json
from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.dapp.routes import Call, Handler, Reply
from drgreen_poller.sandbox.dapp.validation import js_parse_int
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import HolderInfo, UnknownEntity, iso, num
from drgreen_poller.sandbox.world.nfts import Ownership
from drgreen_poller.sandbox.world.tokens import COLLECTION, Nft

NOT_FOUND = "key not found"  # MESSAGES.ERROR.NFT.NOT_FOUND: Dr Green calls its NFTs keys
NOT_A_NUMBER = "tokenId must be a number conforming to the specified constraints"
INT4 = range(-(2**31), 2**31)


def token_id(raw: str) -> int:
    """The path's ``tokenId`` as the DTO and the database take it.

    Raises:
        ApiError: 400 when ``parseInt`` gives no finite number; 500 when Postgres' ``INT4``
            cannot hold it (the message Prisma's range error gives).
    """
    value = js_parse_int(raw)
    if not math.isfinite(value):
        raise ApiError(400, NOT_A_NUMBER, validation=True)
    whole = int(value)
    if whole not in INT4:
        message = f"Unable to fit integer value '{whole}' into an INT4 (32-bit signed integer)."
        raise ApiError(500, message)
    return whole


def nft_detail(call: Call) -> Reply:
    """``GET /nfts/{tokenId}``: any owned key's details (another holder's too)."""
    wanted = token_id(call.params["tokenId"])
    try:
        holder, nft = call.state.nfts.by_token(wanted)
    except UnknownEntity:
        raise ApiError(404, NOT_FOUND) from None
    return Reply(nft_record(call.state, holder, nft))


def nft_record(state: World, holder: HolderInfo, nft: Nft) -> Json:
    """The token's row with its owner, metadata and owners, then the contract's fields."""
    record: Json = {
        "id": nft.id,
        "tokenId": nft.token_id,
        "price": None if nft.price is None else num(nft.price),
        "metadataId": nft.metadata.metadata_id,
        "mintedAt": iso(state.nfts.minted_at(holder)),
        "isListedForSale": nft.listed_for_sale,
        "ownerId": nft.owner_id,
        "updatedAt": iso(nft.updated_at),
        "owner": {"walletAddress": nft.owner_id, "profileUrl": None, "id": holder.user_id},
        "nftMetadata": {
            "internal": _internal(nft),
            "external": {"attributes": _traits(state, nft)},
        },
        "ownershipHistory": [_period(state, state.nfts.current_owner(holder))],
    }
    return record | _contract()


def _period(state: World, owner: Ownership) -> Json:
    """One owner's period; the current owner's ends now (the backend's ``new Date()``)."""
    return {
        "walletAddress": owner.wallet,
        "endTime": iso(state.now()),
        "totalClients": owner.clients,
        "totalOrders": owner.orders,
    }


def _internal(nft: Nft) -> Json:
    meta = nft.metadata
    return {
        "metadataId": meta.metadata_id,
        "nftType": meta.nft_type,
        "nftName": meta.nft_name,
        "clientCount": meta.client_count,
        "txCount": meta.tx_count,
        "txVolume": meta.tx_volume,
        "imageUrl": meta.image_url,
        "description": meta.description,
    }


def _traits(state: World, nft: Nft) -> list[Json]:
    """Key type and planet, the three counters, then the key's strains as ``{name}``."""
    meta = nft.metadata
    planet = meta.planet_name if meta.nft_type == "Standard" else "All"
    return [
        {"trait_type": "KEY TYPE", "value": meta.nft_type},
        {"trait_type": "PLANET NAME", "value": planet},
        {"trait_type": "CLIENT COUNT", "value": meta.client_count},
        {"trait_type": "TX COUNT", "value": meta.tx_count},
        {"trait_type": "TX VOLUME", "value": f"{meta.tx_volume or 0} $"},
        *({"name": name} for name in state.nfts.strain_names(nft)),
    ]


def _contract() -> dict[str, Any]:
    c = COLLECTION
    return {
        "address": c.address,
        "contractName": c.contract_name,
        "blockchainType": c.blockchain_type,
        "chainName": c.chain_name,
        "chainId": c.chain_id,
        "tokenStandard": c.standard,
        "royaltyFee": num(c.royalty_fee),
    }


HANDLERS: dict[str, Handler] = {"GET /nfts/{tokenId}": nft_detail}
