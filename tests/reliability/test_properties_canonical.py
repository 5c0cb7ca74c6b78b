"""Property tests of the canonical strings (issue 7, point 11d) against Node itself.

``canonical_json`` and ``canonical_query`` are compared with what Node makes of the same value
(``JSON.stringify``, WHATWG ``URLSearchParams``), through one long-lived ``node`` process per
module; the guard's rebuild must give back the string signed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drgreen_poller.canonical import canonical_json, canonical_query, rebuild_canonical
from drgreen_poller.errors import SigningError
from tests.conftest import require_node
from tests.reliability.properties import (
    PROPERTY,
    PROPERTY_TIMEOUT_S,
)

JS_REFERENCE = Path(__file__).with_name("js_reference.js")
# A high surrogate followed by a low one is one character to JavaScript, two to Python.
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Node:
    """A ``node js_reference.js`` child answering one JSON line per request."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - node on PATH and our own script
            [shutil.which("node") or "node", str(JS_REFERENCE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def ask(self, op: str, **request: Any) -> str:
        """Node's answer to one request; a JavaScript exception fails the test with its text."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self._process.stdin.flush()
        reply = json.loads(self._process.stdout.readline())
        assert "ok" in reply, reply
        return str(reply["ok"])

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)
        assert self._process.stdout is not None
        self._process.stdout.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    require_node("the JavaScript reference")
    reference = Node()
    try:
        yield reference
    finally:
        reference.close()


# Any text, lone surrogates included (JSON.stringify escapes them), but no surrogate pairs.
js_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=12).filter(
    lambda text: not _SURROGATE_PAIR.search(text)
)
js_keys = st.one_of(
    js_text,
    st.from_regex(r"0|[1-9][0-9]{0,11}", fullmatch=True),  # array indices move first in JS
    st.sampled_from(["4294967294", "4294967295", "01", "-1", "1.5", "__proto__", "toString"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [2**53, 2**53 + 1, 10**21, 1e21, 1e-7, 1e-6, -0.0, 5e-324, 1.7976931348623157e308]
    ),
    st.integers(min_value=2**1024, max_value=2**1100),  # beyond any double
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | js_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(js_keys, children, max_size=4)
    ),
    max_leaves=16,
)
# Query text as a URL can carry it: surrogates are in ``test_lone_surrogates_are_refused``.
query_text = st.text(max_size=10)
query_keys = st.one_of(query_text, st.sampled_from(["", "a[]", "o[k]", "7", "toString"]))
query_pairs = st.lists(st.tuples(query_keys, query_text), max_size=5)


def _too_big_for_javascript(value: Any) -> bool:
    """Whether ``value`` holds an integer no double can approximate (JSON.parse makes Infinity)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 2**1024
    if isinstance(value, dict):
        return any(_too_big_for_javascript(v) for v in value.values())
    if isinstance(value, list):
        return any(_too_big_for_javascript(v) for v in value)
    return False


class TestCanonicalJson:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(value=json_values)
    @example(value={"b": 1, "10": 2, "2": [1.0, -0.0, 1e21, 1e-7], "a": "\ud800ë😀"})
    @example(value={"n": 10**400})
    def test_matches_json_stringify(self, node: Node, value: Any) -> None:
        """canonical_json is what JSON.stringify prints after JSON.parse, or a SigningError."""
        try:
            signed = canonical_json(value)
        except SigningError:
            assert _too_big_for_javascript(value)
            return
        assert not _too_big_for_javascript(value)
        assert signed == node.ask("stringify", text=json.dumps(value))

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(value=json_values.filter(lambda v: not _too_big_for_javascript(v)))
    def test_guard_rebuilds_the_signed_body(self, node: Node, value: Any) -> None:
        """The body sent, parsed and re-serialised by Node or by our guard, is the string signed."""
        signed = canonical_json(value)
        assert node.ask("stringify", text=signed) == signed
        rebuilt = rebuild_canonical(
            "POST", raw_query="", path_params={}, json_body=json.loads(signed)
        )
        assert rebuilt == signed


class TestCanonicalQuery:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(pairs=query_pairs)
    @example(pairs=[("", "v"), ("a", "b")])
    @example(pairs=[("search", "jane doe+x@ex.com ~*'!()"), ("q", "Zoë 😀 €")])
    def test_accepted_queries_are_rebuilt_exactly(
        self, node: Node, pairs: list[tuple[str, str]]
    ) -> None:
        """A query canonical_query accepts is WHATWG's encoding, and the guard rebuilds it."""
        try:
            sent = canonical_query(pairs)
        except SigningError:
            return  # refused: the server would have rewritten it
        assert sent == node.ask("form", pairs=pairs)
        if not pairs:
            return  # no query at all: the path parameters are signed instead
        assert node.ask("rebuild", query=sent) == sent
        assert rebuild_canonical("GET", raw_query=sent, path_params={}, json_body={}) == sent

    @PROPERTY
    @given(
        pairs=st.lists(st.tuples(query_text, query_text), min_size=1, max_size=3),
        surrogate=st.characters(categories=["Cs"]),
        into_key=st.booleans(),
    )
    def test_lone_surrogates_are_refused(
        self, pairs: list[tuple[str, str]], surrogate: str, into_key: bool
    ) -> None:
        """A lone surrogate has no URL form (URLSearchParams sends U+FFFD): it is refused."""
        key, value = pairs[0]
        pairs[0] = (key + surrogate, value) if into_key else (key, value + surrogate)
        with pytest.raises(SigningError):
            canonical_query(pairs)
