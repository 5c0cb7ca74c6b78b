"""The delivery series on /metrics, fed by real deliveries to a receiver on a fake clock:
outcomes that say what happened, the backlog of what is not delivered, the oldest owed age.
"""

from __future__ import annotations

from tests.monitoring.rig import Rig, new_order_event


class TestDeliverySeries:
    async def test_outcomes_say_what_happened(self, rig: Rig) -> None:
        """A failed attempt with a retry ahead is ``retrying``, never ``pending``; the retry
        that works is ``delivered``; one that runs out of attempts is ``failed``."""
        rig.hook.fail_next = 1
        await new_order_event(rig)
        await rig.worker.run_once()
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="retrying")
            == 1
        )
        rig.clock.advance(90)
        await rig.worker.run_once()
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="delivered")
            == 1
        )
        rig.hook.fail_next = 2
        rig.box.state.orders.create("shop")
        await rig.poll()
        await rig.worker.run_once()
        rig.clock.advance(90)
        await rig.worker.run_once()
        text, _ = await rig.scrape()
        assert 'outcome="pending"' not in text
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="failed") == 1
        )
        assert (
            await rig.value("drgreen_poller_deliveries_total", sink="store", outcome="retrying")
            == 2
        )

    async def test_backlog_counts_what_is_not_delivered(self, rig: Rig) -> None:
        """The backlog has pending, delivering and failed per sink (zeros included), never the
        delivered rows."""
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 0}
        await new_order_event(rig)
        assert await _backlog(rig) == {"pending": 1, "delivering": 0, "failed": 0}
        await rig.worker.run_once()
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 0}
        rig.hook.fail_next = 2
        rig.box.state.orders.create("shop")
        await rig.poll()
        await rig.worker.run_once()
        rig.clock.advance(90)
        await rig.worker.run_once()
        assert await _backlog(rig) == {"pending": 0, "delivering": 0, "failed": 1}

    async def test_oldest_due_age(self, rig: Rig) -> None:
        """The age of the oldest owed delivery per sink follows the clock; 0 once delivered."""
        assert await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 0
        await new_order_event(rig)
        rig.clock.advance(120)
        assert (
            await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 120
        )
        await rig.worker.run_once()
        assert await rig.value("drgreen_poller_delivery_oldest_due_age_seconds", sink="store") == 0


async def _backlog(rig: Rig) -> dict[str, float]:
    _, samples = await rig.scrape()
    return {
        dict(labels)["state"]: value
        for (name, labels), value in samples.items()
        if name == "drgreen_poller_delivery_backlog" and dict(labels)["sink"] == "store"
    }
