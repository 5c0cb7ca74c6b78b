"""The event envelope of design §3.6 and its deterministic id. Pure.

Owns the wire shape receivers rely on (``id``, ``type``, ``holder``, ``resource``, ``sequence``,
``inferred``, ``observed_at``, ``occurred_at``, ``data``; ``test`` on ``trigger``'s samples only)
and how an id is derived, so that a re-poll after a crash yields the same id. It must not decide
*which* events happen (``changes.py``) nor store them (``store.py``).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drgreen_poller.changes import Change

# What marks a sample sent by ``drgreen-poller trigger`` (never present on a real event).
TEST_MARK = {"test": True}


@dataclass(frozen=True, slots=True)
class Resource:
    """What an event is about. ``key`` is unique per holder (a strain is per country)."""

    type: str
    id: str
    country: str | None = None

    @property
    def key(self) -> str:
        return f"{self.type}:{self.country}:{self.id}" if self.country else f"{self.type}:{self.id}"

    def as_json(self) -> dict[str, str]:
        shown = {"type": self.type, "id": self.id}
        if self.country:
            shown["country"] = self.country
        return shown


def event_id(
    holder: str, resource: Resource, event_type: str, moved_to: Mapping[str, Any], sequence: int
) -> str:
    """``evt_`` + 26 base32 characters (130 bits) of SHA-256 over the transition itself.

    The transition is: the holder, the resource, the event type, the values it moved to, and
    its position (the resource's ``sequence``). Derived again from the same state by the same
    run (a commit retried) it is the same id; the id a commit stores is the one every delivery
    attempt sends. Two different events of a resource differ in type, in values or in sequence,
    and sequences are never reused, even after the state was lost or restored (see
    ``store.lineage`` and the README's "Guarantees"), so two different events never share an id.
    """
    values = json.dumps(moved_to, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    text = "\x1f".join((holder, resource.key, event_type, values, str(sequence)))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return "evt_" + base64.b32encode(digest).decode("ascii").lower()[:26]


def iso_ms(moment: datetime) -> str:
    """``2026-11-23T10:00:03.512Z``: UTC with milliseconds, as Dr Green writes timestamps."""
    # isoformat, not strftime: this runs several times per delivered event.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def envelope(
    *,
    holder: str,
    resource: Resource,
    sequence: int,
    change: Change,
    observed_at: datetime,
    obj: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON object delivered to every sink for one event."""
    data: dict[str, Any] = {"object": obj, "previous": dict(change.previous)}
    clash = data.keys() & change.extra.keys()
    if clash:
        raise ValueError(f"event extras may not replace {sorted(clash)}")
    data.update(change.extra)
    return {
        "id": event_id(holder, resource, change.type, change.current, sequence),
        "type": change.type,
        "holder": holder,
        "resource": resource.as_json(),
        "sequence": sequence,
        "inferred": change.inferred,
        **(TEST_MARK if change.test else {}),
        "observed_at": iso_ms(observed_at),
        "occurred_at": change.occurred_at,
        "data": data,
    }


def encode(event: Mapping[str, Any]) -> str:
    """The exact text stored and sent: compact UTF-8 JSON, keys in envelope order."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def matches(event_type: str, patterns: Iterable[str]) -> bool:
    """Whether a sink's ``events`` glob patterns select ``event_type``."""
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in patterns)
