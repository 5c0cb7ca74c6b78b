"""A refused key (401/403): one signed probe per interval and no other request, the first good
probe resuming every tier (each polled once, through the scheduler), a failed or throttled probe
waiting on, and a restart probing before it polls.
"""

from __future__ import annotations

from drgreen_poller.tiers import TIERS, Tier
from tests.fakes import ClockScheduler
from tests.runner.rig import PROBE, RETRY_S, Rig
from tests.waiting import eventually


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
