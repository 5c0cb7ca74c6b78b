"""Delivery retries, with a real receiver and a fake clock: the retry schedule and its jitter
from a table, failures then success under one webhook-id, a receiver down past the schedule
then requeued, timeouts, and Retry-After.
"""

from __future__ import annotations

import random

import pytest
from structlog.testing import capture_logs

from drgreen_poller.retries import RETRY_AFTER_MAX_S, retry_delay
from drgreen_poller.sinks import Outcome
from tests.delivery_bench import (
    SCHEDULE,
    Bench,
    advance_to_next,
)


class TestRetryDelay:
    @pytest.mark.parametrize(("made", "nominal"), [(1, 60), (2, 600), (3, 3600), (5, 57600)])
    def test_schedule_with_jitter(self, made: int, nominal: float) -> None:
        """After the n-th failure the next attempt waits schedule[n] ± 20 %."""
        rng = random.Random(made)
        draws = [retry_delay(made, SCHEDULE, None, rng) for _ in range(500)]
        assert all(d is not None and nominal * 0.8 <= d <= nominal * 1.2 for d in draws)

    def test_gives_up_after_the_last(self) -> None:
        """After six failed attempts there is no next one."""
        assert retry_delay(6, SCHEDULE, None, random.Random(0)) is None

    def test_retry_after_lengthens_within_bounds(self) -> None:
        """Retry-After can only lengthen a delay, and at most to six hours."""
        rng = random.Random(0)
        assert retry_delay(1, SCHEDULE, 3000, rng) == 3000
        assert retry_delay(1, SCHEDULE, 10 * 86400, rng) == RETRY_AFTER_MAX_S
        short = retry_delay(1, SCHEDULE, 1, rng)
        assert short is not None
        assert short >= 48


class TestRetries:
    async def test_three_failures_then_delivered(self, bench: Bench) -> None:
        """Failing 3 times then 2xx: delivered, 4 attempts logged, one webhook-id throughout."""
        bench.hook.fail_next = 3
        await bench.emit("o-1", "order.approved")
        for _ in range(4):
            assert await bench.worker.run_once() == 1
            if await bench.states() == ["pending"]:
                await advance_to_next(bench)
        assert await bench.states() == ["delivered"]
        attempts = await bench.attempts_of()
        assert [(a["attempt"], a["ok"], a["status"]) for a in attempts] == [
            (1, 0, 503),
            (2, 0, 503),
            (3, 0, 503),
            (4, 1, 204),
        ]
        assert attempts[0]["response_excerpt"] == "try later"
        assert len({d.id for d in bench.hook.received}) == 1
        stamps = [int(d.headers["webhook-timestamp"]) for d in bench.hook.received]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 4  # each attempt is signed at its own time

    async def test_down_past_the_schedule_then_retry(self, bench: Bench) -> None:
        """A receiver down for all 6 attempts leaves the row failed; requeued, it arrives."""
        bench.hook.fail_next = 6
        await bench.emit("o-1", "order.paid")
        for attempt in range(6):
            await bench.worker.run_once()
            if attempt < 5:
                await advance_to_next(bench)
        assert await bench.states() == ["failed"]
        assert await bench.worker.run_once() == 0
        assert await bench.store.requeue_failed(bench.clock.now()) == 1
        assert await bench.worker.run_once() == 1
        assert await bench.states() == ["delivered"]
        assert {d.id for d in bench.hook.received} == {bench.hook.received[0].id}
        assert len(bench.hook.received) == 7
        history = await bench.attempts_of()
        assert [a["attempt"] for a in history] == [1, 2, 3, 4, 5, 6, 7]  # nothing overwritten
        assert [a["ok"] for a in history] == [0] * 6 + [1]

    async def test_slow_receiver_times_out_and_is_retried(self, bench: Bench) -> None:
        """A receiver slower than the timeout fails the attempt; the retry gets through."""
        bench.hook.hang_next = 1
        await bench.emit("o-1", "order.shipped")
        await bench.worker.run_once()
        [first] = await bench.attempts_of()
        assert (first["ok"], first["error_class"]) == (0, "timeout")
        await advance_to_next(bench)
        await bench.worker.run_once()
        assert await bench.states() == ["delivered"]

    async def test_retry_after_is_honoured(self, bench: Bench) -> None:
        """A 429 with Retry-After: 3000 is not retried for 3000 s."""
        bench.hook.fail_next, bench.hook.fail_status, bench.hook.retry_after = 1, 429, "3000"
        await bench.emit("o-1", "order.paid")
        await bench.worker.run_once()
        [row] = await bench.store.deliveries(state="pending")
        assert row.next_attempt_at == pytest.approx(bench.clock.now().timestamp() + 3000)

    async def test_a_sink_that_raises_is_a_failed_attempt_retried(self, bench: Bench) -> None:
        """A sink raising where it should report (a bug) makes a failed attempt, named by the
        exception's class and logged with its traceback, retried later under the same
        webhook-id; the worker carries on."""

        class Broken:
            name = "store"

            async def deliver(self, *args: object) -> Outcome:
                raise ZeroDivisionError("a sink bug")

            async def sync(self) -> None: ...

            async def close(self) -> None: ...

        working = bench.worker.sinks["store"]
        bench.worker.sinks["store"] = Broken()
        await bench.emit("o-1", "order.paid")
        with capture_logs() as lines:
            await bench.worker.run_once()
        [first] = await bench.attempts_of()
        assert (first["ok"], first["error_class"]) == (0, "ZeroDivisionError")
        assert [line["event"] for line in lines if line["log_level"] == "error"] == [
            "delivery_attempt_crashed"
        ]
        bench.worker.sinks["store"] = working
        await advance_to_next(bench)
        await bench.worker.run_once()
        assert await bench.states() == ["delivered"]
        assert len(bench.hook.accepted()) == 1
