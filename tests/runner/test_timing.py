"""When the tier runner runs a tier next: one jittered interval after a success, backing off
after failures, Retry-After respected, and a 429 (or a 503 with Retry-After) holding every tier
of the holder until it expires.
"""

from __future__ import annotations

from typing import Any

import pytest

from drgreen_poller.tiers import Tier
from tests.runner.rig import Rig


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
