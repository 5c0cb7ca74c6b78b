"""The sandbox's ``GET /nfts/{tokenId}`` through the signed client: a key's details in the backend
snapshot's shape, any owned token readable, the parameter as ``parseInt`` reads it, and the
control API that sets a key's metadata."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from drgreen_poller.api import ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.errors import UpstreamNotFound
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.dapp.validation import js_parse_int
from drgreen_poller.sandbox.world.model import Strain
from drgreen_poller.store_client import StoreClient

JWT_ONLY = b'{"message":"Unauthorized","statusCode":401}'
KUSH = [{"planetDetailId": 3, "planetDetail": {"name": "Planet Kush", "planetNo": 3}}]
HAZE = [{"planetDetailId": 7, "planetDetail": {"name": "Planet Haze", "planetNo": 7}}]


@pytest.fixture
def strains(box: LocalSandbox) -> list[Strain]:
    """Two strains of the default planet (no. 3) and one of another."""
    make = box.state.catalogue.create
    return [
        make("Kush", fields={"planets": KUSH}),
        make("Haze", fields={"planets": HAZE}),
        make("OG", fields={"planets": KUSH}),
    ]


async def detail(box: LocalSandbox, holder: HolderInfo, token: str) -> tuple[int, Any]:
    """Status and JSON body of the holder's signed ``GET /nfts/{token}``."""
    answer = await box.caller(holder).get(f"/nfts/{token}", tokenId=token)
    return answer.status, answer.json()


class TestNftDetail:
    async def test_own_key_in_the_backend_shape(
        self, box: LocalSandbox, holder: HolderInfo, strains: list[Strain], clock: FakeClock
    ) -> None:
        """The holder's key: its row, owner, metadata with its planet's strains only, one owner
        period counting the key's clients and orders, then the contract's fields."""
        box.state.orders.create(holder)  # and its client
        clock.advance(90)
        status, body = await detail(box, holder, "1000")
        assert (status, body["message"]) == (200, "Success")
        data, nft = body["data"], holder.nft
        assert nft is not None
        assert list(data) == [
            "id", "tokenId", "price", "metadataId", "mintedAt", "isListedForSale", "ownerId",
            "updatedAt", "owner", "nftMetadata", "ownershipHistory", "address", "contractName",
            "blockchainType", "chainName", "chainId", "tokenStandard", "royaltyFee",
        ]  # fmt: skip
        assert (data["id"], data["tokenId"], data["ownerId"]) == (nft.id, 1000, nft.owner_id)
        assert (data["price"], data["isListedForSale"]) == (None, False)
        assert data["mintedAt"] == "2026-11-23T10:00:00.000Z"
        assert data["owner"] == {
            "walletAddress": nft.owner_id, "profileUrl": None, "id": holder.user_id,
        }  # fmt: skip
        assert data["nftMetadata"]["internal"]["nftType"] == "Standard"
        assert data["nftMetadata"]["external"]["attributes"] == [
            {"trait_type": "KEY TYPE", "value": "Standard"},
            {"trait_type": "PLANET NAME", "value": "Planet Kush"},
            {"trait_type": "CLIENT COUNT", "value": 0},
            {"trait_type": "TX COUNT", "value": 0},
            {"trait_type": "TX VOLUME", "value": "0 $"},
            {"name": "Kush"},
            {"name": "OG"},
        ]
        assert data["ownershipHistory"] == [
            {"walletAddress": nft.owner_id, "endTime": "2026-11-23T10:01:30.000Z",
             "totalClients": 1, "totalOrders": 1},
        ]  # fmt: skip
        assert (data["blockchainType"], data["royaltyFee"]) == ("Ethereum", 9)

    async def test_another_holders_key_is_readable(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """The route does not check the caller's NFT: any owned token answers, with its owner."""
        other = box.state.create_holder("h2")
        assert other.nft is not None
        status, body = await detail(box, holder, str(other.nft.token_id))
        assert status == 200
        assert (body["data"]["ownerId"], body["data"]["owner"]["id"]) == (
            other.nft.owner_id,
            other.user_id,
        )

    @pytest.mark.parametrize("token", ["999", "12abc", "-1000", "0"])
    async def test_a_token_nobody_owns_is_404(
        self, box: LocalSandbox, holder: HolderInfo, token: str
    ) -> None:
        """A token no holder owns (``12abc`` reads as 12) is 404 ``key not found``."""
        status, body = await detail(box, holder, token)
        assert (status, body["message"], body["errorCode"]) == (404, "key not found", 404)

    async def test_a_holder_without_a_key_owns_no_token(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """The token a key-less holder would have had is nobody's."""
        box.state.create_holder("bare", nft=False)
        status, _ = await detail(box, holder, "1001")
        assert status == 404

    @pytest.mark.parametrize("token", ["abc", "Infinity", "9" * 400, "-0x"])
    async def test_not_a_number_is_a_validation_error(
        self, box: LocalSandbox, holder: HolderInfo, token: str
    ) -> None:
        """A ``tokenId`` ``parseInt`` reads as NaN or Infinity fails ``@IsNumber`` (400)."""
        status, body = await detail(box, holder, token)
        assert (status, body["message"]) == (
            400,
            "tokenId must be a number conforming to the specified constraints",
        )

    async def test_a_token_beyond_int4_fails_in_the_database(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A number Postgres' 4-byte integer cannot hold is a 500, as Prisma's range error."""
        status, body = await detail(box, holder, "2147483648")
        assert (status, body["errorCode"]) == (500, 500)
        assert "INT4" in body["message"]

    async def test_hex_and_leading_spaces_read_as_parse_int_reads_them(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """``0x3E8`` and `` 1000`` (encoded) are token 1000."""
        for token in ("0x3E8", "%201000"):
            answer = await box.caller(holder).get(
                f"/nfts/{token}", tokenId=token.replace("%20", " ")
            )
            assert answer.json()["data"]["tokenId"] == 1000

    async def test_the_path_parameter_is_signed_as_a_string(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """The guard rebuilds ``{"tokenId":"1000"}``: a client signing the number gets 401."""
        caller = box.caller(holder)
        wrong = await caller.call("GET", "/nfts/1000", signed_payload='{"tokenId":1000}')
        assert wrong.status == 401

    async def test_the_store_client_reads_it(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The product's signed client reads a key, and reads an unknown one as not found."""
        settings = ApiSettings(box.base_url, timeout_s=5, requests_per_second=100, burst=10)
        async with aiohttp.ClientSession() as session:
            client = StoreClient(session, settings, holder.credentials, box.state.clock)
            data = await client.request("GET", "/nfts/{tokenId}", path_params={"tokenId": "1000"})
            assert isinstance(data, dict)
            assert data["tokenId"] == 1000
            with pytest.raises(UpstreamNotFound):
                await client.request("GET", "/nfts/{tokenId}", path_params={"tokenId": "7"})

    async def test_a_backdated_order_moves_the_mint_back(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """A key is never minted after the first order scoped to it."""
        box.state.orders.create(holder, created_at=clock.now() - timedelta(days=30))
        status, body = await detail(box, holder, "1000")
        assert status == 200
        assert body["data"]["mintedAt"] == "2026-10-24T10:00:00.000Z"
        assert body["data"]["ownershipHistory"][0]["totalOrders"] == 1

    @pytest.mark.parametrize("path", ["/nfts/list", "/nfts/celebrities-list", "/nfts/1000/orders",
                                      "/nfts/1000/commissions/managers/x/summary"])  # fmt: skip
    async def test_the_admin_panels_nft_routes_are_jwt_only(
        self, box: LocalSandbox, holder: HolderInfo, path: str
    ) -> None:
        """The other ``/nfts`` routes refuse an API key with the JWT guard's 401."""
        answer = await box.caller(holder).get(path)
        assert (answer.status, answer.body) == (401, JWT_ONLY)


class TestNftMetadata:
    async def test_control_sets_what_the_route_shows(
        self, box: LocalSandbox, holder: HolderInfo, strains: list[Strain], clock: FakeClock
    ) -> None:
        """``PATCH /_sandbox/holders/{name}/nft`` sets the metadata and sale fields the route
        shows; a Gold key covers every planet and lists every strain, removed ones too."""
        box.state.catalogue.remove(strains[1].id)
        clock.advance(5)
        changes = {
            "nftType": "Gold", "nftName": "Key of Kush", "imageUrl": "https://img.example/k.png",
            "description": "A gold key", "clientCount": 12, "txCount": 3, "txVolume": 1500,
            "price": 2.5, "isListedForSale": True,
        }  # fmt: skip
        patched = await box.control("PATCH", "/holders/h1/nft", changes)
        assert patched.status == 200
        assert {k: patched.json()[k] for k in changes} == changes
        _, body = await detail(box, holder, "1000")
        data = body["data"]
        assert (data["price"], data["isListedForSale"]) == (2.5, True)
        assert data["updatedAt"] == "2026-11-23T10:00:05.000Z"
        internal = data["nftMetadata"]["internal"]
        assert (internal["nftName"], internal["txVolume"]) == ("Key of Kush", 1500)
        assert data["nftMetadata"]["external"]["attributes"] == [
            {"trait_type": "KEY TYPE", "value": "Gold"},
            {"trait_type": "PLANET NAME", "value": "All"},
            {"trait_type": "CLIENT COUNT", "value": 12},
            {"trait_type": "TX COUNT", "value": 3},
            {"trait_type": "TX VOLUME", "value": "1500 $"},
            {"name": "Kush"},
            {"name": "Haze"},
            {"name": "OG"},
        ]

    async def test_a_standard_key_moves_to_another_planet(
        self, box: LocalSandbox, holder: HolderInfo, strains: list[Strain]
    ) -> None:
        """``planetNo`` and ``planetName`` choose the planet whose strains a Standard key shows."""
        await box.control("PATCH", "/holders/h1/nft", {"planetNo": 7, "planetName": "Planet Haze"})
        shown = (await box.control("GET", "/holders/h1/nft")).json()
        assert (shown["planetNo"], shown["planetName"], shown["tokenId"]) == (
            7,
            "Planet Haze",
            1000,
        )
        _, body = await detail(box, holder, "1000")
        attributes = body["data"]["nftMetadata"]["external"]["attributes"]
        assert attributes[1] == {"trait_type": "PLANET NAME", "value": "Planet Haze"}
        assert attributes[5:] == [{"name": "Haze"}]

    @pytest.mark.parametrize(
        ("path", "body", "status", "error"),
        [
            ("/holders/h1/nft", {"nftType": "Silver"}, 400, "nftType must be one of: Standard, "),
            ("/holders/h1/nft", {"colour": "red"}, 400, "'colour' cannot be set; settable fields"),
            ("/holders/h1/nft", {"txCount": -1}, 400, "txCount must be at least 0"),
            ("/holders/h1/nft", {"price": -2}, 400, "price must not be negative"),
            ("/holders/nobody/nft", {}, 404, "unknown holder 'nobody'"),
            ("/holders/bare/nft", {}, 400, "holder 'bare' has no NFT"),
        ],
    )
    async def test_bad_changes_are_refused(
        self, box: LocalSandbox, holder: HolderInfo, path: str, body: Any, status: int, error: str
    ) -> None:
        """Unknown fields, wrong values, unknown holders and key-less holders are refused."""
        box.state.create_holder("bare", nft=False)
        answer = await box.control("PATCH", path, body)
        assert answer.status == status
        assert error in answer.json()["error"]

    async def test_a_refused_change_changes_nothing(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Every field is checked before any is set."""
        answer = await box.control("PATCH", "/holders/h1/nft", {"nftName": "New", "txCount": "3"})
        assert answer.status == 400
        assert (await box.control("GET", "/holders/h1/nft")).json()[
            "nftName"
        ] == "Digital Key #1000"


class TestParseInt:
    @pytest.mark.parametrize(
        ("text", "value"),
        [("1000", 1000), (" 12abc", 12), ("-5", -5), ("+7", 7), ("0x1A", 26), ("1e3", 1),
         ("1.9", 1), ("\u00a042", 42), ("", math.nan), ("abc", math.nan), ("Infinity", math.nan),
         ("0x", math.nan), ("9" * 400, math.inf)],
    )  # fmt: skip
    def test_reads_as_javascript_does(self, text: str, value: float) -> None:
        """``parseInt`` with no radix: the leading integer, hex after ``0x``, NaN without one."""
        parsed = js_parse_int(text)
        assert parsed == value or (math.isnan(value) and math.isnan(parsed))
