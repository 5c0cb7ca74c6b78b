"""The suite's contract check: every event a test made the code write must match the schemas.

``problems`` checks one event against the envelope's schema and its type's data schema, both
closed where the files are silent (``strict``: a field the schemas do not list is a break, so
they stay in step with the code). After each test that has a ``tmp_path``, every SQLite state
database under it (the daemon's, ``poll-once``'s, the CLI's in subprocesses alike) is opened and
each row of its ``events`` table checked. Rows a test wrote by hand to exercise the store or the
delivery worker (``Change("order.paid", {})`` with no record, a body of ``{}``) carry no
``data.object`` record, which the code never emits (the envelope schema requires one, and
``test_event_contract`` proves every type from real tier runs): those are not the code's events
and are left out, as are the modules in ``HAND_MADE_MODULES`` and the packages in
``HAND_MADE_PACKAGES``, whose every event is hand-made.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from drgreen_poller.contract import EVENT_TYPES, data_schema, envelope_schema

# The store's own tests build their events from hand-made changes and records (an order that is
# only an id, order.approved with an empty previous) to exercise commits, claims and the kept
# tiers: not events the code makes. (Made realistic, they could be checked too.)
HAND_MADE_MODULES = frozenset({"test_store_snapshots.py"})
HAND_MADE_PACKAGES = frozenset({"store"})  # tests/store/
SQLITE_HEADER = b"SQLite format 3\x00"
# Problems shown per test: the first ones say what broke; a thousand copies would not.
SHOWN = 20


def strict(schema: Any) -> Any:
    """``schema`` with every object that lists ``properties`` and is silent on
    ``additionalProperties`` closed: what we check our own events with."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


@cache
def _validator(event_type: str | None) -> Draft202012Validator:
    """The strict validator of the envelope (None) or of ``event_type``'s data."""
    schema = envelope_schema() if event_type is None else data_schema(event_type)
    return Draft202012Validator(strict(schema))


def _where(prefix: str, error: ValidationError) -> str:
    """The path of the bad field: ``data.previous.paymentStatus``, ``data.changed[0]``."""
    path = prefix + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
    )
    return path.lstrip(".") or "(the event)"


def problems(event: Any) -> list[str]:
    """What in ``event`` breaks the contract, one ``TYPE: PATH: message`` line each; empty
    when it holds. Unlisted fields count (``strict``), and so does a type without a schema."""
    kind = event.get("type") if isinstance(event, dict) else None
    label = kind if isinstance(kind, str) else "(no type)"
    found = [f"{label}: {_where('', e)}: {e.message}" for e in _validator(None).iter_errors(event)]
    if not isinstance(kind, str) or not isinstance(event.get("data"), dict):
        return found
    if kind not in EVENT_TYPES:
        return [*found, f"{kind}: type: no schema describes this event type"]
    data_errors = _validator(kind).iter_errors(event["data"])
    return found + [f"{kind}: {_where('data', e)}: {e.message}" for e in data_errors]


def state_databases(root: Path) -> Iterator[Path]:
    """SQLite files under ``root`` (by their header, whatever their name)."""
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as file:
                    if file.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                        yield path
        except OSError:  # unreadable on purpose (a permissions test): not ours to check
            continue


def logged_events(path: Path) -> list[str]:
    """The bodies in ``path``'s events table (none when it has no such table)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        return [row[0] for row in db.execute("SELECT body FROM events ORDER BY seq")]
    except sqlite3.Error:  # not a state database, or one a test broke on purpose
        return []
    finally:
        db.close()


def hand_made(test_module: Path) -> bool:
    """Whether every event of ``test_module``'s tests is hand-made (``HAND_MADE_MODULES``,
    ``HAND_MADE_PACKAGES``)."""
    return test_module.name in HAND_MADE_MODULES or test_module.parent.name in HAND_MADE_PACKAGES


def made_by_the_code(event: Any) -> bool:
    """Whether ``event`` came out of the code, not out of a test's hand (see the docstring)."""
    data = event.get("data") if isinstance(event, dict) else None
    return isinstance(data, dict) and isinstance(data.get("object"), dict)


# Events checked in this session, by type (the summary at the end of a run shows them).
CHECKED: Counter[str] = Counter()


def contract_breaks(root: Path) -> tuple[int, list[str]]:
    """How many of the code's events the databases under ``root`` hold, and what in them breaks
    the contract (``database: TYPE: PATH: message``)."""
    checked, found = 0, []
    for path in state_databases(root):
        for body in logged_events(path):
            try:
                event = json.loads(body)
            except ValueError:
                found.append(f"{path.name}: an event body is not JSON: {body[:80]!r}")
                continue
            if made_by_the_code(event):
                checked += 1
                CHECKED[str(event.get("type"))] += 1
                found += [f"{path.relative_to(root)}: {p}" for p in problems(event)]
    return checked, found
