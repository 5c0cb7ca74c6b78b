"""``SandboxState`` in-process: identities, lifecycle rules, timestamps and the demo seed."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import (
    InvalidInput,
    SandboxState,
    StateConflict,
    UnknownEntity,
    seed_demo,
)
from drgreen_poller.sandbox.world.model import HolderInfo


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    """An empty world, seeded (the ids below are this seed's)."""
    return SandboxState(clock, seed=3)


class TestIdentities:
    def test_ids_are_uuid4_and_seeded(self, clock: FakeClock) -> None:
        """Ids are UUID v4 strings drawn from the seed, so two worlds with one seed agree."""
        first, second = SandboxState(clock, seed=5), SandboxState(clock, seed=5)
        ids = [first.tables.new_id() for _ in range(3)]
        assert ids == [second.tables.new_id() for _ in range(3)]
        assert all(uuid.UUID(i).version == 4 for i in ids)

    def test_timestamps_come_from_the_clock(
        self, state: SandboxState, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Stored times are the clock's, to the millisecond, and changes bump updatedAt."""
        order = state.orders.create(holder)
        assert order.created_at == clock.now()
        clock.advance(1.2345)
        state.lifecycle.approve(order.id)
        assert order.updated_at == clock.now() - timedelta(microseconds=500)
        assert order.verified_at == order.updated_at


class TestOrderLifecycle:
    def test_steps_may_be_skipped_but_not_reversed(
        self, state: SandboxState, holder: HolderInfo
    ) -> None:
        """PENDING may jump to SHIPPED, but SHIPPED cannot go back to PROCESSING."""
        order = state.lifecycle.approve(state.orders.create(holder).id)
        state.lifecycle.ship(order.id)
        with pytest.raises(StateConflict, match="cannot go from SHIPPED to PROCESSING"):
            state.lifecycle.process(order.id)
        assert [log.activity for log in order.logs] == ["Approved", "Shipped"]

    def test_rejected_orders_do_not_move(self, state: SandboxState, holder: HolderInfo) -> None:
        """orderStatus changes only apply to VERIFIED orders; rejection keeps its note."""
        order = state.lifecycle.reject(state.orders.create(holder).id, "no stock")
        assert (order.admin_approval, order.rejection_note) == ("REJECTED", "no stock")
        assert order.rejected_at is not None
        with pytest.raises(StateConflict, match="adminApproval REJECTED"):
            state.lifecycle.deliver(order.id)
        assert state.lifecycle.approve(order.id).admin_approval == "VERIFIED"

    def test_set_payment_status_accepts_any_value(
        self, state: SandboxState, holder: HolderInfo
    ) -> None:
        """Payment webhooks may write unknown values; becoming paid accrues commission once."""
        order = state.orders.create(holder)
        state.lifecycle.set_payment_status(order.id, "ON_HOLD")
        assert order.payment_status == "ON_HOLD"
        state.lifecycle.set_payment_status(order.id, "PAID")
        state.lifecycle.set_payment_status(order.id, "PENDING")
        state.lifecycle.set_payment_status(order.id, "PAID")
        assert len(state.commissions.of(holder)) == 1

    def test_paying_the_commission_marks_the_order(
        self, state: SandboxState, holder: HolderInfo
    ) -> None:
        """Paying an order's commission sets commissionPaid and its hash on the order."""
        order = state.lifecycle.pay(state.orders.create(holder).id)
        commission = state.commissions.of_order(order.id)
        assert commission is not None
        assert commission.amount_in_dollar == order.agent_profit
        state.commissions.pay(commission.id)
        assert order.commission_paid
        assert order.commission_transaction_hash == commission.transaction_hash

    def test_create_orders_spacing(
        self, state: SandboxState, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Bulk orders can be spaced in time from a start."""
        start = clock.now() - timedelta(days=1)
        orders = state.orders.create_many(holder, 3, spacing_s=60, created_at=start)
        assert [o.created_at for o in orders] == [start + timedelta(minutes=i) for i in range(3)]

    def test_unknown_and_invalid(self, state: SandboxState, holder: HolderInfo) -> None:
        """Unknown ids and impossible values raise the sandbox's errors."""
        with pytest.raises(UnknownEntity, match="unknown order"):
            state.lifecycle.ship("nope")
        with pytest.raises(InvalidInput, match="adminApproval must be one of"):
            state.orders.create(holder, admin_approval="MAYBE")
        with pytest.raises(UnknownEntity, match="unknown strain"):
            state.orders.create(holder, items={"nope": 1})


class TestClientLifecycle:
    def test_flags_are_independent(self, state: SandboxState, holder: HolderInfo) -> None:
        """KYC and approval flip independently; approval activates; deactivation is separate."""
        client = state.clients.create(holder)
        state.clients.approve(client.id)
        assert (client.is_kyc_verified, client.is_active, client.admin_approval) == (
            False,
            True,
            "VERIFIED",
        )
        state.clients.verify_kyc(client.id)
        state.clients.deactivate(client.id)
        assert (client.is_kyc_verified, client.is_active) == (True, False)
        state.clients.reject(client.id, "fraud")
        assert (client.admin_approval, client.rejection_note) == ("REJECTED", "fraud")

    def test_email_stays_unique_after_patch(self, state: SandboxState, holder: HolderInfo) -> None:
        """Patching an email to another client's is a conflict."""
        first, second = state.clients.create(holder), state.clients.create(holder)
        with pytest.raises(StateConflict, match="belongs to another client"):
            state.clients.patch(second.id, {"email": first.email})
        state.clients.patch(second.id, {"email": "new@example.com"})
        with pytest.raises(StateConflict):
            state.clients.patch(first.id, {"email": "new@example.com"})


class TestSeed:
    def test_demo_world(self, state: SandboxState) -> None:
        """The demo holder has strains, and clients and orders in several states."""
        holder = seed_demo(state)
        clients = state.clients.of(holder)
        orders = state.orders.of(holder)
        assert len(state.catalogue.listed()) >= 3
        assert {"GBR", "ZAF", "PRT"} <= {
            code for s in state.catalogue.listed() for code in s.locations
        }
        assert {c.admin_approval for c in clients} == {"PENDING", "VERIFIED", "REJECTED"}
        ready = [
            c for c in clients if c.cart and c.is_kyc_verified and c.admin_approval == "VERIFIED"
        ]
        assert ready
        assert {o.order_status for o in orders} >= {"PENDING", "PROCESSING", "DELIVERED"}
        assert {o.admin_approval for o in orders} == {"PENDING", "VERIFIED", "REJECTED"}
        assert state.orders.checkout(holder, ready[0].id).admin_approval == "PENDING"

    def test_second_demo_holder_shares_the_catalogue(self, state: SandboxState) -> None:
        """Seeding twice adds a holder without duplicating strains or emails."""
        seed_demo(state)
        strains = len(state.tables.strains)
        seed_demo(state, holder_name="other")
        assert len(state.tables.strains) == strains
