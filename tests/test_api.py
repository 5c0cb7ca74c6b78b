"""Tests of the API client's request path against a scripted loopback server and Node's verifier."""

from __future__ import annotations

import asyncio
import json
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller import USER_AGENT
from drgreen_poller.api import SIGNATURES_KEPT, RequestSigner
from drgreen_poller.canonical import canonical_query
from drgreen_poller.errors import (
    UpstreamClientBug,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from drgreen_poller.request_signing import (
    generate_credentials,
    load_public_key,
    verify_api_signature,
)
from drgreen_poller.store_client import StoreClient
from tests.conftest import ClientFactory, require_node
from tests.fakes import Scripted, ScriptedApi
from tests.ports import free_port

NODE_VERIFY = Path(__file__).with_name("node_verify.js")
ORDER_ID = "0c9e3c8e-2f43-4b1e-9a5e-3d3f7f8a1b2c"
CLIENT_ID = "2cbab026-9dc6-46fd-8580-77e3dfd2f086"


def _page(key: str, ids: list[str], page: int, page_count: int) -> Scripted:
    return Scripted.data(
        {
            key: [{"id": i} for i in ids],
            "pageMetaDto": {
                "page": str(page),
                "take": "2",
                "itemCount": 5,
                "pageCount": page_count,
                "hasPreviousPage": page > 1,
                "hasNextPage": page < page_count,
            },
        }
    )


class TestWhatIsSent:
    async def test_query_sent_exactly_as_signed(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """The query string on the wire is the signed one, byte for byte, and it verifies."""
        api, base = scripted
        query = [("search", "Zoë d'Arc ~*!()+@: 😀"), ("take", "10")]
        await make_client(base).request("GET", "/dapp/clients", query=query)
        received = api.received[0]
        assert received.raw_query == canonical_query(query)
        assert received.path == "/api/v1/dapp/clients"
        assert received.verifies()

    async def test_headers(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """Both auth headers, JSON content type and our user agent; never Authorization."""
        api, base = scripted
        await make_client(base).request("GET", "/dapp/orders/summary")
        headers = api.received[0].headers
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == USER_AGENT
        assert headers["x-auth-apikey"].startswith("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K")
        assert "authorization" not in headers

    async def test_get_without_query_signs_path_params(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A detail GET signs its path parameters as JSON (the classic 401 trap)."""
        api, base = scripted
        api.then(Scripted.data({"orderDetails": {"id": ORDER_ID}}))
        await make_client(base).order(ORDER_ID)
        assert api.received[0].raw_query == ""
        assert api.received[0].verifies({"orderId": ORDER_ID})
        assert not api.received[0].verifies({})

    async def test_body_bytes_are_the_signed_bytes(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A POST body is the canonical JSON: compact, raw UTF-8, whole floats as integers."""
        api, base = scripted
        await make_client(base).add_to_cart("cart-1", [("strain-1", 10.0), ("strain-2", 2.5)])
        body = api.received[0].body
        assert body == (
            b'{"items":[{"strainId":"strain-1","quantity":10},'
            b'{"strainId":"strain-2","quantity":2.5}],"clientCartId":"cart-1"}'
        )
        assert api.received[0].verifies()

    async def test_trailing_slash_base_url(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A base URL with a trailing slash does not produce a double slash."""
        api, base = scripted
        api.then(Scripted.data({"summary": {"PENDING": 1, "totalCount": 1}}))
        assert (await make_client(base + "/").orders_summary()).pending == 1
        assert api.received[0].path == "/api/v1/dapp/orders/summary"


class TestNodeVerifies:
    async def test_node_accepts_what_the_client_sends(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """Node's crypto.createVerify("SHA256") (the guard's call) accepts every request sent."""
        node_path = require_node("Node's verification of our signatures")
        api, base = scripted
        client = make_client(base)
        calls: list[tuple[str, str, dict[str, str], list[tuple[str, str]], Any]] = [
            ("GET", "/dapp/orders", {}, [("orderBy", "desc"), ("take", "50"), ("page", "1")], None),
            ("GET", "/dapp/clients", {}, [("search", "jane doe+x@ex.com ~*'!():")], None),
            ("GET", "/dapp/clients", {}, [("q", "Zoë ‘quotes’ 😀 €"), ("empty", "")], None),
            ("GET", "/dapp/orders", {}, [("clientIds", f'["{CLIENT_ID}","b"]')], None),
            ("GET", "/dapp/orders/{orderId}", {"orderId": ORDER_ID}, [], None),
            (
                "GET",
                "/dapp/clients/{clientId}/orders/{orderId}",
                {"clientId": CLIENT_ID, "orderId": ORDER_ID},
                [],
                None,
            ),
            ("GET", "/dapp/commissions/summary", {}, [], None),
            ("GET", "/dapp/strains/{strainId}", {"strainId": "s"}, [("countryCode", "GBR")], None),
            ("POST", "/dapp/orders", {}, [], {"clientId": CLIENT_ID}),
            ("POST", "/dapp/carts", {}, [], {"items": [{"strainId": "s", "quantity": 10.0}]}),
            ("POST", "/dapp/clients", {}, [], {"firstName": "Zoë", "n": 1e21, "f": 1e-7}),
            ("DELETE", "/dapp/carts/{cartId}", {"cartId": "c"}, [], None),
        ]
        for method, route, params, query, body in calls:
            await client.request(method, route, path_params=params, query=query, body=body)
        batch = [
            {
                "method": r.method,
                "query": r.raw_query,
                "params": params,
                "body": r.body.decode(),
                "api_key": r.headers["x-auth-apikey"],
                "signature": r.headers["x-auth-signature"],
            }
            for r, (_, _, params, _, _) in zip(api.received, calls, strict=True)
        ]
        node = await asyncio.create_subprocess_exec(
            node_path, str(NODE_VERIFY), stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        stdout, stderr = await node.communicate(json.dumps(batch).encode())
        assert node.returncode == 0, stderr.decode()
        results = json.loads(stdout)
        assert [r["verified"] for r in results] == [True] * len(calls)
        assert results[0]["canonical"] == "orderBy=desc&take=50&page=1"
        assert results[4]["canonical"] == f'{{"orderId":"{ORDER_ID}"}}'
        assert results[10]["canonical"] == '{"firstName":"Zoë","n":1e+21,"f":1e-7}'


class TestWhatIsRead:
    async def test_medical_record_never_leaves_the_client(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A client detail's medical record is dropped before the caller sees the response."""
        api, base = scripted
        detail = {"id": CLIENT_ID, "isKYCVerified": True, "medicalRecord": {"dob": "1990-01-01"}}
        api.then(Scripted.data(detail), Scripted.data(detail))
        client = make_client(base)
        parsed = await client.client(CLIENT_ID)
        raw = await client.request(
            "GET", "/dapp/clients/{clientId}", path_params={"clientId": CLIENT_ID}
        )
        assert "medicalRecord" not in parsed.raw
        assert "medicalRecord" not in raw

    async def test_nested_or_escaped_medical_record_is_dropped(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A medical record nested in a list item, or its key spelt with a JSON escape, is gone."""
        api, base = scripted
        body = (
            b'{"success":true,"data":{"clients":[{"id":"c1","isKYCVerified":false,'
            b'"medical\\u0052ecord":{"dob":"1990-01-01"},"cart":{"medicalRecord":{"x":1}}}],'
            b'"pageMetaDto":{"page":"1","take":"100","hasNextPage":false}}}'
        )
        api.then(Scripted(body=body))
        pages = [page async for page in make_client(base).client_pages()]
        raw = pages[0].items[0].raw
        assert "medicalRecord" not in json.dumps(raw)
        assert "1990" not in json.dumps(raw)
        assert raw["cart"] == {}

    async def test_order_details_null_is_not_found(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """``orderDetails: null`` (Dr Green's answer for an unknown order) is not-found."""
        api, base = scripted
        api.then(Scripted.data({"orderDetails": None}))
        with pytest.raises(UpstreamNotFound):
            await make_client(base).order(ORDER_ID)

    @pytest.mark.parametrize(
        "data",
        [
            {"clientId": "new-id", "kycLink": "https://kyc"},
            {"data": {"clientId": "new-id"}},
            {"client": {"id": "new-id"}, "message": "KYC link has been sent"},
            {"id": "new-id"},
        ],
    )
    async def test_create_client_reads_every_shape(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory, data: Any
    ) -> None:
        """The new client's id is found in each response shape production has used."""
        api, base = scripted
        api.then(Scripted.data(data, status=201))
        assert await make_client(base).create_client({"firstName": "J"}) == "new-id"

    async def test_create_client_without_id(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A create response with no id anywhere is malformed, not a silent success."""
        api, base = scripted
        api.then(Scripted.data({"message": "ok"}, status=201))
        with pytest.raises(UpstreamMalformed):
            await make_client(base).create_client({"firstName": "J"})

    async def test_list_without_its_key(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A list response missing its list is malformed."""
        api, base = scripted
        api.then(Scripted.data({"items": []}))
        with pytest.raises(UpstreamMalformed, match="orders"):
            await make_client(base).page("/dapp/orders", "orders", dict)


class TestPagination:
    async def test_pages_until_no_next_page(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """Pages are fetched in order, newest first, until hasNextPage is false."""
        api, base = scripted
        api.then(_page("orders", ["a", "b"], 1, 3), _page("orders", ["c", "d"], 2, 3))
        api.then(_page("orders", ["e"], 3, 3))
        ids = [o.id async for p in make_client(base).order_pages(take=2) for o in p.items]
        assert ids == ["a", "b", "c", "d", "e"]
        assert [r.raw_query for r in api.received] == [
            "orderBy=desc&take=2&page=1",
            "orderBy=desc&take=2&page=2",
            "orderBy=desc&take=2&page=3",
        ]

    async def test_caller_can_stop_early(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """Breaking out of the page loop makes no further request."""
        api, base = scripted
        api.then(_page("clients", ["a", "b"], 1, 3))
        async for _ in make_client(base).client_pages(take=2, is_verified=False):
            break
        assert len(api.received) == 1
        assert api.received[0].raw_query == "isVerified=false&orderBy=desc&take=2&page=1"

    async def test_filters_are_signed_and_sent(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """List filters travel as single parameters (JSON arrays for lists) and verify."""
        api, base = scripted
        api.then(_page("orders", [], 1, 0))
        pages = make_client(base).order_pages(admin_approval="VERIFIED", client_ids=["x", "y"])
        assert (await anext(pages)).items == []
        assert api.received[0].raw_query == (
            "adminApproval=VERIFIED&clientIds=%5B%22x%22%2C%22y%22%5D&orderBy=desc&take=100&page=1"
        )
        assert api.received[0].verifies()


class TestTransportFailures:
    async def test_timeout(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """No answer within the timeout is an UpstreamTimeout saying from where and how long."""
        api, base = scripted
        api.then(Scripted(hang=True))
        with pytest.raises(UpstreamTimeout) as caught:
            await make_client(base, timeout_s=0.1).orders_summary()
        host_port = base.split("//")[1].split("/")[0]
        assert str(caught.value) == (
            f"no answer from {host_port} within 0.1 s (GET /dapp/orders/summary)"
        )

    async def test_connection_refused(self, make_client: ClientFactory) -> None:
        """Nobody listening is UpstreamUnavailable, in words rather than an aiohttp class."""
        port = free_port()
        with pytest.raises(UpstreamUnavailable) as caught:
            await make_client(f"http://127.0.0.1:{port}/api/v1").orders_summary()
        assert str(caught.value) == (
            f"cannot connect to 127.0.0.1:{port}: connection refused (GET /dapp/orders/summary)"
        )

    async def test_redirect_not_followed(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """A redirect is not followed: it means the base URL is wrong, and says so."""
        api, base = scripted
        api.then(Scripted(302, b"", {"Location": "https://elsewhere.example/"}))
        with pytest.raises(UpstreamClientBug, match=r"elsewhere\.example"):
            await make_client(base).orders_summary()
        assert len(api.received) == 1

    async def test_health_is_unsigned(
        self, scripted: tuple[ScriptedApi, str], make_client: ClientFactory
    ) -> None:
        """The public health check carries no auth headers."""
        api, base = scripted
        api.then(Scripted.data("Success"))
        client: StoreClient = make_client(base)
        assert await client.health()
        assert "x-auth-signature" not in api.received[0].headers


class TestRequestSigner:
    def test_a_payload_is_signed_once(self) -> None:
        """The same payload gets the same (valid) signature again: ECDSA's would differ."""
        credentials = generate_credentials()
        signer = RequestSigner(credentials)
        public = load_public_key(credentials.api_key)
        first = signer.headers("take=100&page=1")["x-auth-signature"]
        assert signer.headers("take=100&page=1")["x-auth-signature"] == first
        assert verify_api_signature(public, "take=100&page=1", first)

    def test_kept_signatures_are_bounded_and_stay_right(self) -> None:
        """Past ``SIGNATURES_KEPT`` payloads the signer starts over; every signature verifies."""
        credentials = generate_credentials()
        signer = RequestSigner(credentials)
        public = load_public_key(credentials.api_key)
        payloads = [f"take=1&page={n}" for n in range(SIGNATURES_KEPT + 2)]
        signatures = [signer.headers(p)["x-auth-signature"] for p in payloads]
        assert all(
            verify_api_signature(public, p, s) for p, s in zip(payloads, signatures, strict=True)
        )
        assert signer.headers(payloads[0])["x-auth-signature"] != signatures[0]  # signed anew
        assert signer.headers(payloads[-1])["x-auth-signature"] == signatures[-1]
