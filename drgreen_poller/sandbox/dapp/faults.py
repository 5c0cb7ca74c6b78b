"""Fault specifications and the choice of which fault, if any, hits a request.

Owns the parsing and validation of fault specs, their remaining budget (``count``) and their
seeded draws (``fraction``). Pure: it never builds a response (``gateway.py`` does) and never
touches aiohttp.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drgreen_poller.sandbox.world.inputs import (
    as_choice,
    as_int,
    as_non_negative,
    as_number,
    as_str,
    check_keys,
)
from drgreen_poller.sandbox.world.model import InvalidInput, UnknownEntity

FAULT_KINDS = ("rate_limit", "server_error", "slow", "malformed", "truncated", "reset")
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
BODY_STYLES = ("json", "html", "text")
RETRY_AFTER_FORMATS = ("seconds", "http-date")
UNMATCHED = "unmatched"
_COMMON_KEYS = ("kind", "count", "fraction", "seed", "endpoint", "holder")
_KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "rate_limit": ("retry_after", "retry_after_format", "body"),
    "server_error": ("status", "retry_after", "retry_after_format", "body"),
    "slow": ("delay_s",),
    "malformed": (),
    "truncated": ("keep_fraction",),
    "reset": (),
}
DEFAULT_RATE_LIMIT_RETRY_AFTER_S = 2
DEFAULT_DELAY_S = 1.0
DEFAULT_KEEP_FRACTION = 0.5


@dataclass(slots=True)
class Fault:
    """One active fault: what it does, which requests it may hit, and how many remain.

    ``remaining`` is ``None`` when only ``fraction`` limits it; ``fraction`` is ``None`` when
    every matching request is hit until ``remaining`` runs out.
    """

    id: int
    kind: str
    remaining: int | None = 1
    fraction: float | None = None
    seed: int = 0
    endpoint: str | None = None
    holder: str | None = None
    status: int = 500
    body: str = "json"
    retry_after_s: int | None = None
    retry_after_format: str = "seconds"
    delay_s: float = DEFAULT_DELAY_S
    keep_fraction: float = DEFAULT_KEEP_FRACTION
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def applies_to(self, endpoint: str, holder: str) -> bool:
        """Whether the endpoint and holder filters let this fault see the request."""
        if self.holder is not None and self.holder != holder:
            return False
        return self.endpoint is None or fnmatch.fnmatchcase(endpoint, self.endpoint)

    def draw(self) -> bool:
        """Decide whether this request is hit, spending the budget if it is."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.fraction is not None and self.rng.random() >= self.fraction:
            return False
        self.fired += 1
        if self.remaining is not None:
            self.remaining -= 1
        return True

    @property
    def exhausted(self) -> bool:
        """Whether the count budget is spent."""
        return self.remaining is not None and self.remaining <= 0

    def as_dict(self) -> dict[str, Any]:
        """The fault as the control API lists it."""
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "remaining": self.remaining,
            "fraction": self.fraction,
            "seed": self.seed,
            "fired": self.fired,
            "endpoint": self.endpoint,
            "holder": self.holder,
        }
        if self.kind in ("rate_limit", "server_error"):
            data.update(
                status=self.status,
                body=self.body,
                retry_after=self.retry_after_s,
                retry_after_format=self.retry_after_format,
            )
        elif self.kind == "slow":
            data["delay_s"] = self.delay_s
        elif self.kind == "truncated":
            data["keep_fraction"] = self.keep_fraction
        return data


def _budget(fault: Fault, spec: Mapping[str, Any]) -> None:
    if "count" in spec:
        fault.remaining = as_int(spec["count"], "count", minimum=1)
    if "fraction" in spec:
        fraction = as_number(spec["fraction"], "fraction")
        if not 0 < fraction <= 1:
            raise InvalidInput("fraction must be greater than 0 and at most 1")
        fault.fraction = fraction
        fault.remaining = fault.remaining if "count" in spec else None
    fault.seed = as_int(spec.get("seed", 0), "seed")
    fault.rng = random.Random(fault.seed)


def _filters(fault: Fault, spec: Mapping[str, Any], endpoints: Sequence[str]) -> None:
    if spec.get("endpoint") is not None:
        pattern = as_str(spec["endpoint"], "endpoint")
        if not any(fnmatch.fnmatchcase(e, pattern) for e in [*endpoints, UNMATCHED]):
            known = "; ".join([*endpoints, UNMATCHED])
            raise InvalidInput(f"endpoint {pattern!r} matches no endpoint; endpoints: {known}")
        fault.endpoint = pattern
    if spec.get("holder") is not None:
        fault.holder = as_str(spec["holder"], "holder")


def _retry_after(fault: Fault, spec: Mapping[str, Any], default: int | None) -> None:
    value = spec.get("retry_after", default)
    fault.retry_after_s = None if value is None else as_int(value, "retry_after", minimum=0)
    fault.retry_after_format = as_choice(
        spec.get("retry_after_format", "seconds"), "retry_after_format", RETRY_AFTER_FORMATS
    )


def _kind_parameters(fault: Fault, spec: Mapping[str, Any]) -> None:
    if fault.kind == "rate_limit":
        fault.status = 429
        fault.body = as_choice(spec.get("body", "json"), "body", BODY_STYLES)
        _retry_after(fault, spec, DEFAULT_RATE_LIMIT_RETRY_AFTER_S)
    elif fault.kind == "server_error":
        status = spec.get("status", 500)
        if status not in SERVER_ERROR_STATUSES or isinstance(status, bool):
            raise InvalidInput("status must be one of: 500, 502, 503, 504")
        fault.status = int(status)
        fault.body = as_choice(spec.get("body", "json"), "body", BODY_STYLES)
        _retry_after(fault, spec, None)
    elif fault.kind == "slow":
        fault.delay_s = as_non_negative(spec.get("delay_s", DEFAULT_DELAY_S), "delay_s")
    elif fault.kind == "truncated":
        keep = as_number(spec.get("keep_fraction", DEFAULT_KEEP_FRACTION), "keep_fraction")
        if not 0 <= keep < 1:
            raise InvalidInput("keep_fraction must be at least 0 and less than 1")
        fault.keep_fraction = keep


def parse_fault(spec: Mapping[str, Any], fault_id: int, endpoints: Sequence[str]) -> Fault:
    """Build a fault from its control-API spec.

    Args:
        spec: ``{"kind": ..., "count": N}`` and/or ``"fraction"`` (+ ``"seed"``), optional
            ``"endpoint"`` (a glob over endpoint templates such as ``GET /dapp/orders``) and
            ``"holder"``, plus the kind's own parameters.
        fault_id: the id to give it.
        endpoints: the known endpoint templates, to catch typos in ``endpoint``.

    Raises:
        InvalidInput: unknown kind, a parameter that does not apply, or a bad value.
    """
    kind = as_choice(spec.get("kind"), "kind", FAULT_KINDS)
    check_keys(dict(spec), [*_COMMON_KEYS, *_KIND_KEYS[kind]], f"a {kind} fault")
    fault = Fault(id=fault_id, kind=kind)
    _budget(fault, spec)
    _filters(fault, spec, endpoints)
    _kind_parameters(fault, spec)
    return fault


class FaultBook:
    """The active faults, in the order they were added; the first one that fires wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, spec: Mapping[str, Any], endpoints: Sequence[str]) -> Fault:
        """Validate and activate a fault (see ``parse_fault``)."""
        fault = parse_fault(spec, self._next_id, endpoints)
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def active(self) -> list[Fault]:
        """The faults that can still fire."""
        return list(self._faults)

    def remove(self, fault_id: int) -> None:
        """Deactivate one fault.

        Raises:
            UnknownEntity: no active fault has that id.
        """
        for fault in self._faults:
            if fault.id == fault_id:
                self._faults.remove(fault)
                return
        raise UnknownEntity("fault", str(fault_id))

    def clear(self) -> None:
        """Deactivate every fault."""
        self._faults.clear()

    def pick(self, endpoint: str, holder: str) -> Fault | None:
        """The fault that hits this request, if any; spent faults leave the book."""
        for fault in self._faults:
            if fault.applies_to(endpoint, holder) and fault.draw():
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
        return None
