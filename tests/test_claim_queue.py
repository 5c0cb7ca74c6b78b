"""Tests of the delivery worker's claim queue on its own: which claimed rows go back unsent
when the lease loop's gate moves to a new epoch (instances sharing a PostgreSQL database)."""

from __future__ import annotations

from drgreen_poller.claim_queue import ClaimQueue
from drgreen_poller.store import DueDelivery


class TestHandBack:
    def test_a_new_epoch_hands_back_the_queue_and_the_held(self) -> None:
        """Once the gate's epoch moved, every queued and held row is to be handed back."""
        queue = ClaimQueue()
        queue.extend([_due(1), _due(2)])
        queue.held.append(3)
        assert queue.stale(1)
        assert sorted(queue.hand_back(1)) == [1, 2, 3]
        assert (queue.count, queue.epoch, queue.stale(1)) == (0, 1, False)

    def test_rows_held_in_the_same_epoch_go_back_alone(self) -> None:
        """Rows an attempt held back after the queue was handed back go back alone: rows
        queued since, claimed in the current epoch, stay."""
        queue = ClaimQueue()
        queue.hand_back(1)
        queue.extend([_due(1)])
        queue.held.append(2)
        assert queue.hand_back(1) == [2]
        assert queue.count == 1


def _due(delivery_id: int) -> DueDelivery:
    return DueDelivery(delivery_id, f"evt_{delivery_id}", "order.approved", "all", 0, "{}")
