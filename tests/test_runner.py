"""The tier runner on an injected clock: backoff, holder-wide holds, the refused key, stopping."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import FakeClock
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import RunSlots, TokenBucket
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.scheduler import NextRuns, Timing
from drgreen_poller.store import Store
from drgreen_poller.tiers import TIERS, Tier
from tests.fakes import ClockScheduler
from tests.waiting import eventually

TIMING = Timing(interval_s=60, jitter=0.10, backoff_base_s=5, backoff_max_s=1800)
RETRY_S = 300.0  # [schedule] unauthorized_retry
PROBE = "GET /dapp/orders/summary"


@dataclass
class Rig:
    box: LocalSandbox
    holder: HolderInfo
    clock: FakeClock
    store: Store
    session: aiohttp.ClientSession
    runner: TierRunner
    rescheduled: list[tuple[str, str, float]]

    def new_runner(self, bucket: TokenBucket | None = None, take: int = 100) -> TierRunner:
        """A runner on the same store (a restarted daemon), recording its reschedules."""
        bucket = bucket or TokenBucket(rate=1.0, burst=10**9, clock=self.clock)
        api = ApiClient(
            self.session, ApiSettings(self.box.base_url), self.holder.credentials, self.clock,
            bucket=bucket,
        )  # fmt: skip
        poller = HolderPoller("shop", ["GBR"], api, self.store, self.clock, PollSettings(take=take))
        runner = TierRunner(
            {"shop": poller}, self.store, self.clock, dict.fromkeys(TIERS, TIMING),
            random.Random(7), unauthorized_retry_s=RETRY_S,
        )  # fmt: skip
        return runner

    def planned(self) -> list[tuple[str, str, float]]:
        """Every (holder, tier, when) the runner's runs have put on ``plans`` so far."""
        while not self.runner.plans.empty():
            runs = self.runner.plans.get_nowait()
            self.rescheduled.extend((holder, tier, when) for (holder, tier), when in runs.items())
        return self.rescheduled

    async def run(self, tier: str = Tier.ACTIVE_ORDERS) -> float:
        """Run the tier; seconds from now until the runner wants it again."""
        runs = await self.runner.run("shop", tier)
        return runs[("shop", tier)] - self.clock.now().timestamp()

    async def run_all(self) -> set[float]:
        """Every tier at once, as a scheduler would fire them; seconds until each wants to run."""
        results = await asyncio.gather(*(self.runner.run("shop", tier) for tier in TIERS))
        now = self.clock.now().timestamp()
        return {
            round(runs[("shop", tier)] - now, 6) for runs, tier in zip(results, TIERS, strict=True)
        }

    def requests(self) -> list[dict[str, Any]]:
        """The holder's requests the sandbox saw since the last ``forget``."""
        log: list[dict[str, Any]] = self.box.state.traffic.request_counts("shop")["log"]
        return log

    def forget(self) -> None:
        self.box.state.traffic.reset_request_counts()

    async def poller_events(self) -> list[str]:
        return [e["type"] for e in await self.store.events(patterns=["poller.*"])]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock()
    async with LocalSandbox(SandboxState(clock)) as box, aiohttp.ClientSession() as session:
        holder = box.state.create_holder("shop")
        box.state.orders.create("shop")
        store = await Store.open(tmp_path / "state.db", sinks=())
        rig = Rig(box, holder, clock, store, session, cast(TierRunner, None), [])
        try:
            rig.runner = rig.new_runner()
            yield rig
        finally:
            await store.close()


class TestTiming:
    async def test_success_waits_one_jittered_interval(self, rig: Rig) -> None:
        """After a success the tier runs again in 60 s ± 10 %, and is rescheduled so."""
        delay = await rig.run()
        assert 54 <= delay <= 66
        assert rig.planned()[-1][:2] == ("shop", Tier.ACTIVE_ORDERS)

    async def test_backoff_grows_then_resets(self, rig: Rig) -> None:
        """Consecutive failures back off 5, 10, 20, 40 s (± 10 %); a success resets it."""
        rig.box.state.traffic.add_fault({"kind": "server_error", "status": 503, "count": 4})
        delays = [await rig.run() for _ in range(4)]
        for delay, nominal in zip(delays, (5, 10, 20, 40), strict=True):
            assert nominal * 0.9 <= delay <= nominal * 1.1
        [run] = [r for r in await rig.store.tier_runs("shop") if r.tier == Tier.ACTIVE_ORDERS]
        assert run.consecutive_failures == 4
        assert "503" in (run.last_error or "")
        assert 54 <= await rig.run() <= 66
        [run] = [r for r in await rig.store.tier_runs("shop") if r.tier == Tier.ACTIVE_ORDERS]
        assert run.consecutive_failures == 0

    async def test_retry_after_is_respected(self, rig: Rig) -> None:
        """A 429 with Retry-After: 120 is not retried sooner than 120 s."""
        rig.box.state.traffic.add_fault({"kind": "rate_limit", "retry_after": 120})
        assert await rig.run() == pytest.approx(120, abs=0.01)

    async def test_malformed_response_backs_off(self, rig: Rig) -> None:
        """A truncated body is a failure like any other transient one: nothing is written."""
        rig.box.state.traffic.add_fault({"kind": "truncated"})
        assert 4.5 <= await rig.run() <= 5.5
        assert await rig.store.entities("shop") == []


class TestUnauthorized:
    async def test_refused_key_is_probed_once_per_interval(self, rig: Rig) -> None:
        """While the key is refused, each interval (5 min ± 10 %) sees one signed probe and no
        other request, however often the tiers come due; the event is emitted once."""
        rig.box.state.revoke_holder_key("shop")
        due = await rig.run()
        assert RETRY_S * 0.9 <= due <= RETRY_S * 1.1
        assert {(tier, when) for _, tier, when in rig.planned()} >= {
            (tier, rig.clock.now().timestamp() + due) for tier in TIERS
        }  # every tier waits for the probe
        gaps = []
        for _ in range(4):
            rig.forget()
            rig.clock.advance(due - 1)
            assert await rig.run_all() == {1.0}  # not yet: nothing is sent
            assert rig.requests() == []
            rig.clock.advance(1)
            [due] = await rig.run_all()
            assert [(r["endpoint"], r["status"]) for r in rig.requests()] == [(PROBE, 401)]
            gaps.append(due)
        assert all(RETRY_S * 0.9 <= gap <= RETRY_S * 1.1 for gap in gaps)
        assert len(set(gaps)) > 1  # jittered
        assert await rig.poller_events() == ["poller.holder_unauthorized"]
        [event] = await rig.store.events(patterns=["poller.*"])
        assert event["data"]["status"] == 401
        assert event["resource"] == {"type": "holder", "id": "shop"}

    async def test_first_good_probe_resumes_every_tier_at_once(self, rig: Rig) -> None:
        """The first probe that succeeds emits holder_recovered and makes every tier due now."""
        rig.box.state.revoke_holder_key("shop")
        due = await rig.run()
        assert (await rig.box.control("POST", "/holders/shop/restore")).status == 200
        rig.clock.advance(due)
        rig.planned().clear()
        rig.forget()
        assert await rig.run(Tier.COMMISSIONS) == 0
        now = rig.clock.now().timestamp()
        assert {(tier, when) for _, tier, when in rig.planned()} == {(tier, now) for tier in TIERS}
        assert [r["endpoint"] for r in rig.requests()] == [PROBE]
        assert await rig.poller_events() == [
            "poller.holder_unauthorized",
            "poller.holder_recovered",
        ]
        assert await rig.store.unauthorized_holders() == {}
        assert all(54 <= delay <= 66 for delay in await rig.run_all())  # polling again
        assert {r["endpoint"] for r in rig.requests()} > {PROBE, "GET /dapp/orders"}

    async def test_a_failed_probe_keeps_the_holder_waiting(self, rig: Rig) -> None:
        """A probe that meets a 503 leaves the holder refused: next probe one interval later."""
        rig.box.state.revoke_holder_key("shop")
        due = await rig.run()
        rig.box.state.restore_holder_key("shop")
        rig.box.state.traffic.add_fault({"kind": "server_error", "status": 503})
        rig.clock.advance(due)
        rig.forget()
        [due] = await rig.run_all()
        assert RETRY_S * 0.9 <= due <= RETRY_S * 1.1
        assert [(r["endpoint"], r["status"]) for r in rig.requests()] == [(PROBE, 503)]
        assert await rig.poller_events() == ["poller.holder_unauthorized"]
        rig.clock.advance(due)
        assert await rig.run(Tier.PENDING_KYC) == 0
        assert await rig.poller_events() == [
            "poller.holder_unauthorized",
            "poller.holder_recovered",
        ]

    async def test_a_throttled_probe_waits_out_retry_after(self, rig: Rig) -> None:
        """A probe answered 429 with a Retry-After longer than the interval waits for it."""
        rig.box.state.revoke_holder_key("shop")
        due = await rig.run()
        rig.box.state.traffic.add_fault({"kind": "rate_limit", "retry_after": 900})
        rig.clock.advance(due)
        assert await rig.run_all() == {900.0}

    async def test_a_restart_probes_before_polling(self, rig: Rig) -> None:
        """A daemon started with the holder marked refused sends the probe, not a sweep."""
        rig.box.state.revoke_holder_key("shop")
        await rig.run()
        rig.runner = rig.new_runner()  # a restart: the mark comes from the database
        rig.forget()
        due = await rig.run(Tier.ACTIVE_ORDERS)
        assert RETRY_S * 0.9 <= due <= RETRY_S * 1.1
        assert [r["endpoint"] for r in rig.requests()] == [PROBE]
        assert await rig.poller_events() == ["poller.holder_unauthorized"]


class TestHolderWideHold:
    @pytest.mark.parametrize(
        ("fault", "hold_s"),
        [
            ({"kind": "rate_limit", "retry_after": 120}, (120, 120)),
            ({"kind": "rate_limit", "retry_after": None}, (4.5, 5.5)),  # the backoff delay
            ({"kind": "server_error", "status": 503, "retry_after": 30}, (30, 30)),
        ],
    )
    async def test_every_tier_waits_out_the_hold(
        self, rig: Rig, fault: dict[str, Any], hold_s: tuple[float, float]
    ) -> None:
        """A 429 (with or without Retry-After), or a 503 with Retry-After, holds back every tier
        of the holder until it expires: no tier calls Dr Green before then."""
        rig.box.state.traffic.add_fault(fault)
        hold = round(await rig.run(), 6)
        assert hold_s[0] <= hold <= hold_s[1]
        rig.forget()
        assert await rig.run_all() == {hold}
        rig.clock.advance(hold / 2)
        assert await rig.run_all() == {round(hold / 2, 6)}
        assert rig.requests() == []
        rig.clock.advance(hold / 2)
        assert min(await rig.run_all()) >= 54  # every tier ran, and succeeded
        assert {r["endpoint"] for r in rig.requests()} >= {"GET /dapp/orders", "GET /dapp/clients"}

    async def test_a_503_without_retry_after_backs_off_its_tier_only(self, rig: Rig) -> None:
        """A plain 503 is that tier's failure: the other tiers keep their own times."""
        rig.box.state.traffic.add_fault({"kind": "server_error", "status": 503})
        assert 4.5 <= await rig.run() <= 5.5
        assert 54 <= await rig.run(Tier.COMMISSIONS) <= 66


class TestNoOverlap:
    async def test_runs_of_one_holder_take_turns(self, rig: Rig) -> None:
        """While one tier's poll is in flight, another tier of the holder waits its turn."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        slow = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        quick = asyncio.create_task(rig.runner.run("shop", Tier.COMMISSIONS))
        for _ in range(400):  # until the slow answer sleeps on the fake clock (real time)
            if rig.clock.sleepers:
                break
            await asyncio.wait([slow, quick], timeout=0.005)
        await asyncio.wait([slow, quick], timeout=0.1)
        assert rig.clock.sleepers == 1
        assert not quick.done()  # it would long be done if it ran beside the slow one
        rig.clock.advance(30)
        await asyncio.wait_for(asyncio.gather(slow, quick), 5)
        endpoints = [e["endpoint"] for e in rig.box.state.traffic.request_counts("shop")["log"]]
        assert endpoints == ["GET /dapp/orders", "GET /dapp/commissions/summary"]


async def _until_sleeping(rig: Rig, task: asyncio.Task[NextRuns]) -> None:
    """Until something sleeps on the fake clock (a slow answer, the token bucket)."""
    for _ in range(400):
        if rig.clock.sleepers or task.done():
            return
        await asyncio.wait([task], timeout=0.005)


class TestStop:
    async def test_a_run_in_flight_is_abandoned_and_nothing_written(self, rig: Rig) -> None:
        """stop cuts a run waiting on Dr Green: no snapshot, no seed mark, no reschedule."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await _until_sleeping(rig, running)
        assert rig.clock.sleepers == 1  # the sandbox is answering slowly
        assert await rig.runner.stop(timeout_s=5)
        assert await running == {}
        assert await rig.store.entities("shop") == []
        assert not any(r.seeded_at for r in await rig.store.tier_runs("shop"))
        assert rig.planned() == []

    async def test_no_run_starts_after_stop(self, rig: Rig) -> None:
        """Once stopped, a run the scheduler had already fired sends nothing and plans nothing."""
        assert await rig.runner.stop(timeout_s=5)
        assert await rig.runner.run("shop", Tier.COMMISSIONS) == {}
        assert rig.requests() == []

    async def test_the_token_bucket_wait_is_interrupted(self, rig: Rig) -> None:
        """A run waiting for its next token (page 2 of a sweep) ends at once on stop."""
        rig.box.state.orders.create("shop")
        bucket = TokenBucket(rate=0.001, burst=1, clock=rig.clock)  # the next token in 1000 s
        rig.runner = rig.new_runner(bucket=bucket, take=1)
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await _until_sleeping(rig, running)
        assert [r["endpoint"] for r in rig.requests()] == ["GET /dapp/orders"]
        assert rig.clock.sleepers == 1
        assert await rig.runner.stop(timeout_s=5)
        assert await running == {}
        assert len(rig.requests()) == 1
        assert await rig.store.entities("shop") == []

    async def test_a_cancelled_job_takes_its_run_down(self, rig: Rig) -> None:
        """Cancelling the job itself (APScheduler's task) cancels the poll; nothing is written."""
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        running = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await _until_sleeping(rig, running)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await rig.runner.wait_idle(timeout_s=5)
        assert await rig.store.entities("shop") == []


class TestRunSlots:
    def two_holders(self, rig: Rig, slots: RunSlots, paced: TokenBucket | None = None) -> None:
        """The runner polls "shop" and "other" (the same keys), ``slots`` at work at once;
        ``paced``: the bucket of "shop"."""
        pollers = {}
        for name, bucket in (("shop", paced), ("other", None)):
            api = ApiClient(
                rig.session, ApiSettings(rig.box.base_url), rig.holder.credentials, rig.clock,
                bucket=bucket or TokenBucket(rate=1.0, burst=10**9, clock=rig.clock, slots=slots),
            )  # fmt: skip
            settings = PollSettings(take=1)
            pollers[name] = HolderPoller(name, ["GBR"], api, rig.store, rig.clock, settings)
        rig.runner = TierRunner(
            pollers, rig.store, rig.clock, dict.fromkeys(TIERS, TIMING), random.Random(7),
            slots=slots,
        )  # fmt: skip

    async def test_runs_beyond_the_limit_wait_their_turn(self, rig: Rig) -> None:
        """With one slot, another holder's run begins only once the run at work has ended."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        slow = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await _until_sleeping(rig, slow)
        waiting = asyncio.create_task(rig.runner.run("other", Tier.COMMISSIONS))
        await asyncio.wait([waiting], timeout=0.1)
        assert not waiting.done()  # it would long be done if it had a slot of its own
        rig.clock.advance(30)
        await asyncio.wait_for(asyncio.gather(slow, waiting), 5)
        assert [r["endpoint"] for r in rig.requests()] == [
            "GET /dapp/orders",
            "GET /dapp/commissions/summary",
        ]

    async def test_a_run_paced_by_its_budget_lends_its_slot(self, rig: Rig) -> None:
        """A sweep waiting for its next token lets another holder's run work meanwhile."""
        rig.box.state.orders.create("shop")  # two orders, one a page: page 2 waits for a token
        slots = RunSlots(1)
        paced = TokenBucket(rate=0.001, burst=1, clock=rig.clock, slots=slots)
        self.two_holders(rig, slots, paced)
        sweep = asyncio.create_task(rig.runner.run("shop", Tier.ACTIVE_ORDERS))
        await _until_sleeping(rig, sweep)
        other = asyncio.create_task(rig.runner.run("other", Tier.COMMISSIONS))
        assert await asyncio.wait_for(other, 5) is not None
        assert not sweep.done()
        rig.clock.advance(1000)
        assert await asyncio.wait_for(sweep, 5) is not None
        assert slots.in_use == 0

    async def test_submitted_runs_wait_in_a_queue_not_as_tasks(self, rig: Rig) -> None:
        """Submitted beyond the slots, a run waits as a queue entry and starts when one is free;
        a tier submitted twice while it waits runs once."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        assert rig.runner.waiting() == 1
        started = [t for t in asyncio.all_tasks() if "_run_from_queue" in repr(t.get_coro())]
        assert len(started) == 1  # the slow run: the waiting one is no task
        rig.clock.advance(30)
        for _ in range(400):
            idle = await rig.runner.wait_idle(0.01)
            if idle and rig.runner.waiting() == 0:
                break
        endpoints = [r["endpoint"] for r in rig.requests()]
        assert endpoints == ["GET /dapp/orders", "GET /dapp/commissions/summary"]

    async def test_a_lent_slot_starts_a_waiting_run(self, rig: Rig) -> None:
        """While a sweep waits for its next token, a run waiting in the queue goes ahead."""
        rig.box.state.orders.create("shop")
        slots = RunSlots(1)
        self.two_holders(rig, slots, TokenBucket(rate=0.001, burst=1, clock=rig.clock, slots=slots))
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        for _ in range(400):
            if "GET /dapp/commissions/summary" in [r["endpoint"] for r in rig.requests()]:
                break
            await asyncio.wait_for(rig.runner.wait_idle(0.005), 1)
        assert rig.runner.waiting() == 0
        assert [r["endpoint"] for r in rig.requests()] == [
            "GET /dapp/orders",
            "GET /dapp/commissions/summary",
        ]
        assert await rig.runner.stop(timeout_s=5)

    async def test_stop_and_removal_drop_waiting_runs(self, rig: Rig) -> None:
        """A removed holder's waiting runs and, on stop, every waiting run never start."""
        self.two_holders(rig, RunSlots(1))
        rig.box.state.traffic.add_fault(
            {"kind": "slow", "delay_s": 30, "endpoint": "GET /dapp/orders"}
        )
        await rig.runner.submit("shop", Tier.ACTIVE_ORDERS)
        await _until_idle_or_sleeping(rig)
        await rig.runner.submit("other", Tier.COMMISSIONS)
        await rig.runner.submit("other", Tier.PENDING_KYC)
        await rig.runner.submit("shop", Tier.COMMISSIONS)
        assert rig.runner.waiting() == 3
        rig.runner.remove_holder("other")
        assert rig.runner.waiting() == 1
        assert await rig.runner.stop(timeout_s=5)
        assert rig.runner.waiting() == 0
        await rig.runner.submit("shop", Tier.PENDING_KYC)  # after stop: ignored
        assert rig.runner.waiting() == 0
        assert [r["endpoint"] for r in rig.requests()] == ["GET /dapp/orders"]  # the slow one


async def _until_idle_or_sleeping(rig: Rig) -> None:
    """Until something sleeps on the fake clock (a slow answer, the token bucket), or no run is
    in progress (or starting)."""
    for _ in range(400):
        idle = await rig.runner.wait_idle(0.005)
        if rig.clock.sleepers or idle:
            return


class TestRecoveryThroughTheScheduler:
    async def test_a_recovery_polls_each_tier_once(self, rig: Rig) -> None:
        """When every tier fires at the probe time and the probe succeeds, each tier polls once:
        the tiers waiting for the holder's turn are not also planned a second run."""
        polled: list[str] = []

        def heard(holder: str, tier: str, outcome: str, events: object, took_s: float) -> None:
            if outcome == "ok":
                polled.append(tier)

        rig.runner.on_result = heard
        rig.box.state.revoke_holder_key("shop")
        due = await rig.run()  # refused: every tier is planned at the probe's time
        rig.box.state.restore_holder_key("shop")
        scheduler = ClockScheduler(rig.clock, rig.runner.submit, rig.runner.plans)
        scheduler.start({})
        try:
            await eventually(lambda: all(scheduler.next_run("shop", t) for t in TIERS))
            rig.clock.advance(due)
            later = rig.clock.now().timestamp() + 30

            def settled() -> bool:
                planned = [scheduler.next_run("shop", tier) for tier in TIERS]
                return rig.runner.plans.empty() and all(p and p > later for p in planned)

            await eventually(settled, what="every tier planned an interval on")
            assert await rig.runner.wait_idle(5)
            assert sorted(polled) == sorted(TIERS)
        finally:
            scheduler.shutdown()
            await rig.runner.stop(5)
