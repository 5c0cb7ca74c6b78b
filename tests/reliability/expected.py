"""What a receiver must get for a known upstream history, and the check of what it got.

Owns an independent statement of the lifecycle table of design §3.6 (written from the spec, not
imported from ``drgreen_poller.changes``, so a defect there cannot hide itself), the expected
events of a resource whose every state was observable, and the comparison with the verified
webhook arrivals: one id per transition, nothing invented, per-resource order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.receiver import Arrival

State = Mapping[str, Any]
ORDER_FIELDS = ("adminApproval", "paymentStatus", "orderStatus")
CLIENT_FIELDS = ("isKYCVerified", "adminApproval", "isActive")
# What Dr Green creates: the baseline of a resource's first observation.
BASELINES: Mapping[str, State] = {
    "order": {"adminApproval": "PENDING", "paymentStatus": "PENDING", "orderStatus": "PENDING"},
    "client": {"isKYCVerified": False, "adminApproval": "PENDING", "isActive": False},
}
PAID = frozenset({"PAID", "COMPLETED"})
STATUS_EVENTS = {"PROCESSING": "order.processing", "SHIPPED": "order.shipped",
                 "DELIVERED": "order.delivered", "CANCELLED": "order.cancelled"}  # fmt: skip
# Delivery implies shipping: reached from these without being seen SHIPPED, it is inferred.
SHIPPED_UNSEEN_FROM = frozenset({"PENDING", "PROCESSING"})


def fields_of(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The lifecycle fields of an order or client record."""
    names = ORDER_FIELDS if kind == "order" else CLIENT_FIELDS
    return {name: record.get(name) for name in names}


def order_terminal(state: State) -> bool:
    """Rejected, delivered or cancelled: the poller stops watching (design §3.4)."""
    return state["adminApproval"] == "REJECTED" or state["orderStatus"] in (
        "DELIVERED",
        "CANCELLED",
    )


def client_terminal(state: State) -> bool:
    """Rejected, or through both KYC gates: the poller stops watching."""
    return state["adminApproval"] == "REJECTED" or (
        state["isKYCVerified"] is True and state["adminApproval"] == "VERIFIED"
    )


def _payment_event(old: str, new: str) -> str:
    if new in PAID and old not in PAID:
        return "order.paid"
    return {"FAILED": "order.payment_failed", "REFUNDED": "order.refunded"}.get(
        new, "order.payment_status_changed"
    )


def order_step(old: State, new: State) -> list[tuple[str, bool]]:
    """Events of one observed order step, in lifecycle order: approval, payment, fulfilment."""
    events: list[tuple[str, bool]] = []
    if new["adminApproval"] != old["adminApproval"]:
        kind = {"VERIFIED": "order.approved", "REJECTED": "order.rejected"}
        events.append((kind.get(new["adminApproval"], "order.approval_changed"), False))
    if new["paymentStatus"] != old["paymentStatus"]:
        events.append((_payment_event(old["paymentStatus"], new["paymentStatus"]), False))
    if new["orderStatus"] != old["orderStatus"]:
        if new["orderStatus"] == "DELIVERED" and old["orderStatus"] in SHIPPED_UNSEEN_FROM:
            events.append(("order.shipped", True))
        events.append((STATUS_EVENTS[new["orderStatus"]], False))
    return events


def client_step(old: State, new: State) -> list[tuple[str, bool]]:
    """Events of one observed client step: KYC, approval, completion, activation."""
    events: list[tuple[str, bool]] = []
    if new["isKYCVerified"] != old["isKYCVerified"]:
        events.append(("client.kyc.verified", False))
    if new["adminApproval"] != old["adminApproval"]:
        kind = {"VERIFIED": "client.kyc.approved", "REJECTED": "client.kyc.rejected"}
        events.append((kind.get(new["adminApproval"], "client.kyc.approval_changed"), False))
    if client_terminal(new) and new["adminApproval"] == "VERIFIED" and not client_terminal(old):
        events.append(("client.kyc.completed", False))
    if new["isActive"] != old["isActive"]:
        events.append(("client.activated" if new["isActive"] else "client.deactivated", False))
    return events


@dataclass(frozen=True, slots=True)
class Expected:
    """One event a receiver must get: its type, whether inferred, and the state it reports."""

    type: str
    inferred: bool
    state: State


@dataclass
class History:
    """Every state an upstream resource went through, each held long enough to be observed."""

    kind: str
    id: str
    states: list[dict[str, Any]] = field(default_factory=list)

    def expected(self) -> list[Expected]:
        """The events a poller that saw every state must emit, in sequence order."""
        step = order_step if self.kind == "order" else client_step
        events = [Expected(f"{self.kind}.created", False, self.states[0])]
        previous: State = BASELINES[self.kind]
        for state in self.states:
            events += [Expected(kind, inferred, state) for kind, inferred in step(previous, state)]
            previous = state
        return events


def _same_bodies(arrivals: Iterable[Arrival]) -> list[str]:
    """Every repeat of a ``webhook-id`` must carry the same event."""
    first: dict[str, Arrival] = {}
    problems = []
    for arrival in arrivals:
        seen = first.setdefault(arrival.id, arrival)
        if seen.event != arrival.event:
            problems.append(f"id {arrival.id} named two different events: {seen.event['type']} "
                            f"seq {seen.event['sequence']} and {arrival.event['type']} "
                            f"seq {arrival.event['sequence']}")  # fmt: skip
    return problems


def distinct_by_resource(arrivals: Iterable[Arrival]) -> dict[tuple[str, str], list[Arrival]]:
    """Per resource, the first arrival of each distinct id, in arrival order."""
    seen: set[str] = set()
    grouped: dict[tuple[str, str], list[Arrival]] = {}
    for arrival in arrivals:
        if arrival.id in seen:
            continue
        seen.add(arrival.id)
        resource = arrival.event["resource"]
        grouped.setdefault((resource["type"], resource["id"]), []).append(arrival)
    return grouped


def _describe(event: Mapping[str, Any]) -> str:
    state = fields_of(event["resource"]["type"], event["data"]["object"])
    inferred = " (inferred)" if event.get("inferred") else ""
    return f"#{event['sequence']} {event['type']}{inferred} {json.dumps(state)}"


def _compare(history: History, got: Sequence[Arrival]) -> list[str]:
    where = f"{history.kind} {history.id}"
    sequences = [a.event["sequence"] for a in got]
    problems = []
    if len(set(sequences)) != len(sequences):
        problems.append(f"{where}: two events share a sequence: {sequences}")
    elif sequences != sorted(sequences):
        problems.append(f"{where}: first arrivals out of sequence order: {sequences}")
    events = sorted((a.event for a in got), key=lambda e: e["sequence"])
    want = [(e.type, e.inferred, dict(e.state)) for e in history.expected()]
    have = [(e["type"], bool(e.get("inferred")), fields_of(history.kind, e["data"]["object"]))
            for e in events]  # fmt: skip
    if want != have:
        expected_text = "; ".join(f"{t}{' (inferred)' if i else ''}" for t, i, _ in want)
        got_text = "; ".join(_describe(e) for e in events)
        states = " -> ".join(json.dumps(s) for s in history.states)
        problems.append(f"{where}: expected [{expected_text}], got [{got_text}]; states {states}")
    return problems


def check_deliveries(histories: Iterable[History], arrivals: Sequence[Arrival]) -> list[str]:
    """Every problem with what a receiver got for these histories (empty when all is well).

    Each transition must arrive under exactly one id (repeats of that id allowed, always with
    the same event), nothing may arrive that no history explains, and per resource the first
    arrivals of distinct ids come in increasing ``sequence``.
    """
    problems = _same_bodies(arrivals)
    grouped = distinct_by_resource(arrivals)
    known = {(h.kind, h.id): h for h in histories}
    for key, got in grouped.items():
        if key not in known:
            problems.append(f"invented: events for {key[0]} {key[1]}, which the driver never made: "
                            + "; ".join(_describe(a.event) for a in got))  # fmt: skip
    for key, history in known.items():
        problems += _compare(history, grouped.get(key, []))
    return problems


def stale_arrivals(arrivals: Sequence[Arrival]) -> list[str]:
    """Arrivals of a resource's event after a later event of that resource had arrived, a
    repeat under its own id included: a receiver that drops stale events by ``sequence`` would
    take it for one, and one that does not would act on an old state. A crashed daemon's retry
    never does that (a resource's next event waits until the earlier one is recorded); an
    instance resumed from a pause that sends rows it claimed before would (several instances)."""
    latest: dict[tuple[str, str], Arrival] = {}
    problems = []
    for arrival in arrivals:
        resource = arrival.event["resource"]
        key = (resource["type"], resource["id"])
        newest = latest.get(key)
        if newest is None or arrival.event["sequence"] >= newest.event["sequence"]:
            latest[key] = arrival
            continue
        problems.append(f"{key[0]} {key[1]}: {_describe(arrival.event)} (id {arrival.id}) arrived "
                        f"after {_describe(newest.event)} (id {newest.id})")  # fmt: skip
    return problems
