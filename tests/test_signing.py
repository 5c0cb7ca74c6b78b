"""Tests of Dr Green request signing: canonical strings, JS-compatible JSON, keys, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from drgreen_poller.errors import SigningError
from drgreen_poller.signing import (
    ApiCredentials,
    api_key_for,
    canonical_json,
    canonical_payload,
    canonical_query,
    express_query,
    form_encode,
    generate_credentials,
    generate_webhook_secret,
    js_number,
    load_private_key,
    load_public_key,
    rebuild_canonical,
    sign_api_request,
    sign_hex,
    sign_webhook,
    verify_api_signature,
    verify_webhook,
    webhook_key,
)


@pytest.fixture(scope="module")
def creds() -> ApiCredentials:
    return generate_credentials()


class TestFormEncode:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("plain-Text_0.9*", "plain-Text_0.9*"),
            ("~", "%7E"),
            ("*", "*"),
            ("'", "%27"),
            ("!", "%21"),
            ("()", "%28%29"),
            ("+", "%2B"),
            ("@", "%40"),
            (":", "%3A"),
            ("jane doe", "jane+doe"),
            ("ë€", "%C3%AB%E2%82%AC"),
            ("😀", "%F0%9F%98%80"),
            ('["id1","id2"]', "%5B%22id1%22%2C%22id2%22%5D"),
            ("", ""),
            ("a/b?c=d&e#f", "a%2Fb%3Fc%3Dd%26e%23f"),
        ],
    )
    def test_matches_whatwg(self, text: str, expected: str) -> None:
        """Each character is encoded as WHATWG URLSearchParams does, not as urllib does."""
        assert form_encode(text) == expected


class TestCanonicalQuery:
    def test_keeps_insertion_order(self) -> None:
        """Pairs are serialised in the order given, never sorted."""
        assert canonical_query([("take", "50"), ("orderBy", "desc")]) == "take=50&orderBy=desc"

    def test_empty_value_is_key_equals(self) -> None:
        """An empty value serialises as ``key=``."""
        assert canonical_query([("search", ""), ("page", "1")]) == "search=&page=1"

    def test_json_array_filter(self) -> None:
        """A list filter travels as one JSON-array parameter, fully escaped."""
        pairs = [("clientIds", json.dumps(["a", "b"], separators=(",", ":")))]
        assert canonical_query(pairs) == "clientIds=%5B%22a%22%2C%22b%22%5D"

    @pytest.mark.parametrize(
        "pairs",
        [
            [("a", "1"), ("a", "2")],
            [("a[]", "1")],
            [("filter[x]", "1")],
            [("5", "x")],
            [("", "x")],
            [("a", "b\udc00")],
            [("k\ud800", "v")],
        ],
    )
    def test_refuses_what_the_server_would_rewrite(self, pairs: list[tuple[str, str]]) -> None:
        """Repeated, bracketed, numeric or empty keys and lone surrogates are refused."""
        with pytest.raises(SigningError):
            canonical_query(pairs)


class TestJsNumber:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1.0, "1"),
            (10, "10"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (-0.0, "0"),
            (1e16, "10000000000000000"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.23e-18, "1.23e-18"),
            (2**60, "1152921504606847000"),
            (2**53, "9007199254740992"),
        ],
    )
    def test_formats_like_javascript(self, value: float, expected: str) -> None:
        """Numbers print as JavaScript's JSON.stringify prints them after JSON.parse."""
        assert js_number(value) == expected

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 10**400])
    def test_refuses_non_finite(self, value: float) -> None:
        """NaN, Infinity and integers beyond any double have no JSON form and are refused."""
        with pytest.raises(SigningError):
            js_number(value)


class TestCanonicalJson:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({}, "{}"),
            ({"clientId": "x"}, '{"clientId":"x"}'),
            ({"quantity": 10.0, "price": 2.5}, '{"quantity":10,"price":2.5}'),
            ({"name": "Zoë €5 😀"}, '{"name":"Zoë €5 😀"}'),
            ({"b": 1, "2": 2, "10": 3, "a": 4}, '{"2":2,"10":3,"b":1,"a":4}'),
            ({"x": [True, False, None]}, '{"x":[true,false,null]}'),
            ({"ctl": 'a\nb\x01"\\'}, '{"ctl":"a\\nb\\u0001\\"\\\\"}'),
            ({"lone": "\ud800"}, '{"lone":"\\ud800"}'),
        ],
    )
    def test_matches_json_stringify(self, value: Any, expected: str) -> None:
        """Compact, raw non-ASCII, whole floats as integers, JS key order, JS escapes."""
        assert canonical_json(value) == expected

    def test_refuses_unknown_types(self) -> None:
        """A value JSON cannot carry is refused with the type named."""
        with pytest.raises(SigningError, match="set"):
            canonical_json({"x": {1, 2}})


class TestCanonicalPayload:
    def test_get_with_query_signs_the_query(self) -> None:
        """A GET with a query signs the form-encoded query."""
        payload = canonical_payload(
            "GET", query=[("orderBy", "desc"), ("take", "50")], path_params={"orderId": "x"}
        )
        assert payload == "orderBy=desc&take=50"

    def test_get_without_query_signs_path_params(self) -> None:
        """A GET without a query signs its path parameters as JSON, in route order."""
        params = {"clientId": "c-1", "orderId": "o-1"}
        assert canonical_payload("GET", path_params=params) == '{"clientId":"c-1","orderId":"o-1"}'

    def test_get_without_anything_signs_empty_object(self) -> None:
        """A GET on a route without parameters or query signs ``{}``."""
        assert canonical_payload("GET") == "{}"

    def test_post_signs_the_body_and_ignores_query(self) -> None:
        """A POST signs its JSON body, with floats as JavaScript prints them."""
        body = {"items": [{"strainId": "s", "quantity": 10.0}], "clientCartId": "c"}
        payload = canonical_payload("POST", query=[("x", "1")], body=body)
        assert payload == '{"items":[{"strainId":"s","quantity":10}],"clientCartId":"c"}'

    def test_body_less_post_signs_empty_object(self) -> None:
        """A POST or DELETE without a body signs ``{}``."""
        assert canonical_payload("DELETE") == "{}"


class TestServerRebuild:
    @pytest.mark.parametrize(
        "pairs",
        [
            [("orderBy", "desc"), ("take", "50"), ("page", "1")],
            [("search", "jane doe+x@ex.com ~*'!()"), ("take", "10")],
            [("q", "Zoë 😀 €"), ("clientIds", '["a","b"]')],
            [("startDate", "2026-05-01T00:00:00.000Z"), ("empty", "")],
        ],
    )
    def test_rebuild_equals_client_string(self, pairs: list[tuple[str, str]]) -> None:
        """What the guard rebuilds from the sent query is exactly what the client signed."""
        sent = canonical_query(pairs)
        rebuilt = rebuild_canonical("GET", raw_query=sent, path_params={"x": "y"}, json_body={})
        assert rebuilt == canonical_payload("GET", query=pairs)

    def test_repeated_keys_are_joined(self) -> None:
        """Repeated keys become one comma-joined value, as qs then URLSearchParams do."""
        assert express_query("a=1&a=2&b=3") == {"a": "1,2", "b": "3"}

    def test_numeric_keys_move_first(self) -> None:
        """Integer-like keys come first, as in a JavaScript object."""
        assert list(express_query("z=1&5=x&1=y")) == ["1", "5", "z"]

    def test_bracket_keys_nest(self) -> None:
        """``a[]`` builds an array and ``a[b]`` an object, which stringifies uselessly."""
        assert express_query("a[]=1&a[]=2&o[k]=v") == {"a": "1,2", "o": "[object Object]"}

    def test_invalid_escapes_stay_raw(self) -> None:
        """A malformed percent escape is kept as text, as qs does."""
        assert express_query("a=%E0%A4%A&b=%ZZ&&=c") == {"a": "%E0%A4%A", "b": "%ZZ"}

    def test_lone_question_mark_signs_params(self) -> None:
        """``?`` with nothing after it means no query: the path parameters are signed."""
        rebuilt = rebuild_canonical("GET", raw_query="", path_params={"orderId": "o"}, json_body={})
        assert rebuilt == '{"orderId":"o"}'

    def test_body_is_reserialised(self) -> None:
        """A body is signed as JavaScript re-serialises it: ``1.0`` becomes ``1``."""
        rebuilt = rebuild_canonical("POST", raw_query="a=1", path_params={}, json_body={"q": 1.0})
        assert rebuilt == '{"q":1}'


class TestKeys:
    def test_generated_pair_has_dr_green_shape(self, creds: ApiCredentials) -> None:
        """Keys are Base64 PEM: SPKI public (232 chars), PKCS#8 private (~316 chars)."""
        assert creds.api_key.startswith("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K")
        assert len(creds.api_key) == 232
        assert 300 <= len(creds.secret_key) <= 330

    def test_api_key_for_matches(self, creds: ApiCredentials) -> None:
        """The public key derived from a secret key equals the issued API key."""
        assert api_key_for(creds.secret_key) == creds.api_key

    def test_repr_hides_the_secret(self, creds: ApiCredentials) -> None:
        """Printing credentials never shows the secret key."""
        assert creds.secret_key not in repr(creds)
        assert "hidden" in repr(creds)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("not base64!!", "not Base64"),
            (base64.b64encode(b"hello").decode(), "not a PEM private key"),
        ],
    )
    def test_bad_secret_key_is_explained(self, text: str, message: str) -> None:
        """A secret key that cannot be loaded gets a specific message."""
        with pytest.raises(SigningError, match=message):
            load_private_key(text)

    def test_wrong_curve_is_refused(self) -> None:
        """A P-256 key is refused: Dr Green uses secp256k1."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(SigningError, match="secp256k1"):
            load_private_key(base64.b64encode(pem).decode())

    def test_public_key_errors(self) -> None:
        """An API key that is not a PEM public key gets a specific message."""
        with pytest.raises(SigningError, match="not a PEM public key"):
            load_public_key(base64.b64encode(b"nope").decode())


class TestSignatures:
    def test_roundtrip_and_tamper(self, creds: ApiCredentials) -> None:
        """A signature verifies over its payload and fails over any other."""
        private, public = load_private_key(creds.secret_key), load_public_key(creds.api_key)
        signature = sign_api_request(private, "orderBy=desc&take=50&page=1")
        assert verify_api_signature(public, "orderBy=desc&take=50&page=1", signature)
        assert not verify_api_signature(public, "orderBy=desc&take=50&page=2", signature)
        assert not verify_api_signature(public, "orderBy=desc&take=50&page=1", "garbage")

    def test_signatures_are_randomised(self, creds: ApiCredentials) -> None:
        """Two signatures of one payload differ (random k), so tests verify, never compare."""
        private = load_private_key(creds.secret_key)
        assert sign_api_request(private, "{}") != sign_api_request(private, "{}")

    def test_der_encoding(self, creds: ApiCredentials) -> None:
        """The signature is DER (an ASN.1 SEQUENCE), then standard Base64."""
        der = base64.b64decode(sign_api_request(load_private_key(creds.secret_key), "{}"))
        assert der[0] == 0x30


class TestWebhookSignatures:
    SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    OTHER = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
    BODY = '{"id":"evt_1","type":"order.approved","name":"Zoë"}'.encode()

    def test_fixed_vector(self) -> None:
        """The signature over "{id}.{timestamp}.{body}" matches an independently computed HMAC."""
        key = base64.b64decode(self.SECRET.removeprefix("whsec_"))
        expected = hmac.new(key, b"evt_1.1700000000." + self.BODY, hashlib.sha256).digest()
        header = sign_webhook([self.SECRET], "evt_1", 1700000000, self.BODY)
        assert header == "v1," + base64.b64encode(expected).decode()

    @pytest.mark.parametrize("size", [0, 2046, 2047, 2048, 4094, 4095, 10_000])
    def test_bodies_of_every_length(self, size: int) -> None:
        """Bodies around and beyond the piece the HMAC is fed in sign like a one-shot HMAC."""
        body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        key = base64.b64decode(self.SECRET.removeprefix("whsec_"))
        expected = hmac.new(key, b"evt_1.1700000000." + body, hashlib.sha256).digest()
        header = sign_webhook([self.SECRET], "evt_1", 1700000000, body)
        assert header == "v1," + base64.b64encode(expected).decode()
        hex_expected = hmac.new(self.SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert sign_hex(self.SECRET, body) == f"sha256={hex_expected}"

    def test_one_entry_per_secret(self) -> None:
        """During a rotation each secret adds one v1 entry, separated by single spaces."""
        header = sign_webhook([self.SECRET, self.OTHER], "evt_1", 1700000000, self.BODY)
        first, second = header.split(" ")
        assert first.startswith("v1,")
        assert second.startswith("v1,")
        assert "  " not in header

    def test_standardwebhooks_library_verifies(self) -> None:
        """The standardwebhooks reference library accepts our headers, with either secret."""
        from standardwebhooks.webhooks import Webhook

        now = int(time.time())  # noqa: TID251 - the library checks against the real clock
        header = sign_webhook([self.SECRET, self.OTHER], "evt_1", now, self.BODY)
        headers = {
            "webhook-id": "evt_1",
            "webhook-timestamp": str(now),
            "webhook-signature": header,
        }
        for secret in (self.SECRET, self.OTHER):
            assert Webhook(secret).verify(self.BODY, headers)["type"] == "order.approved"

    def test_verify_accepts_and_rejects(self) -> None:
        """Our verifier accepts a fresh request under any known secret, rejects tampering."""
        header = sign_webhook([self.SECRET], "evt_1", 1000, self.BODY)

        def check(
            secrets: list[str],
            now: float,
            msg_id: str = "evt_1",
            stamp: str = "1000",
            body: bytes = self.BODY,
        ) -> bool:
            return verify_webhook(
                secrets,
                msg_id=msg_id,
                timestamp=stamp,
                signature_header=header,
                body=body,
                now_s=now,
            )

        assert check([self.OTHER, self.SECRET], 1100)
        assert not check([self.OTHER], 1100)
        assert not check([self.SECRET], 1000 + 301)
        assert not check([self.SECRET], 1100, body=self.BODY + b" ")
        assert not check([self.SECRET], 1100, msg_id="evt_2")
        assert not check([self.SECRET], 1100, stamp="1001")

    def test_hex_scheme(self) -> None:
        """The simple scheme is sha256=<hex HMAC of the raw body> keyed by the secret text."""
        expected = hmac.new(self.SECRET.encode(), self.BODY, hashlib.sha256).hexdigest()
        assert sign_hex(self.SECRET, self.BODY) == f"sha256={expected}"

    def test_secrets(self) -> None:
        """New secrets are whsec_ + Base64 of 32 bytes; malformed ones are refused."""
        secret = generate_webhook_secret()
        assert len(webhook_key(secret)) == 32
        with pytest.raises(SigningError):
            webhook_key("nope")
        with pytest.raises(SigningError):
            webhook_key("whsec_***")
        with pytest.raises(SigningError):
            generate_webhook_secret(8)
