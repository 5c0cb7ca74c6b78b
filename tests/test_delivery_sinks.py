"""The delivery loop across sinks: a receiver that hangs keeps its own rows, not other sinks';
a removed sink's rows fail at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock
from drgreen_poller.config import DeliveryConfig
from drgreen_poller.delivery import CLAIM_AHEAD, DeliveryWorker
from drgreen_poller.events import Resource
from drgreen_poller.sinks import Outcome
from drgreen_poller.store import (
    UNROUTED,
    AttemptRecord,
    DeliveryState,
    Observation,
    Settled,
    SinkRoute,
    Store,
)
from tests.fakes import GatedSink
from tests.waiting import eventually


def _observations(kind: str, count: int, event_type: str) -> list[Observation]:
    return [
        Observation(Resource(kind, f"{kind}-{n}"), {}, None, changes=[Change(event_type, {})])
        for n in range(count)
    ]


class RefusingSink(GatedSink):
    """A gated sink whose every attempt, once let through, fails with a 503 (a retry)."""

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        await super().deliver(event_id, event_type, body, now)
        return Outcome(False, 503)


class CountingStore(Store):
    """The real store, counting the delivery loop's turns (``settle`` calls); more than
    ``turns_allowed`` of them is an error, raised in the loop."""

    turns = 0
    turns_allowed = 1_000_000
    recorded: list[int]  # how many attempts each turn recorded

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = []

    async def settle(
        self, records: Sequence[AttemptRecord], now: datetime, rooms: Mapping[str, int]
    ) -> Settled:
        self.turns += 1
        self.recorded.append(len(records))
        if self.turns > self.turns_allowed:
            raise AssertionError(f"the loop turned {self.turns} times with nothing to do")
        return await super().settle(records, now, rooms)


@dataclass
class TwoSinks:
    """Sink ``slow`` takes orders and hangs until released; ``quick`` takes clients at once."""

    clock: FakeClock
    store: Store
    slow: GatedSink
    quick: GatedSink
    journal: list[str]  # which sink began each attempt, in order

    def worker(self, concurrency: int) -> DeliveryWorker:
        sinks = {"slow": self.slow, "quick": self.quick}
        config = DeliveryConfig(concurrency=concurrency)
        return DeliveryWorker(self.store, sinks, config, self.clock, random.Random(0))

    async def commit(self, observations: list[Observation]) -> None:
        await self.store.commit_events("shop", observations, now=self.clock.now())


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[TwoSinks]:
    routes = [SinkRoute("slow", ("order.*",)), SinkRoute("quick", ("client.*",))]
    store = await Store.open(tmp_path / "s.db", sinks=routes)
    try:
        journal: list[str] = []
        slow = GatedSink("slow", journal=journal)
        quick = GatedSink("quick", gated=False, journal=journal)
        yield TwoSinks(FakeClock(), store, slow, quick, journal)
    finally:
        await store.close()


async def _run_until(
    worker: DeliveryWorker, slow: GatedSink, check: object, *, releases: int = 0
) -> list[str]:
    """Run ``worker`` until ``check`` holds, releasing ``releases`` of ``slow``'s attempts once
    one hangs; then stop it, letting every hanging attempt end. Returns the
    sinks' journal as it was when ``check`` held."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_s=1))
    try:
        await eventually(lambda: slow.waiting >= 1, task=task)
        for _ in range(releases):
            slow.release()
        await eventually(check, task=task)  # type: ignore[arg-type]  # a plain check callable
        return list(slow.journal)
    finally:
        stop.set()
        for _ in range(slow.waiting + 64):
            slow.release()
        await task


class TestSlots:
    async def test_a_hanging_sink_does_not_take_every_slot(self, two: TwoSinks) -> None:
        """While another sink has rows waiting, each slot goes to the sink with the fewest
        attempts under way: a hanging sink's rows claimed first do not take them all."""
        await two.commit(_observations("order", 6, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        worker = two.worker(concurrency=2)
        began = await _run_until(worker, two.slow, lambda: two.quick.delivered == 2)
        assert began[:3] == ["slow", "quick", "quick"]

    async def test_a_hanging_sink_keeps_its_own_rows_only(self, two: TwoSinks) -> None:
        """A hanging sink with more rows due than it may claim ahead does not keep another
        sink's later rows from being claimed: they start in the next freed slot."""
        await two.commit(_observations("order", CLAIM_AHEAD * 3, "order.paid"))
        await two.commit(_observations("client", 1, "client.created"))
        worker = two.worker(concurrency=1)
        began = await _run_until(worker, two.slow, lambda: two.quick.delivered == 1, releases=1)
        assert began[:2] == ["slow", "quick"]  # its second row waits behind the quick sink's


class TestClaim:
    async def test_a_sink_without_room_is_not_claimed(self, two: TwoSinks) -> None:
        """A claim takes the due rows of the sinks given room only, even when another sink's
        rows fell due first."""
        await two.commit(_observations("order", 5, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        settled = await two.store.settle([], two.clock.now(), {"quick": 10})
        assert [row.sink for row in settled.claimed] == ["quick", "quick"]

    async def test_each_sink_is_claimed_up_to_its_own_room(self, two: TwoSinks) -> None:
        """Each sink is claimed for up to its own room, so a sink with many rows due first does
        not take another's share; the rows come back in due order."""
        await two.commit(_observations("order", 5, "order.paid"))
        await two.commit(_observations("client", 2, "client.created"))
        settled = await two.store.settle([], two.clock.now(), {"slow": 2, "quick": 10})
        assert [row.sink for row in settled.claimed] == ["slow", "slow", "quick", "quick"]


class TestRemovedSink:
    async def test_rows_of_a_sink_removed_by_a_reload_fail_at_once(self, two: TwoSinks) -> None:
        """After a reload removes a sink, its pending rows (retries due later included) fail
        with that reason and one logged attempt each; the other sink's rows are delivered."""
        await two.commit(_observations("order", 2, "order.paid"))
        await two.commit(_observations("client", 1, "client.created"))
        outcomes: list[tuple[str, str]] = []
        worker = DeliveryWorker(
            two.store, {"slow": two.slow, "quick": two.quick}, DeliveryConfig(), two.clock,
            random.Random(0), on_attempt=lambda sink, outcome: outcomes.append((sink, outcome)),
        )  # fmt: skip
        worker.sinks = {"quick": two.quick}  # what a reload that drops "slow" does
        await worker.run_once()
        rows = {row.sink: row for row in await two.store.deliveries(limit=10)}
        assert (rows["slow"].state, rows["slow"].last_outcome) == ("failed", UNROUTED)
        assert rows["quick"].state == "delivered"
        [attempt] = await two.store.attempts(rows["slow"].id)
        assert (attempt["ok"], attempt["error_class"]) == (0, UNROUTED)
        assert sorted(outcomes) == [("quick", "delivered"), ("slow", "failed"), ("slow", "failed")]
        assert two.slow.started == []

    async def test_a_retry_of_a_sink_removed_mid_attempt_fails(self, two: TwoSinks) -> None:
        """An attempt under way when a reload removes its sink, failing, does not leave its row
        pending for good: the row fails as unrouted, though the claim turn after the reload
        found nothing of that sink pending."""
        refusing = RefusingSink("slow")
        await two.commit(_observations("order", 1, "order.paid"))
        worker = DeliveryWorker(
            two.store, {"slow": refusing, "quick": two.quick}, DeliveryConfig(concurrency=2),
            two.clock, random.Random(0),
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        try:
            await eventually(lambda: refusing.waiting == 1, task=task)
            worker.sinks = {"quick": two.quick}  # what a reload that drops "slow" does
            await two.commit(_observations("client", 1, "client.created"))
            worker.wake()
            await eventually(lambda: two.quick.delivered == 1, task=task)  # a claim turn ran
            refusing.release()  # the attempt fails: a retry would be scheduled
            [slow_row] = await two.store.deliveries(sink="slow")

            async def failed() -> bool:
                two.clock.advance(5)  # on to the retry's due time, a recheck at a time
                [row] = await two.store.deliveries(sink="slow")
                return row.state == "failed"

            await eventually(failed, task=task, what="the row failing")
            [row] = await two.store.deliveries(sink="slow")
            assert row.last_outcome == UNROUTED
            attempts = await two.store.attempts(slow_row.id)
            assert [a["error_class"] for a in attempts] == [None, UNROUTED]
        finally:
            stop.set()
            await task

    async def test_a_removed_sinks_row_requeued_later_fails_again(
        self, two: TwoSinks, tmp_path: Path
    ) -> None:
        """A failed row of a removed sink that an operator requeues (``deliveries retry``, from
        another process) while the daemon runs fails again within a recheck or so, instead of
        staying pending (owed) until the next restart."""
        await two.commit(_observations("order", 1, "order.paid"))
        worker = two.worker(concurrency=1)
        worker.sinks = {"quick": two.quick}  # "slow" was removed from the configuration
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        try:

            async def attempts_logged(count: int) -> bool:
                two.clock.advance(1)  # the loop's rechecks come round
                [row] = await two.store.deliveries(sink="slow")
                return row.state == "failed" and row.attempts == count

            await eventually(lambda: attempts_logged(1), task=task)
            cli = await Store.open(tmp_path / "s.db", sinks=())
            try:
                assert await cli.requeue_failed(two.clock.now()) == 1
            finally:
                await cli.close()
            await eventually(lambda: attempts_logged(2), task=task, what="the second failure")
        finally:
            stop.set()
            await task

    async def test_a_removed_sinks_backlog_fails_a_window_at_a_time(self, tmp_path: Path) -> None:
        """A removed sink's pending rows fail a claim's window at a time, each turn short, the
        loop coming straight back for the rest: not all in one turn, which would hold up the
        event loop (polls, health, signals) while thousands are recorded and logged."""
        routes = [SinkRoute("gone", ("*",))]
        clock = FakeClock()
        store = await CountingStore.open(tmp_path / "s.db", sinks=routes)
        try:
            count = CLAIM_AHEAD * 3 + 1
            await store.commit_events(
                "shop", _observations("order", count, "order.paid"), now=clock.now()
            )
            worker = DeliveryWorker(
                store, {}, DeliveryConfig(concurrency=1), clock, random.Random(0)
            )
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop, grace_s=1))
            try:

                async def all_failed() -> bool:
                    rows = await store.deliveries(state="failed", limit=count)
                    return len(rows) == count

                await eventually(all_failed, task=task)  # the clock never moves
            finally:
                stop.set()
                await task
            assert max(store.recorded) == CLAIM_AHEAD
            assert sum(store.recorded) == count
        finally:
            await store.close()


class TestIdle:
    async def test_no_sinks_configured_the_loop_sleeps_after_a_wake(self, tmp_path: Path) -> None:
        """With no sink configured (allowed, with a warning), a poll's wake makes one turn and
        the loop goes back to sleep: it does not turn again and again with nothing to claim."""
        clock = FakeClock()
        store = await CountingStore.open(tmp_path / "s.db", sinks=())
        try:
            worker = DeliveryWorker(store, {}, DeliveryConfig(), clock, random.Random(0))
            store.turns_allowed = 5
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop, grace_s=1))
            await eventually(lambda: store.turns == 1 and clock.sleepers == 1, task=task)
            worker.wake()  # what a poll that recorded events does
            await eventually(lambda: store.turns == 2 and clock.sleepers == 1, task=task)
            for _ in range(20):  # a loop that spins turns while it yields
                await clock.sleep(0)  # yields to the loop once
            stop.set()
            await task
            assert store.turns == 2
        finally:
            await store.close()

    async def test_a_retry_due_soon_is_not_hidden_by_rows_held_back(self, two: TwoSinks) -> None:
        """A row due but held back behind its resource's earlier event in flight does not make
        the loop sleep its idle recheck: another sink's retry due in 1 s starts after 1 s."""
        await two.commit(_observations("client", 1, "client.created"))
        [row] = (await two.store.settle([], two.clock.now(), {"quick": 1})).claimed
        retry_at = two.clock.now().timestamp() + 1.0
        failed = AttemptRecord(
            row.id, 1, two.clock.now(), 1.0, False, 503, None, None, DeliveryState.PENDING,
            next_attempt_at=retry_at,
        )  # fmt: skip
        await two.store.settle([failed], two.clock.now(), {})
        order = Observation(
            Resource("order", "o-1"), {}, None,
            changes=[Change("order.paid", {}), Change("order.shipped", {})],
        )  # fmt: skip
        await two.commit([order])  # slow's first hangs; its second is due, held back behind it
        worker = two.worker(concurrency=2)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_s=1))
        try:
            await eventually(lambda: two.slow.waiting == 1 and two.clock.sleepers >= 1, task=task)
            two.clock.advance(1.0)
            await eventually(lambda: two.quick.delivered == 1, timeout_s=2, task=task)
        finally:
            stop.set()
            two.slow.release()
            await task
