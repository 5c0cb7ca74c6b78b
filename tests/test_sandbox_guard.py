"""The sandbox's front: the DualAuthGuard's signature check, body parsing and Express routing."""

from __future__ import annotations

import pytest

from drgreen_poller.canonical import canonical_json, canonical_query
from drgreen_poller.request_signing import generate_credentials, load_private_key, sign_api_request
from drgreen_poller.sandbox import HolderInfo, LocalSandbox

NOT_AUTHORIZED = b'{"message":"User is not authorized","error":"Unauthorized","statusCode":401}'
JWT_UNAUTHORIZED = b'{"message":"Unauthorized","statusCode":401}'


class TestSignatures:
    async def test_signed_query_is_admitted(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A GET signed over its canonical query string gets 200."""
        answer = await box.caller(holder).get("/dapp/orders", ("orderBy", "desc"), ("take", "5"))
        assert answer.status == 200
        assert answer.json()["success"] is True

    async def test_path_params_are_signed_without_query(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A GET without a query is signed over its route parameters as JSON."""
        order = box.state.orders.create(holder)
        answer = await box.caller(holder).get(f"/dapp/orders/{order.id}", orderId=order.id)
        assert answer.status == 200
        assert answer.json()["data"]["orderDetails"]["id"] == order.id

    async def test_route_without_params_signs_empty_object(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A GET of a route without parameters and without a query is signed over ``{}``."""
        answer = await box.caller(holder).call("GET", "/dapp/orders/summary", signed_payload="{}")
        assert answer.status == 200

    async def test_query_wins_over_path_params(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A GET with a query signs the query even when the route has parameters."""
        strain = box.state.catalogue.create("Kush", locations={"GBR": 5})
        answer = await box.caller(holder).get(f"/dapp/strains/{strain.id}", ("countryCode", "GBR"))
        assert answer.status == 200

    async def test_unknown_key_is_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A key pair the sandbox never issued gets the guard's 401 body."""
        stranger = generate_credentials()
        headers = {"x-auth-apikey": stranger.api_key}
        answer = await box.caller(holder).call("GET", "/dapp/orders/summary", headers=headers)
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_wrong_signature_is_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A signature over another payload gets 401."""
        answer = await box.caller(holder).call(
            "GET", "/dapp/orders/summary", signed_payload='{"orderId":"x"}'
        )
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_tampered_query_is_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A query changed after signing gets 401."""
        signed = canonical_query([("take", "5")])
        answer = await box.caller(holder).call(
            "GET", "/dapp/orders", query=[("take", "50")], signed_payload=signed
        )
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_body_signed_but_different_is_refused(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A body that differs from the signed one gets 401."""
        client = box.state.clients.create(holder)
        other = canonical_json({"clientId": "00000000-0000-4000-8000-000000000000"})
        answer = await box.caller(holder).call(
            "POST", "/dapp/orders", body={"clientId": client.id}, signed_payload=other
        )
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_garbage_signature_is_refused(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A signature that is not Base64 DER counts as not verified."""
        headers = {"x-auth-signature": "not base64!"}
        answer = await box.caller(holder).call("GET", "/dapp/orders/summary", headers=headers)
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_missing_headers_are_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A request without the auth headers gets 401."""
        answer = await box.raw("GET", "/dapp/orders/summary")
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_authorization_header_takes_the_jwt_path(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """An ``Authorization`` header gets the 43-byte JWT 401 even with a valid signature."""
        headers = {"Authorization": "Bearer abc"}
        answer = await box.caller(holder).call("GET", "/dapp/orders/summary", headers=headers)
        assert (answer.status, answer.body) == (401, JWT_UNAUTHORIZED)
        assert len(answer.body) == 43

    async def test_revoked_key_is_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A soft-deleted key gets 401 from then on."""
        box.state.revoke_holder_key(holder)
        answer = await box.caller(holder).get("/dapp/orders/summary")
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_holder_without_nft_is_refused(self, box: LocalSandbox) -> None:
        """A valid key whose user has no primary NFT gets 401 ``Unauthorized Access``."""
        holder = box.state.create_holder("no-nft", nft=False)
        answer = await box.caller(holder).get("/dapp/orders/summary")
        assert answer.status == 401
        assert answer.json() == {
            "message": "Unauthorized Access",
            "error": "Unauthorized",
            "statusCode": 401,
        }

    @pytest.mark.parametrize(
        "value",
        [
            "jane doe+x@ex.com ~*'!():",
            "Zoë Ångström €",
            "🌿 emoji 😀",
            '[]{}"<>#%&=?/\\',
        ],
    )
    async def test_awkward_query_values_verify(
        self, box: LocalSandbox, holder: HolderInfo, value: str
    ) -> None:
        """Query values with reserved punctuation, spaces, non-ASCII and emoji verify."""
        answer = await box.caller(holder).get(
            "/dapp/orders", ("search", value), ("searchBy", "clientName")
        )
        assert answer.status == 200

    async def test_non_ascii_body_verifies(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A JSON body with raw UTF-8 text verifies (the server re-serialises it unescaped)."""
        body = {"clientId": "00000000-0000-4000-8000-000000000000", "note": "Zoë 🌿"}
        answer = await box.caller(holder).post("/dapp/orders", body)
        assert answer.status == 400  # admitted, then the service refuses the unknown client

    async def test_repeated_key_is_joined_with_commas(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A repeated query key is rebuilt as one comma-joined value, as Express and qs do."""
        caller = box.caller(holder)
        key = load_private_key(holder.credentials.secret_key)
        headers = caller.headers_for("x=1%2C2")
        answer = await box.raw("GET", "/dapp/orders/summary?x=1&x=2", headers=headers)
        assert answer.status == 200
        bad = {**headers, "x-auth-signature": sign_api_request(key, "x=1&x=2")}
        refused = await box.raw("GET", "/dapp/orders/summary?x=1&x=2", headers=bad)
        assert refused.status == 401

    async def test_unknown_query_params_are_ignored_but_signed(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """``limit`` and other unknown parameters do not change the answer but are signed."""
        answer = await box.caller(holder).get("/dapp/orders", ("limit", "1"), ("foo", "bar"))
        assert answer.status == 200
        assert answer.json()["data"]["pageMetaDto"]["take"] == 10

    async def test_bare_question_mark_signs_params(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A ``?`` with nothing after it counts as no query: the params JSON is signed."""
        order = box.state.orders.create(holder)
        headers = box.caller(holder).headers_for(canonical_json({"orderId": order.id}))
        answer = await box.raw("GET", f"/dapp/orders/{order.id}?", headers=headers)
        assert answer.status == 200


class TestBodies:
    async def test_non_json_body_counts_as_empty_object(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A body without ``Content-Type: application/json`` is ``{}`` for the guard."""
        headers = {**box.caller(holder).headers_for("{}"), "Content-Type": "text/plain"}
        answer = await box.raw("POST", "/dapp/orders", headers=headers, data=b'{"clientId":"x"}')
        assert answer.status == 400
        assert answer.json()["message"] == "clientId must be a UUID"

    async def test_invalid_json_is_a_body_parser_400(self, box: LocalSandbox) -> None:
        """Invalid JSON gets body-parser's 400 before routing and the guard."""
        headers = {"Content-Type": "application/json"}
        answer = await box.raw("POST", "/dapp/orders", headers=headers, data=b'{"a":}')
        assert answer.status == 400
        assert answer.json() == {
            "message": "Unexpected token } in JSON at position 5",
            "error": "Bad Request",
            "statusCode": 400,
        }

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b'"text"', 'Unexpected token " in JSON at position 0'),
            (b'{"a":', "Unexpected end of JSON input"),
            (b'{"a":NaN}', "Unexpected token N in JSON at position 5"),
        ],
    )
    async def test_strict_body_parser(self, box: LocalSandbox, raw: bytes, message: str) -> None:
        """Only objects and arrays are accepted; NaN is not JSON."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        answer = await box.raw("POST", "/dapp/orders", headers=headers, data=raw)
        assert (answer.status, answer.json()["message"]) == (400, message)

    async def test_oversized_json_is_413(self, box: LocalSandbox) -> None:
        """A JSON body above body-parser's 100 KiB limit is refused with 413."""
        headers = {"Content-Type": "application/json"}
        body = b'{"a":"' + b"x" * 102400 + b'"}'
        answer = await box.raw("POST", "/dapp/orders", headers=headers, data=body)
        assert answer.status == 413
        assert answer.json() == {
            "message": "request entity too large",
            "error": "Payload Too Large",
            "statusCode": 413,
        }


class TestRouting:
    async def test_unknown_route_is_nest_404(self, box: LocalSandbox) -> None:
        """An unknown route gets NestJS's 404 body, before the guard runs."""
        answer = await box.raw("GET", "/dapp/nothing?x=1")
        assert answer.status == 404
        assert answer.json() == {
            "message": "Cannot GET /api/v1/dapp/nothing?x=1",
            "error": "Not Found",
            "statusCode": 404,
        }

    async def test_wrong_method_is_404(self, box: LocalSandbox) -> None:
        """Express answers an unrouted method with 404, not 405."""
        answer = await box.raw("PUT", "/dapp/orders")
        assert answer.status == 404
        assert answer.json()["message"] == "Cannot PUT /api/v1/dapp/orders"

    async def test_guard_runs_before_validation(self, box: LocalSandbox) -> None:
        """An unsigned request with an invalid query gets 401, not 400."""
        answer = await box.raw("GET", "/dapp/orders?take=0")
        assert answer.status == 401

    async def test_trailing_slash_and_case_are_ignored(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Express routes case-insensitively and accepts a trailing slash."""
        caller = box.caller(holder)
        assert (await caller.get("/dapp/orders/summary/")).status == 200
        assert (await caller.get("/DAPP/Orders/Summary")).status == 200

    async def test_health_needs_no_key(self, box: LocalSandbox) -> None:
        """``GET /public/healthStatus`` answers without authentication."""
        answer = await box.raw("GET", "/public/healthStatus")
        assert (
            answer.body == b'{"success":true,"statusCode":200,"message":"Success","data":"Success"}'
        )

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/dapp/users/nfts"), ("POST", "/keys"), ("PATCH", "/keys/delete")],
    )
    async def test_jwt_only_routes_refuse_api_keys(
        self, box: LocalSandbox, holder: HolderInfo, method: str, path: str
    ) -> None:
        """JWT-only routes answer an API-key request with the 43-byte 401."""
        answer = await box.caller(holder).call(method, path, body={} if method != "GET" else None)
        assert (answer.status, answer.body) == (401, JWT_UNAUTHORIZED)

    async def test_public_strains_need_no_key(self, box: LocalSandbox) -> None:
        """``GET /strains`` is public and lists strains without the availability filter."""
        strain = box.state.catalogue.create("Hidden", locations={"GBR": 5})
        box.state.catalogue.update(strain.id, {"isAvailable": False})
        answer = await box.raw("GET", "/strains?countryCode=GBR")
        assert [s["id"] for s in answer.json()["data"]["strains"]] == [strain.id]

    async def test_responses_are_json_utf8(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Answers carry Express's ``application/json; charset=utf-8``."""
        answer = await box.caller(holder).get("/dapp/orders/summary")
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
