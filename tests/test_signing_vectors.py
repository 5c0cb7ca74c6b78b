"""The canonical strings against vectors Node computed (``tests/vectors/canonical.mjs``).

The client and the sandbox share ``canonical``, so a mistake there passes every round trip;
these vectors come from JavaScript itself (``JSON.stringify``, ``URLSearchParams``, the top of
Express's ``qs`` parse). One class checks the Python functions against the committed file, the
last one regenerates the file with ``node`` so that a change on either side shows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.canonical import canonical_json, canonical_query, express_query
from drgreen_poller.canonical import rebuild_canonical as rebuild
from tests.conftest import require_node

VECTORS_DIR = Path(__file__).with_name("vectors")
SCRIPT = VECTORS_DIR / "canonical.mjs"
COMMITTED = VECTORS_DIR / "canonical.json"
VECTORS: dict[str, list[dict[str, Any]]] = json.loads(COMMITTED.read_text(encoding="utf-8"))
REGENERATE = "node tests/vectors/canonical.mjs > tests/vectors/canonical.json"


def _cases(kind: str) -> list[Any]:
    return [pytest.param(vector, id=vector["name"]) for vector in VECTORS[kind]]


def _node() -> str:
    return require_node("regenerating the Node vectors")


class TestBodies:
    """``canonical_json`` against ``JSON.stringify(JSON.parse(text))``."""

    @pytest.mark.parametrize("vector", _cases("bodies"))
    def test_client_signs_what_javascript_prints(self, vector: dict[str, Any]) -> None:
        """The client's string for a value is what JSON.stringify prints for the same JSON."""
        assert canonical_json(json.loads(vector["text"])) == vector["signed"]

    @pytest.mark.parametrize("vector", _cases("bodies"))
    def test_guard_rebuilds_what_javascript_prints(self, vector: dict[str, Any]) -> None:
        """The sandbox's guard re-serialises a received body as Node's does."""
        body = json.loads(vector["text"])
        assert rebuild("POST", raw_query="", path_params={}, json_body=body) == vector["signed"]


class TestForms:
    """``canonical_query`` against ``new URLSearchParams(pairs).toString()``."""

    @pytest.mark.parametrize("vector", _cases("forms"))
    def test_client_query_is_whatwg(self, vector: dict[str, Any]) -> None:
        """The query the client signs and sends is URLSearchParams' serialisation of its pairs."""
        assert canonical_query([(k, v) for k, v in vector["pairs"]]) == vector["signed"]

    @pytest.mark.parametrize("vector", _cases("forms"))
    def test_guard_rebuilds_the_sent_query(self, vector: dict[str, Any]) -> None:
        """The sandbox's guard rebuilds exactly the query string the client sent."""
        sent = vector["signed"]
        assert rebuild("GET", raw_query=sent, path_params={}, json_body={}) == sent


class TestQueries:
    """``express_query`` and the GET rebuild against Express's ``req.query`` in Node."""

    @pytest.mark.parametrize("vector", _cases("queries"))
    def test_query_parse_matches_express(self, vector: dict[str, Any]) -> None:
        """Keys, their order and their values as JavaScript's String() sees req.query."""
        assert [list(item) for item in express_query(vector["raw"]).items()] == vector["query"]

    @pytest.mark.parametrize("vector", _cases("queries"))
    def test_guard_signs_what_node_signs(self, vector: dict[str, Any]) -> None:
        """The string the guard verifies for a GET: the re-serialised query, else the params."""
        raw, params = vector["raw"], vector["params"]
        assert rebuild("GET", raw_query=raw, path_params=params, json_body={}) == vector["signed"]


class TestNodeAgrees:
    """The committed vectors are what Node prints today."""

    def test_every_kind_has_vectors(self) -> None:
        """The committed file holds bodies, forms and queries (no kind silently empty)."""
        assert {kind: bool(cases) for kind, cases in VECTORS.items()} == {
            "bodies": True,
            "forms": True,
            "queries": True,
        }

    def test_node_prints_the_committed_file(self) -> None:
        """Running the script with node prints the committed JSON byte for byte."""
        printed = subprocess.run(  # noqa: S603 - node from PATH running our own script
            [_node(), str(SCRIPT)], capture_output=True, check=True, timeout=8
        ).stdout.decode("utf-8")
        hint = f"Node prints other vectors: run `{REGENERATE}` and review the diff"
        assert printed == COMMITTED.read_text(encoding="utf-8"), hint
