"""Property-based tests (issue 7, point 11d): canonical strings against Node, change detection.

The canonical strings of ``canonical`` are compared with what Node itself makes of the same value
(``JSON.stringify``, WHATWG ``URLSearchParams``), through one long-lived ``node`` process per
module. Change detection is fed random sequences of snapshots; replaying the events it emits
must reach the state it stores. A few hundred examples run in ``make test``;
``RELIABILITY_FULL=1`` (``make reliability``) runs thousands.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drgreen_poller.canonical import canonical_json, canonical_query, rebuild_canonical
from drgreen_poller.changes import (
    CLIENT_BASELINE,
    ORDER_BASELINE,
    STRAIN_FIELDS,
    Change,
    Detection,
    Snapshot,
    detect_client,
    detect_order,
    detect_strain,
    strain_removed,
)
from drgreen_poller.clock import FakeClock
from drgreen_poller.errors import SigningError
from drgreen_poller.events import Resource
from drgreen_poller.models import parse_client, parse_order, parse_strain
from drgreen_poller.store import Observation, Store
from drgreen_poller.store.lineage import backup_database
from tests.conftest import require_node
from tests.example_receiver import dropped_by_example_receiver

FULL = os.environ.get("RELIABILITY_FULL") == "1"
PROPERTY = settings(
    max_examples=3000 if FULL else 150,
    deadline=None,
    database=None,  # nothing written beside the checkout; failures print their example
    suppress_health_check=[HealthCheck.too_slow],
)
# Examples that open real SQLite files cost milliseconds each: fewer of them.
PROPERTY_ON_DISK = settings(PROPERTY, max_examples=800 if FULL else 60)
PROPERTY_TIMEOUT_S = 600 if FULL else 30
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


# --- strategies ---------------------------------------------------------------------------------

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


# --- change detection ---------------------------------------------------------------------------

APPROVALS = ["PENDING", "VERIFIED", "REJECTED", "ON_HOLD", None]  # None: the field is missing
PAYMENTS = ["PENDING", "PAID", "COMPLETED", "FAILED", "REFUNDED", "PARTIALLY_PAID", None]
STATUSES = ["PENDING", "PROCESSING", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED", None]
FLAGS = [True, False, None]
CREATED_AT = "2026-11-20T10:00:00.000Z"


@dataclass(frozen=True)
class Kind:
    """A resource kind as change detection sees it."""

    detect: Callable[[Snapshot | None, Any], Detection]
    parse: Callable[[Any], Any]
    fields: tuple[str, ...]
    # Where a ``*.created`` event's steps start: Dr Green's creation values, or (None) the
    # object the event shows, for kinds whose creation carries no steps.
    baseline: Snapshot | None


ORDERS = Kind(
    detect_order,
    parse_order,
    ("adminApproval", "paymentStatus", "orderStatus"),
    {k: ORDER_BASELINE[k] for k in ("adminApproval", "paymentStatus", "orderStatus")},
)
CLIENTS = Kind(
    detect_client,
    parse_client,
    ("isKYCVerified", "adminApproval", "isActive"),
    {k: CLIENT_BASELINE[k] for k in ("isKYCVerified", "adminApproval", "isActive")},
)
STRAINS = Kind(detect_strain, parse_strain, STRAIN_FIELDS, None)  # fmt: skip


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    """A list item as Dr Green sends it: fields it lacks are simply absent."""
    present = {k: v for k, v in fields.items() if v is not None}
    return {"id": "r-1", "createdAt": CREATED_AT, **present}


order_records = st.fixed_dictionaries(
    {
        "adminApproval": st.sampled_from(APPROVALS),
        "paymentStatus": st.sampled_from(PAYMENTS),
        "orderStatus": st.sampled_from(STATUSES),
    }
).map(_record)
client_records = st.fixed_dictionaries(
    {
        "isKYCVerified": st.sampled_from(FLAGS),
        "adminApproval": st.sampled_from(APPROVALS),
        "isActive": st.sampled_from(FLAGS),
    }
).map(_record)
amounts = st.one_of(
    st.none(), st.integers(0, 1000), st.floats(0, 1000), st.sampled_from([495, 495.0, "12.5"])
)
strain_records = st.fixed_dictionaries(
    {
        "retailPrice": amounts,
        "stockQuantity": amounts,
        "isAvailable": st.sampled_from(FLAGS),
        "isActive": st.sampled_from(FLAGS),
    }
).map(_record)
# A strain a complete sweep no longer lists: None in the sequence.
strain_sweeps = st.one_of(st.none(), strain_records)


@dataclass
class Replay:
    """A receiver's view of one resource, rebuilt from nothing but the events."""

    kind: Kind
    state: Snapshot | None = None

    def apply(self, change: Change, shown: Snapshot) -> None:
        """Apply one event; its ``previous`` must be what the receiver already holds."""
        if change.type.endswith(".created"):
            self.state = dict(shown if self.kind.baseline is None else self.kind.baseline)
        assert self.state is not None, f"{change.type} before the resource exists"
        assert {k: self.state.get(k) for k in change.previous} == dict(change.previous), change
        if change.type.endswith(".removed"):
            self.state = None
            return
        assert change.current.keys() == change.previous.keys(), change
        self.state.update(change.current)

    def known(self) -> Snapshot | None:
        """The values the receiver knows (an unknown field is absent, as in ``data.object``)."""
        if self.state is None:
            return None
        return {k: v for k, v in self.state.items() if v is not None}


def _replay(kind: Kind, sweeps: list[Any], *, seeded: bool) -> tuple[Replay, Snapshot | None]:
    """Feed ``sweeps`` through detection as the poller does; returns the replay and the state."""
    replay, stored, shown = Replay(kind), None, None
    for index, sweep in enumerate(sweeps):
        if sweep is None:  # gone from the catalogue
            if stored is not None:
                replay.apply(strain_removed(stored), {})
            stored = shown = None
            continue
        detection = kind.detect(stored, kind.parse(sweep))
        if seeded and index == 0:  # first_sync = "seed": recorded as it is, without events
            replay.state = dict(detection.shown)
        else:
            for change in detection.changes:
                replay.apply(change, detection.shown)
        stored, shown = detection.snapshot, detection.shown
        assert replay.known() == shown  # each poll's events lead to the object they show
    return replay, shown


def _check_replay(kind: Kind, sweeps: list[Any], seeded: bool) -> None:
    replay, shown = _replay(kind, sweeps, seeded=seeded)
    assert replay.known() == shown


def _sweeps(records: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(records, min_size=1, max_size=12)


class TestChangeDetection:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(sweeps=_sweeps(order_records), seeded=st.booleans())
    def test_order_events_replay_to_the_stored_order(self, sweeps: list[Any], seeded: bool) -> None:
        """Each order event steps from what a receiver holds; the steps end at the stored order."""
        _check_replay(ORDERS, sweeps, seeded)

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(sweeps=_sweeps(client_records), seeded=st.booleans())
    def test_client_events_replay_to_the_stored_client(
        self, sweeps: list[Any], seeded: bool
    ) -> None:
        """Each client event steps from what a receiver holds; the steps end at the stored one."""
        _check_replay(CLIENTS, sweeps, seeded)

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY
    @given(sweeps=_sweeps(strain_sweeps), seeded=st.booleans())
    def test_strain_events_replay_to_the_stored_strain(
        self, sweeps: list[Any], seeded: bool
    ) -> None:
        """Strain events (created, updated, removed) replay to the stored strain, or to none."""
        _check_replay(STRAINS, sweeps, seeded)


# --- event ids across crashes, state loss and restores --------------------------------------------

HOLDER = "shop"
ORDER_RESOURCES = [Resource("order", "o-1"), Resource("order", "o-2")]
# One strain listed in two countries: one resource per country (design §3.6).
STRAIN_RESOURCES = [Resource("strain", "s-1", "GBR"), Resource("strain", "s-1", "ZAF")]
DETECT: dict[str, tuple[Callable[[Snapshot | None, Any], Detection], Callable[[Any], Any]]] = {
    "order": (detect_order, parse_order),
    "strain": (detect_strain, parse_strain),
}
# How a copy of the state is taken: ``backup PATH`` while the daemon runs, the file copied while
# it is stopped, or a file-system snapshot while it runs (database, WAL and lineage file).
COMMAND, STOPPED, HOT = "backup command", "stopped copy", "hot copy"
STATE_FILES = ("state.db", "state.db-wal", "state.db.lineage")


@dataclass
class History:
    """A state database living through polls, crashes, losses and restores, on a fake clock."""

    directory: Path
    clock: FakeClock = field(default_factory=FakeClock)
    store: Store | None = None
    backups: list[Path] = field(default_factory=list)
    committed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "state.db"

    async def open(self) -> Store:
        if self.store is None:
            self.store = await Store.open(self.path, clock=self.clock, sinks=())
            await self.store.ensure_holders([HOLDER], self.clock.now())
        return self.store

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def poll(self, resource: Resource, record: dict[str, Any], *, crash: bool) -> None:
        """One poll of ``resource``; after a ``crash`` its commit was lost and it runs again."""
        store = await self.open()
        entity = (await store.entities_by_key(HOLDER, [resource.key])).get(resource.key)
        previous = entity.snapshot if entity and not entity.snapshot.get("removed") else None
        detect, parse = DETECT[resource.type]
        detection = detect(previous, parse({**record, "id": resource.id}))
        observation = Observation(
            resource, detection.snapshot, tier=None, obj=detection.shown,
            changes=detection.changes, expected_sequence=entity.sequence if entity else 0,
        )  # fmt: skip
        now = self.clock.now()
        lost = await store.preview(HOLDER, [observation], now=now) if crash else None
        result = await store.commit_events(HOLDER, [observation], now=now)
        if lost is not None:  # derived again from the same state: the same ids
            assert [e["id"] for e in result.events] == [e["id"] for e in lost]
        self.committed += result.events

    async def backup(self, how: str) -> None:
        """Keep a copy of the state, taken ``how``."""
        target = self.directory / f"backup-{len(self.backups)}"
        target.mkdir()
        await self.open()
        if how == COMMAND:
            backup_database(self.path, target / "state.db", self.clock.now())
        else:
            if how == STOPPED:
                await self.close()
            for name in STATE_FILES:
                if (self.directory / name).exists():
                    shutil.copyfile(self.directory / name, target / name)
        self.backups.append(target)

    async def replace(self, source: Path | None, *, whole_directory: bool) -> None:
        """The database deleted (``source`` None) or a copy put back, then a restart.

        ``whole_directory``: the lineage file goes too (deleted, or put back from the copy).
        """
        await self.close()
        for name in ("state.db", "state.db-wal", "state.db-shm", "state.db.lineage"):
            if whole_directory or not name.endswith(".lineage"):
                (self.directory / name).unlink(missing_ok=True)
        if source is None:
            return
        for name in STATE_FILES:
            copy = source / name
            if copy.exists() and (whole_directory or not name.endswith(".lineage")):
                shutil.copyfile(copy, self.directory / name)


async def _live(directory: Path, steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Run ``steps`` over a fresh state; the events committed, in commit order."""
    history = History(directory)
    try:
        for step in steps:
            history.clock.advance(1.0)
            match step:
                case ("poll", resource, record, crash):
                    await history.poll(resource, record, crash=crash)
                case ("backup", how):
                    await history.backup(how)
                case ("lose", whole_directory):
                    await history.replace(None, whole_directory=whole_directory)
                case ("restore", index, whole_directory) if history.backups:
                    source = history.backups[index % len(history.backups)]
                    await history.replace(source, whole_directory=whole_directory)
    finally:
        await history.close()
    return history.committed


def _steps(
    resources: list[Resource],
    records: st.SearchStrategy[Any],
    copies: list[str],
    lineage_lost: bool,
) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Polls, crashes, copies, losses and restores; ``lineage_lost``: the lineage file may go
    with the database (deleted with it, or put back from the copy)."""
    whole_directory = st.booleans() if lineage_lost else st.just(False)
    return st.lists(
        st.one_of(
            st.tuples(st.just("poll"), st.sampled_from(resources), records, st.booleans()),
            st.tuples(st.just("backup"), st.sampled_from(copies)),
            st.tuples(st.just("lose"), whole_directory),
            st.tuples(st.just("restore"), st.integers(0, 9), whole_directory),
        ),
        max_size=14,
    )


def _run(steps: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(_live(Path(directory), steps))


def _transition(event: dict[str, Any]) -> tuple[Any, ...]:
    """What an id must name: one resource's event of one type, from these values, at this place."""
    resource = event["resource"]
    where = (resource["type"], resource.get("country"), resource["id"], event["sequence"])
    return (*where, event["type"], json.dumps(event["data"]["previous"], sort_keys=True))


def _check_ids_and_receiver(events: list[dict[str, Any]]) -> None:
    """No id names two transitions; examples/receiver.py keeps every event it has not seen."""
    named: dict[str, tuple[Any, ...]] = {}
    for event in events:
        assert named.setdefault(event["id"], _transition(event)) == _transition(event), event
    stale = [event for why, event in dropped_by_example_receiver(events) if why == "stale"]
    assert stale == [], f"real events dropped as stale: {stale}"


class TestEventIds:
    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(ORDER_RESOURCES, order_records, [COMMAND, STOPPED], False))
    def test_no_id_names_two_events(self, steps: list[tuple[Any, ...]]) -> None:
        """Across crashes, lost databases and restored copies, an id names one transition only
        and the README's receiver (dedupe on id, drop stale by sequence) keeps every event."""
        _check_ids_and_receiver(_run(steps))

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(ORDER_RESOURCES, order_records, [HOT, STOPPED], True))
    @example(
        steps=[
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "PENDING"}, False),
            ("backup", HOT),
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "VERIFIED"}, False),
            ("restore", 0, False),
            ("poll", ORDER_RESOURCES[0], {"adminApproval": "REJECTED"}, False),
        ]
    )
    def test_restored_snapshots_keep_every_event(self, steps: list[tuple[Any, ...]]) -> None:
        """A snapshot of the running state, or a copy without its lineage file, loses no event."""
        _check_ids_and_receiver(_run(steps))

    @pytest.mark.timeout(PROPERTY_TIMEOUT_S)
    @PROPERTY_ON_DISK
    @given(steps=_steps(STRAIN_RESOURCES, strain_records, [COMMAND, STOPPED], False))
    @example(
        steps=[
            ("poll", STRAIN_RESOURCES[0], {"retailPrice": 10}, False),
            ("poll", STRAIN_RESOURCES[1], {"retailPrice": 10}, False),
        ]
    )
    def test_readme_receiver_keeps_every_strain_event(self, steps: list[tuple[Any, ...]]) -> None:
        """A strain listed in two countries: the README's receiver keeps both countries' events."""
        _check_ids_and_receiver(_run(steps))
