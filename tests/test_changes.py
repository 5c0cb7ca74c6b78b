"""Table tests of change detection: every event type, jumps, flip-flops, unknown values, gaps."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from drgreen_poller.changes import (
    ORDER_BASELINE,
    ORDER_TERMINAL_STATUSES,
    client_is_terminal,
    detect_client,
    detect_commissions,
    detect_order,
    detect_strain,
    order_is_terminal,
    strain_removed,
)
from drgreen_poller.models import parse_client, parse_commission_summary, parse_order, parse_strain


def _order(**fields: Any) -> Any:
    return parse_order({"id": "o-1", "createdAt": "2026-11-20T10:00:00.000Z", **fields})


def _client(**fields: Any) -> Any:
    return parse_client({"id": "c-1", "createdAt": "2026-11-20T10:00:00.000Z", **fields})


def _types(detection: Any) -> list[tuple[str, bool]]:
    return [(c.type, c.inferred) for c in detection.changes]


def _snap(order_status: str, approval: str, payment: str) -> dict[str, Any]:
    return {"orderStatus": order_status, "adminApproval": approval, "paymentStatus": payment}


class TestOrders:
    @pytest.mark.parametrize(
        ("before", "after", "expected"),
        [
            (
                ("PENDING", "PENDING", "PENDING"),
                ("PENDING", "VERIFIED", "PENDING"),
                ["order.approved"],
            ),
            (
                ("PENDING", "PENDING", "PENDING"),
                ("PENDING", "REJECTED", "PENDING"),
                ["order.rejected"],
            ),
            (("PENDING", "VERIFIED", "PENDING"), ("PENDING", "VERIFIED", "PAID"), ["order.paid"]),
            (
                ("PENDING", "VERIFIED", "PENDING"),
                ("PENDING", "VERIFIED", "COMPLETED"),
                ["order.paid"],
            ),
            (
                ("PENDING", "VERIFIED", "PENDING"),
                ("PENDING", "VERIFIED", "FAILED"),
                ["order.payment_failed"],
            ),
            (
                ("PENDING", "VERIFIED", "PAID"),
                ("PENDING", "VERIFIED", "REFUNDED"),
                ["order.refunded"],
            ),
            (
                ("PENDING", "VERIFIED", "PAID"),
                ("PENDING", "VERIFIED", "PENDING"),
                ["order.payment_status_changed"],
            ),
            (
                ("PENDING", "VERIFIED", "PENDING"),
                ("PENDING", "VERIFIED", "PROCESSING"),
                ["order.payment_status_changed"],
            ),
            (
                ("PENDING", "VERIFIED", "PAID"),
                ("PROCESSING", "VERIFIED", "PAID"),
                ["order.processing"],
            ),
            (
                ("PROCESSING", "VERIFIED", "PAID"),
                ("SHIPPED", "VERIFIED", "PAID"),
                ["order.shipped"],
            ),
            (
                ("SHIPPED", "VERIFIED", "PAID"),
                ("DELIVERED", "VERIFIED", "PAID"),
                ["order.delivered"],
            ),
            (
                ("PENDING", "VERIFIED", "PAID"),
                ("CANCELLED", "VERIFIED", "PAID"),
                ["order.cancelled"],
            ),
            (
                ("PENDING", "VERIFIED", "PAID"),
                ("ON_HOLD", "VERIFIED", "PAID"),
                ["order.status_changed"],
            ),
            (
                ("SHIPPED", "VERIFIED", "PAID"),
                ("PENDING", "VERIFIED", "PAID"),
                ["order.status_changed"],
            ),
            (
                ("PENDING", "PENDING", "PENDING"),
                ("PENDING", "ESCALATED", "PENDING"),
                ["order.approval_changed"],
            ),
            (
                ("PENDING", "VERIFIED", "PENDING"),
                ("PENDING", "VERIFIED", "ON_HOLD"),
                ["order.payment_status_changed"],
            ),
            (
                ("PENDING", "REJECTED", "PENDING"),
                ("PENDING", "VERIFIED", "PENDING"),
                ["order.approved"],
            ),
        ],
    )
    def test_single_steps(
        self, before: tuple[str, ...], after: tuple[str, ...], expected: list[str]
    ) -> None:
        """Each field move maps to its event; unknown values and regressions to *_changed."""
        detection = detect_order(
            _snap(*before),
            _order(orderStatus=after[0], adminApproval=after[1], paymentStatus=after[2]),
        )
        assert [c.type for c in detection.changes] == expected
        assert detection.snapshot == _snap(*after)

    def test_jump_to_delivered_emits_every_step_in_order(self) -> None:
        """PENDING→DELIVERED, approved and paid: approved, paid, shipped (inferred), delivered."""
        detection = detect_order(
            _snap("PENDING", "PENDING", "PENDING"),
            _order(orderStatus="DELIVERED", adminApproval="VERIFIED", paymentStatus="PAID"),
        )
        assert _types(detection) == [
            ("order.approved", False),
            ("order.paid", False),
            ("order.shipped", True),
            ("order.delivered", False),
        ]

    def test_from_an_unknown_status_forward(self) -> None:
        """From an undocumented status to DELIVERED is order.delivered, nothing inferred."""
        detection = detect_order(
            _snap("ON_HOLD", "VERIFIED", "PAID"), _order(orderStatus="DELIVERED")
        )
        assert _types(detection) == [("order.delivered", False)]

    def test_seen_shipped_is_not_inferred(self) -> None:
        """SHIPPED→DELIVERED emits only delivered: shipped was seen."""
        detection = detect_order(
            _snap("SHIPPED", "VERIFIED", "PAID"), _order(orderStatus="DELIVERED")
        )
        assert _types(detection) == [("order.delivered", False)]

    def test_missing_field_is_never_a_change(self) -> None:
        """A response without adminApproval or paymentStatus (recent, detail) changes nothing."""
        before = _snap("PENDING", "VERIFIED", "PAID")
        detection = detect_order(before, _order(orderStatus="PENDING"))
        assert detection.changes == []
        assert detection.snapshot == before

    def test_detail_without_approval_infers_it(self) -> None:
        """Fulfilment moves only on approved orders: shipped via detail implies approved."""
        detection = detect_order(_snap("PENDING", "PENDING", "PAID"), _order(orderStatus="SHIPPED"))
        assert _types(detection) == [("order.approved", True), ("order.shipped", False)]
        assert detection.snapshot["adminApproval"] == "VERIFIED"

    def test_flip_flop_paid_pending_paid(self) -> None:
        """PAID→PENDING→PAID emits payment_status_changed then paid again, nothing lost."""
        first = detect_order(_snap("PENDING", "VERIFIED", "PAID"), _order(paymentStatus="PENDING"))
        second = detect_order(first.snapshot, _order(paymentStatus="PAID"))
        assert [c.type for c in first.changes] == ["order.payment_status_changed"]
        assert [c.type for c in second.changes] == ["order.paid"]
        assert first.changes[0].previous == {"paymentStatus": "PAID"}

    def test_paid_to_completed_is_not_paid_twice(self) -> None:
        """Moving between the two 'paid' words is a status change, not a second payment."""
        detection = detect_order(
            _snap("PENDING", "VERIFIED", "PAID"), _order(paymentStatus="COMPLETED")
        )
        assert [c.type for c in detection.changes] == ["order.payment_status_changed"]

    def test_first_seen_is_created_then_transitions_from_creation(self) -> None:
        """A new order is created, then whatever moved since Dr Green created it PENDING."""
        detection = detect_order(
            None, _order(orderStatus="PENDING", adminApproval="VERIFIED", paymentStatus="PENDING")
        )
        assert [c.type for c in detection.changes] == ["order.created", "order.approved"]
        assert detection.changes[0].occurred_at == "2026-11-20T10:00:00.000Z"

    def test_first_seen_pending_is_only_created(self) -> None:
        """A brand-new order is just order.created."""
        detection = detect_order(
            None, _order(orderStatus="PENDING", adminApproval="PENDING", paymentStatus="PENDING")
        )
        assert [c.type for c in detection.changes] == ["order.created"]
        assert detection.snapshot == ORDER_BASELINE

    def test_occurred_at_prefers_upstream_time(self) -> None:
        """occurred_at is verifiedAt for an approval when present, else updatedAt, else None."""
        approved = detect_order(
            _snap("PENDING", "PENDING", "PENDING"),
            _order(adminApproval="VERIFIED", verifiedAt="2026-11-21T09:00:00.000Z"),
        )
        assert approved.changes[0].occurred_at == "2026-11-21T09:00:00.000Z"
        paid = detect_order(_snap("PENDING", "VERIFIED", "PENDING"), _order(paymentStatus="PAID"))
        assert paid.changes[0].occurred_at is None

    @pytest.mark.parametrize(
        ("snapshot", "terminal"),
        [
            (_snap("DELIVERED", "VERIFIED", "PAID"), True),
            (_snap("CANCELLED", "VERIFIED", "PENDING"), True),
            (_snap("PENDING", "REJECTED", "PENDING"), True),
            (_snap("SHIPPED", "VERIFIED", "PAID"), False),
            (_snap("PENDING", "VERIFIED", "PAID"), False),
        ],
    )
    def test_terminal(self, snapshot: dict[str, Any], terminal: bool) -> None:
        """Rejected, delivered and cancelled orders leave the active set; shipped ones stay."""
        assert order_is_terminal(snapshot, ORDER_TERMINAL_STATUSES) is terminal


class TestClients:
    BASE: ClassVar[dict[str, Any]] = {
        "isKYCVerified": False,
        "adminApproval": "PENDING",
        "isActive": False,
        "kycCompleted": False,
    }

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"isKYCVerified": True}, ["client.kyc.verified"]),
            ({"adminApproval": "VERIFIED"}, ["client.kyc.approved"]),
            ({"adminApproval": "REJECTED"}, ["client.kyc.rejected"]),
            ({"adminApproval": "ON_REVIEW"}, ["client.kyc.approval_changed"]),
            ({"isActive": True}, ["client.activated"]),
            (
                {"isKYCVerified": True, "adminApproval": "VERIFIED", "isActive": True},
                [
                    "client.kyc.verified",
                    "client.kyc.approved",
                    "client.kyc.completed",
                    "client.activated",
                ],
            ),
        ],
    )
    def test_steps(self, fields: dict[str, Any], expected: list[str]) -> None:
        """KYC gates, approval and activation each map to their event, in lifecycle order."""
        assert [
            c.type for c in detect_client(dict(self.BASE), _client(**fields)).changes
        ] == expected

    def test_completed_only_once(self) -> None:
        """kyc.completed fires the first time both gates hold, never again after a flip-flop."""
        done = detect_client(dict(self.BASE), _client(isKYCVerified=True, adminApproval="VERIFIED"))
        back = detect_client(done.snapshot, _client(adminApproval="PENDING"))
        again = detect_client(back.snapshot, _client(adminApproval="VERIFIED"))
        assert "client.kyc.completed" in [c.type for c in done.changes]
        assert [c.type for c in again.changes] == ["client.kyc.approved"]

    def test_gates_in_either_order(self) -> None:
        """Approval first, verification later: completed comes with the second gate."""
        approved = detect_client(dict(self.BASE), _client(adminApproval="VERIFIED"))
        verified = detect_client(approved.snapshot, _client(isKYCVerified=True))
        assert [c.type for c in verified.changes] == ["client.kyc.verified", "client.kyc.completed"]

    def test_deactivated_and_missing_fields(self) -> None:
        """isActive flipping off is deactivated; fields a response lacks change nothing."""
        active = {**self.BASE, "isActive": True}
        assert [c.type for c in detect_client(active, _client(isActive=False)).changes] == [
            "client.deactivated"
        ]
        assert detect_client(active, _client()).changes == []

    def test_first_seen(self) -> None:
        """A new client is created (plus anything already true of it)."""
        detection = detect_client(
            None, _client(isKYCVerified=False, adminApproval="PENDING", isActive=False)
        )
        assert [c.type for c in detection.changes] == ["client.created"]

    def test_verification_regression_is_reported(self) -> None:
        """isKYCVerified going back to false (no source path) is still an event, not silence."""
        verified = {**self.BASE, "isKYCVerified": True}
        assert [c.type for c in detect_client(verified, _client(isKYCVerified=False)).changes] == [
            "client.kyc.verification_changed"
        ]

    @pytest.mark.parametrize(
        ("snapshot", "terminal"),
        [
            ({"kycCompleted": True}, True),
            ({"adminApproval": "REJECTED"}, True),
            ({"adminApproval": "PENDING"}, False),
        ],
    )
    def test_terminal(self, snapshot: dict[str, Any], terminal: bool) -> None:
        """A KYC-complete or rejected client leaves the active set."""
        assert client_is_terminal(snapshot) is terminal


class TestCommissions:
    @staticmethod
    def _summary(total: float, paid: float, eth: float = 0.004) -> Any:
        return parse_commission_summary(
            {
                "commissionSummary": {
                    "PENDING": {"amountInDollar": total - paid, "amountInEth": eth},
                    "PAID": {"amountInDollar": paid, "amountInEth": eth / 2},
                    "totalInDollar": total,
                }
            }
        )

    def test_first_observation_is_a_baseline(self) -> None:
        """The first summary records a baseline and emits nothing."""
        assert detect_commissions(None, self._summary(10, 0)).changes == []

    def test_accrued_with_amounts(self) -> None:
        """A rising USD total is commission.accrued with previous, current and delta."""
        base = detect_commissions(None, self._summary(12.5, 3.59)).snapshot
        change = detect_commissions(base, self._summary(16.09, 3.59)).changes[0]
        assert change.type == "commission.accrued"
        assert dict(change.extra) == {
            "amounts": {"currency": "USD", "previous": 12.5, "current": 16.09, "delta": 3.59}
        }
        assert change.previous == {"totalUsd": 12.5}

    def test_paid(self) -> None:
        """A rising PAID amount is commission.paid."""
        base = detect_commissions(None, self._summary(16.09, 3.59)).snapshot
        assert [c.type for c in detect_commissions(base, self._summary(16.09, 16.09)).changes] == [
            "commission.paid"
        ]

    def test_eth_drift_is_not_a_change(self) -> None:
        """Only USD counts: a moved ETH price emits nothing."""
        base = detect_commissions(None, self._summary(10, 1, eth=0.004)).snapshot
        assert detect_commissions(base, self._summary(10, 1, eth=0.005)).changes == []

    def test_fall_is_adjusted(self) -> None:
        """A falling total is reported as commission.adjusted."""
        base = detect_commissions(None, self._summary(10, 0)).snapshot
        assert [c.type for c in detect_commissions(base, self._summary(8, 0)).changes] == [
            "commission.adjusted"
        ]


class TestStrains:
    RAW: ClassVar[dict[str, Any]] = {
        "id": "s-1",
        "name": "Blue Dream",
        "retailPrice": 10,
        "isAvailable": True,
        "isActive": True,
        "strainLocations": [{"stockQuantity": 300}],
    }

    def test_created_then_updated_with_fields(self) -> None:
        """A new strain is created; a price and stock change is one update listing both."""
        created = detect_strain(None, parse_strain(self.RAW))
        changed = {**self.RAW, "retailPrice": 12, "strainLocations": [{"stockQuantity": 250}]}
        updated = detect_strain(created.snapshot, parse_strain(changed))
        assert [c.type for c in created.changes] == ["strain.created"]
        assert [c.type for c in updated.changes] == ["strain.updated"]
        assert updated.changes[0].extra == {"changed": ["retailPrice", "stockQuantity"]}
        assert updated.changes[0].previous == {"retailPrice": 10, "stockQuantity": 300}

    def test_unchanged_and_removed(self) -> None:
        """No change emits nothing; a removal carries the last known values."""
        created = detect_strain(None, parse_strain(self.RAW))
        assert detect_strain(created.snapshot, parse_strain(self.RAW)).changes == []
        removed = strain_removed(created.snapshot)
        assert removed.type == "strain.removed"
        assert removed.previous["retailPrice"] == 10
