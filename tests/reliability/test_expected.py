"""The suite's own checks: they must accept what the promises allow and flag everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.reliability.daemon_process import shows_a_crash
from tests.reliability.expected import (
    History,
    check_deliveries,
    client_step,
    order_step,
    stale_arrivals,
)
from tests.reliability.receiver import Arrival

P, V, R = "PENDING", "VERIFIED", "REJECTED"


def order(approval: str = P, payment: str = P, status: str = P) -> dict[str, Any]:
    return {"adminApproval": approval, "paymentStatus": payment, "orderStatus": status}


def arrival(
    event_id: str, kind: str, sequence: int, state: dict[str, Any], inferred: bool = False
) -> Arrival:
    """A verified arrival of an order event."""
    event = {"id": event_id, "type": kind, "resource": {"type": "order", "id": "o1"},
             "sequence": sequence, "inferred": inferred, "data": {"object": state}}  # fmt: skip
    return Arrival(event_id, event, json.dumps(event).encode(), 0.0)


HISTORY = History("order", "o1", [order(), order(V), order(V, "COMPLETED")])
CLEAN = [
    arrival("e1", "order.created", 1, order()),
    arrival("e2", "order.approved", 2, order(V)),
    arrival("e3", "order.paid", 3, order(V, "COMPLETED")),
]


class TestLifecycleTable:
    @pytest.mark.parametrize(
        ("old", "new", "events"),
        [
            (order(V), order(V, status="DELIVERED"),
             [("order.shipped", True), ("order.delivered", False)]),
            (order(V, status="SHIPPED"), order(V, status="DELIVERED"),
             [("order.delivered", False)]),
            (order(V, "COMPLETED"), order(V), [("order.payment_status_changed", False)]),
            (order(V, "COMPLETED"), order(V, "REFUNDED"), [("order.refunded", False)]),
            (order(), order(R), [("order.rejected", False)]),
        ],
    )  # fmt: skip
    def test_order_steps(
        self, old: dict[str, Any], new: dict[str, Any], events: list[tuple[str, bool]]
    ) -> None:
        """Each order step gives the events of design §3.6, an unseen shipping inferred."""
        assert order_step(old, new) == events

    def test_client_approval_completes_and_activates(self) -> None:
        """Approving a KYC-verified, inactive client: approved, completed, activated."""
        old = {"isKYCVerified": True, "adminApproval": P, "isActive": False}
        new = {"isKYCVerified": True, "adminApproval": V, "isActive": True}
        assert [kind for kind, _ in client_step(old, new)] == [
            "client.kyc.approved", "client.kyc.completed", "client.activated",
        ]  # fmt: skip


class TestCheckDeliveries:
    def test_clean_run_with_repeats_passes(self) -> None:
        """Every transition once, some repeated under the same id: no problem."""
        assert check_deliveries([HISTORY], [*CLEAN, CLEAN[1], CLEAN[0]]) == []

    def test_a_missing_transition_is_flagged(self) -> None:
        """A transition that never arrived is reported with the resource's states."""
        [problem] = check_deliveries([HISTORY], CLEAN[:2])
        assert problem.startswith("order o1: expected [order.created; order.approved; order.paid]")

    def test_a_transition_under_two_ids_is_flagged(self) -> None:
        """The same transition delivered under a second id is an extra event."""
        again = arrival("e9", "order.paid", 4, order(V, "COMPLETED"))
        assert any("expected" in p for p in check_deliveries([HISTORY], [*CLEAN, again]))

    def test_an_id_naming_two_events_is_flagged(self) -> None:
        """One id carrying two different events is reported."""
        reused = arrival("e1", "order.paid", 3, order(V, "COMPLETED"))
        problems = check_deliveries([HISTORY], [*CLEAN[:2], reused])
        assert problems[0].startswith("id e1 named two different events")

    def test_out_of_order_arrivals_are_flagged(self) -> None:
        """A later sequence arriving before an earlier one breaks per-resource order."""
        problems = check_deliveries([HISTORY], [CLEAN[0], CLEAN[2], CLEAN[1]])
        assert problems == ["order o1: first arrivals out of sequence order: [1, 3, 2]"]

    def test_an_invented_resource_is_flagged(self) -> None:
        """Events for a resource the driver never made are invented."""
        problems = check_deliveries([], CLEAN[:1])
        assert problems[0].startswith("invented: events for order o1")

    def test_sequences_only_need_to_rise(self) -> None:
        """Sequences may start anywhere and jump (each start numbers above a floor)."""
        jumps = [arrival(a.id, a.event["type"], a.event["sequence"] * 1000,
                         a.event["data"]["object"]) for a in CLEAN]  # fmt: skip
        assert check_deliveries([HISTORY], jumps) == []

    def test_two_events_with_one_sequence_are_flagged(self) -> None:
        """Two distinct events of a resource never share a sequence."""
        twin = arrival("e3", "order.paid", 2, order(V, "COMPLETED"))
        problems = check_deliveries([HISTORY], [*CLEAN[:2], twin])
        assert problems[0] == "order o1: two events share a sequence: [1, 2, 2]"

    def test_a_wrong_state_is_flagged(self) -> None:
        """The right type carrying the wrong object state is not the transition."""
        wrong = arrival("e3", "order.paid", 3, order(V, "PAID"))
        assert check_deliveries([HISTORY], [*CLEAN[:2], wrong]) != []


class TestStaleArrivals:
    def test_repeats_before_the_next_event_pass(self) -> None:
        """An event repeated (a retry after a crash) before its resource's next one: fine."""
        assert stale_arrivals([CLEAN[0], CLEAN[1], CLEAN[1], CLEAN[2], CLEAN[2]]) == []

    def test_a_repeat_after_a_later_event_is_flagged(self) -> None:
        """An event arriving again, under its own id, after its resource's later event is a
        stale send (what an instance resumed from a pause would send)."""
        [problem] = stale_arrivals([*CLEAN, CLEAN[1]])
        assert problem.startswith("order o1: #2 order.approved")
        assert "(id e2) arrived after #3 order.paid" in problem

    def test_other_resources_do_not_count(self) -> None:
        """Another resource's later sequence makes no event of this one stale."""
        other = arrival("x9", "order.paid", 9, order(V, "COMPLETED"))
        other.event["resource"]["id"] = "o2"
        assert stale_arrivals([CLEAN[0], other, CLEAN[1]]) == []


class TestCrashLines:
    @pytest.mark.parametrize(
        ("line", "crash"),
        [
            ('{"event": "poll_finished", "level": "info"}', False),
            ('{"event": "poll_failed", "level": "warning", "error": "HTTP 503"}', False),
            ('{"event": "poll_crashed", "level": "error"}', True),
            ('{"event": "x", "exception": [{"exc_type": "KeyError", "frames": []}]}', True),
            ("Traceback (most recent call last):", True),
            ('{"harness": "run 2"}', False),
        ],
    )
    def test_lines(self, line: str, crash: bool) -> None:
        """Printed tracebacks, JSON exceptions and loop-boundary failures count as crashes."""
        assert shows_a_crash(line) is crash
