"""Tests of the canonical strings: WHATWG form encoding, JavaScript JSON, the guard's rebuild."""

from __future__ import annotations

import json
from typing import Any

import pytest

from drgreen_poller.canonical import (
    canonical_json,
    canonical_payload,
    canonical_query,
    express_query,
    form_encode,
    js_number,
    rebuild_canonical,
)
from drgreen_poller.errors import SigningError


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
            [("__proto__", "x"), ("take", "5")],
        ],
    )
    def test_refuses_what_the_server_would_rewrite(self, pairs: list[tuple[str, str]]) -> None:
        """Keys the server would rewrite or drop, and lone surrogates, are refused."""
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

    def test_refuses_a_boolean(self) -> None:
        """A boolean is not formatted as the number Python would take it for."""
        with pytest.raises(SigningError, match="boolean"):
            js_number(True)


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

    def test_refuses_keys_that_collide_as_text(self) -> None:
        """Keys 1 and "1" are one JavaScript property, so the object is refused."""
        with pytest.raises(SigningError, match="same text"):
            canonical_json({1: "a", "1": "b"})


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
