"""Property tests of change detection (issue 7, point 11d): random sequences of order, client
and strain sweeps go through detection as the poller feeds it; replaying the events it emits,
from nothing but the events, must reach the state it stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from drgreen_poller.models import parse_client, parse_order, parse_strain
from tests.reliability.properties import (
    PROPERTY,
    PROPERTY_TIMEOUT_S,
    client_records,
    order_records,
    strain_sweeps,
)


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
