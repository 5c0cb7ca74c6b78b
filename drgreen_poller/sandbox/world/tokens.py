"""A holder's key as Dr Green's NFT collection records it: the token, its metadata, the contract.

Owns plain data: the ``Nft`` every ``/dapp`` call of the holder's key is scoped to, the
``NftMetadata`` Dr Green keeps for it (kind, name, image, planet, the collection's counters),
and the details of the collection's contract. It must not hold rules (``nfts.py`` does) nor
wire shapes (``dapp/nfts.py`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The backend's NftType enum. A Standard key belongs to one planet and shows its strains; Gold
# and Platinum keys cover every planet and show every strain.
NFT_TYPES = ("Standard", "Gold", "Platinum")
# The planet a new key belongs to: the one the demo catalogue's strains name.
DEFAULT_PLANET = (3, "Planet Kush")


@dataclass(slots=True)
class NftMetadata:
    """What Dr Green keeps about a key beside the token (the backend's ``NftMetadata`` row).

    The counters are stored figures the collection maintains, not counts of this world's
    clients or orders; ``planet_no`` and ``planet_name`` say which planet a Standard key
    belongs to.
    """

    metadata_id: int
    nft_type: str = "Standard"
    nft_name: str | None = None
    image_url: str | None = None
    description: str | None = None
    planet_no: int = DEFAULT_PLANET[0]
    planet_name: str = DEFAULT_PLANET[1]
    client_count: int = 0
    tx_count: int = 0
    tx_volume: int = 0


@dataclass(slots=True)
class Nft:
    """A holder's primary NFT: the scope of every ``/dapp`` call made with the holder's key."""

    id: str
    token_id: int
    owner_id: str  # the owner's wallet address, lower case
    minted_at: datetime
    updated_at: datetime
    metadata: NftMetadata
    price: float | None = None
    listed_for_sale: bool = False


@dataclass(frozen=True, slots=True)
class Contract:
    """The collection's contract as the backend's ``Contracts`` row describes it."""

    address: str
    contract_name: str
    blockchain_type: str
    chain_name: str
    chain_id: int
    standard: str  # the token standard
    royalty_fee: float


# Invented, like every id of the sandbox: Dr Green's real contract address is not needed here.
COLLECTION = Contract(
    address="0x5d1c5e1e9b3f0c4a7e8d2b6a9f0e1d2c3b4a5f6e",
    contract_name="Dr Green Digital Key",
    blockchain_type="Ethereum",
    chain_name="Ethereum Mainnet",
    chain_id=1,
    standard="ERC-721",
    royalty_fee=9,
)
