"""The schema files and their checker: one schema per type the code can emit, shipped as they are
in the repository, valid draft 2020-12, and ``problems`` naming the type and the field.

Events from real tier runs are checked in ``test_event_contract``; every test's own events by
``tests/contract_check.py`` (conftest).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from drgreen_poller.clock import FakeClock
from drgreen_poller.contract import EVENT_TYPES, data_schema, envelope_schema, schema_files
from drgreen_poller.errors import ConfigError
from drgreen_poller.samples import sample
from drgreen_poller.store import SinkRoute, Store
from tests.cli_run import run_cli
from tests.contract_check import contract_breaks, problems, strict

ROOT = Path(__file__).resolve().parent.parent
NOW = FakeClock().now()
PACKAGE = ROOT / "drgreen_poller"
# The modules that decide which events happen: every type they name is one the daemon emits.
EMITTERS = ("changes.py", "refusals.py")
TYPE_LITERAL = re.compile(r"^(order|client|commission|strain|poller)\.[a-z_.]+$")

PAID: dict[str, Any] = {
    "id": "evt_" + "a" * 26,
    "type": "order.paid",
    "holder": "main",
    "resource": {"type": "order", "id": "o-1"},
    "sequence": 3,
    "inferred": False,
    "observed_at": "2026-11-23T10:00:03.512Z",
    "occurred_at": None,
    "data": {
        "object": {
            "id": "o-1", "orderStatus": "PENDING", "adminApproval": "VERIFIED",
            "paymentStatus": "PAID", "totalAmount": 65,
        },
        "previous": {"paymentStatus": "PENDING"},
    },
}  # fmt: skip


def _type_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and TYPE_LITERAL.match(node.value)
    }


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _broken(change: Any) -> dict[str, Any]:
    event = copy.deepcopy(PAID)
    change(event)
    return event


class TestSchemaFiles:
    def test_the_package_ships_the_repositorys_schemas(self) -> None:
        """drgreen_poller/schemas/ is byte for byte schemas/, the source (make schemas copies)."""
        assert _tree(PACKAGE / "schemas") == _tree(ROOT / "schemas")
        assert Path(str(schema_files())) == PACKAGE / "schemas"

    def test_every_file_is_a_draft_2020_12_schema(self) -> None:
        """Each file declares draft 2020-12 and is a valid schema of it, strict or not."""
        schemas = [envelope_schema(), *(data_schema(t) for t in EVENT_TYPES)]
        for schema in schemas:
            assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
            Draft202012Validator.check_schema(schema)
            Draft202012Validator.check_schema(strict(schema))

    def test_one_schema_per_type_and_none_orphaned(self) -> None:
        """data/ holds exactly one file per event type of the code's list."""
        names = {p.name for p in (ROOT / "schemas" / "data").iterdir()}
        assert names == {f"{t}.json" for t in EVENT_TYPES}
        assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)

    def test_every_type_the_code_emits_is_listed(self) -> None:
        """The types changes.py and refusals.py emit are the list; no module names another."""
        emitted = set().union(*(_type_literals(PACKAGE / name) for name in EMITTERS))
        assert emitted == set(EVENT_TYPES)
        for path in PACKAGE.rglob("*.py"):
            assert _type_literals(path) <= set(EVENT_TYPES), path

    def test_unknown_type_lists_the_known_ones(self) -> None:
        """Asking for a type without a schema is a ConfigError naming every known type."""
        with pytest.raises(ConfigError) as caught:
            data_schema("order.teleported")
        (line,) = caught.value.problems
        assert line.startswith("unknown event type 'order.teleported'; the known types are: ")
        assert all(t in line for t in EVENT_TYPES)


class TestProblems:
    def test_a_good_event_has_none(self) -> None:
        """An event as the code builds it breaks nothing."""
        assert problems(PAID) == []

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (
                lambda e: e["data"]["previous"].pop("paymentStatus"),
                "order.paid: data.previous: 'paymentStatus' is a required property",
            ),
            (
                lambda e: e["data"]["object"].update(paymentStatus=3),
                "order.paid: data.object.paymentStatus: 3 is not of type 'string'",
            ),
            (
                lambda e: e["data"]["previous"].update(orderStatus="PENDING"),
                "order.paid: data.previous: Additional properties are not allowed "
                "('orderStatus' was unexpected)",
            ),
            (
                lambda e: e.update(sequence=0),
                "order.paid: sequence: 0 is less than the minimum of 1",
            ),
            (
                lambda e: e.update(extra=1),
                "order.paid: (the event): Additional properties are not allowed "
                "('extra' was unexpected)",
            ),
            (
                lambda e: e["resource"].pop("id"),
                "order.paid: resource: 'id' is a required property",
            ),
            (
                lambda e: e.update(type="order.teleported"),
                "order.teleported: type: no schema describes this event type",
            ),
            (
                lambda e: e.update(test=False),
                "order.paid: test: True was expected",
            ),
        ],
    )
    def test_each_break_names_type_and_field(self, change: Any, expected: str) -> None:
        """A break is reported as TYPE: PATH: what is wrong (undocumented fields included)."""
        assert problems(_broken(change)) == [expected]

    def test_dr_greens_own_fields_pass_through(self) -> None:
        """Fields of Dr Green's record that the schema does not list are not breaks."""
        assert problems(_broken(lambda e: e["data"]["object"].update(newField=[1]))) == []

    def test_not_an_event(self) -> None:
        """Something that is not an event object is one break, not a crash."""
        assert problems([1]) == ["(no type): (the event): [1] is not of type 'object'"]


class TestTheSuitesCheck:
    async def test_a_break_fails_naming_type_and_field(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """An event the code wrote that breaks its schema is found in the database, by type and
        field (a directory outside this test's tmp_path, which the check would fail)."""
        root = tmp_path_factory.mktemp("contract")
        store = await Store.open(root / "state.db", sinks=[SinkRoute("s", ("*",))])
        try:
            good = sample("order.paid", holder="h", country="GBR", now=NOW)
            bad = sample("order.paid", holder="h", country="GBR", now=NOW)
            bad = replace(bad, changes=[replace(bad.changes[0], previous={})])
            await store.commit_events("h", [good, bad], now=NOW)
        finally:
            await store.close()
        assert contract_breaks(root) == (
            2,
            ["state.db: order.paid: data.previous: 'paymentStatus' is a required property"],
        )

    def test_hand_made_rows_are_left_out(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Rows without a record in data.object, as tests write by hand, are not checked."""
        root = tmp_path_factory.mktemp("contract")
        with sqlite3.connect(root / "state.db") as db:
            db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, body TEXT)")
            db.executemany("INSERT INTO events (body) VALUES (?)", [("{}",), ("not json",)])
        (root / "other.db").write_bytes(b"SQLite format 3\x00 but broken")
        assert contract_breaks(root) == (0, ["state.db: an event body is not JSON: 'not json'"])


class TestSchemaCommand:
    async def test_envelope(self) -> None:
        """events schema prints the envelope's schema file as shipped, without a config."""
        code, out, err = await run_cli("-c", "/nonexistent.toml", "events", "schema")
        assert (code, err) == (0, "")
        assert out == (ROOT / "schemas" / "envelope.json").read_text(encoding="utf-8")

    async def test_one_type(self) -> None:
        """events schema TYPE prints that type's data schema."""
        code, out, _ = await run_cli("events", "schema", "order.paid")
        assert code == 0
        assert json.loads(out) == json.loads((ROOT / "schemas/data/order.paid.json").read_text())

    async def test_unknown_type(self) -> None:
        """An unknown TYPE is one line listing the known types, exit 2."""
        code, out, err = await run_cli("events", "schema", "nope")
        assert (code, out) == (2, "")
        assert err.count("\n") == 1
        assert err.startswith(
            "error: unknown event type 'nope'; the known types are: order.created"
        )
