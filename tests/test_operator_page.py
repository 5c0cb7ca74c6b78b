"""The operator page over HTTP (no browser): the real daemon against the sandbox and a failing
receiver; what the page shows, its escaping, filters and paging, and its two actions (requeue,
replay). Who may see it and the cross-site checks: test_operator_access.py."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.operator.app import NOTICES_KEPT
from drgreen_poller.operator.gather import EVENTS_SHOWN
from drgreen_poller.store import Store
from tests.operator_rig import csrf_token, get_page, new_failed_order, post_form, running_daemon
from tests.waiting import eventually

SCRIPT = "<script>alert(1)</script>"


def _events(page: str) -> str:
    """The events section of the main page."""
    return page.split('id="events"')[1]


class TestPageShows:
    @pytest.mark.timeout(30)
    async def test_sections_holder_event_and_failed_delivery(self, tmp_path: Path) -> None:
        """The page lists the holder with its tiers, the active sets, both charts, the sink's
        counts, a new event and its failed delivery with its attempts and a requeue button."""
        async with running_daemon(tmp_path) as rig:
            order_id = await new_failed_order(rig)
            status, page = await get_page(rig, "/")
        assert status == 200
        for section in ("Holders", "Active sets", "Last 24 hours", "Sinks", "Deliveries", "Events"):
            assert f"<h2>{section}" in page
        assert "<strong>shop</strong>" in page
        assert "working" in page
        assert "active_orders" in page
        assert "pending_kyc" in page
        assert page.count("<svg") == 2
        assert order_id in page
        assert 'class="badge s-failed">failed' in page
        assert "2 attempt(s)" in page
        assert ">500<" in page
        assert "try later" in page
        assert 'class="requeue"' in page

    @pytest.mark.timeout(30)
    async def test_event_json_is_escaped(self, tmp_path: Path) -> None:
        """An upstream field holding markup is shown as text on the event's page, never as a
        tag, and the page forbids scripts altogether."""
        async with running_daemon(tmp_path) as rig:
            order = rig.box.state.orders.of("shop")[0]
            order.order_status = SCRIPT
            store_events: list[dict[str, object]] = []

            async def changed() -> bool:
                store = await Store.open_reader(rig.config.daemon.state_path)
                try:
                    store_events[:] = await store.events(patterns=["order.status_changed"])
                finally:
                    await store.close()
                return bool(store_events)

            await eventually(changed, what="order.status_changed", task=rig.daemon)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{rig.base}/events/{store_events[0]['id']}") as response,
            ):
                page = await response.text()
                policy = response.headers["Content-Security-Policy"]
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "default-src 'none'" in policy
        assert "script-src" not in policy

    @pytest.mark.timeout(30)
    async def test_unknown_event_is_404(self, tmp_path: Path) -> None:
        """An event id that is not in the log is a 404 page saying so."""
        async with running_daemon(tmp_path) as rig:
            status, page = await get_page(rig, "/events/evt_nothere")
        assert status == 404
        assert "no event evt_nothere" in page


class TestFilters:
    @pytest.mark.timeout(30)
    async def test_type_and_resource(self, tmp_path: Path) -> None:
        """``type`` keeps the events of matching types, ``resource`` those of one resource."""
        async with running_daemon(tmp_path) as rig:
            first = rig.box.state.orders.create("shop")
            await rig.wait_failed()
            second = rig.box.state.orders.create("shop")
            await rig.wait_failed(2)
            _, orders = await get_page(rig, "/?type=order.*")
            _, clients = await get_page(rig, "/?type=client.kyc.*")
            _, one = await get_page(rig, f"/?resource={second.id}")
        assert first.id in _events(orders)
        assert second.id in _events(orders)
        assert first.id not in _events(clients)
        assert second.id not in _events(clients)
        assert second.id in _events(one)
        assert first.id not in _events(one)

    @pytest.mark.timeout(30)
    async def test_state_filter_and_bad_filters(self, tmp_path: Path) -> None:
        """``state=failed`` lists only failed deliveries; a bad pattern, state or sink is a 400
        saying which."""
        async with running_daemon(tmp_path) as rig:
            await new_failed_order(rig)
            _, failed = await get_page(rig, "/?state=failed")
            bad_type = await get_page(rig, "/?type=order;drop")
            bad_state = await get_page(rig, "/?state=lost")
            bad_sink = await get_page(rig, "/?sink=nowhere")
        listing = failed.split('id="deliveries"')[1].split('id="events"')[0]
        assert "s-failed" in listing
        assert "s-delivered" not in listing
        assert bad_type[0] == 400
        assert "is not an event pattern" in bad_type[1]
        assert bad_state[0] == 400
        assert "not a delivery state" in bad_state[1]
        assert bad_sink[0] == 400
        assert "no such sink" in bad_sink[1]


class TestActions:
    @pytest.mark.timeout(30)
    async def test_requeue_one_delivers_it(self, tmp_path: Path) -> None:
        """Requeueing a failed delivery from the page sends it at once, and the page says so."""
        async with running_daemon(tmp_path) as rig:
            order_id = await new_failed_order(rig)
            failed = await rig.deliveries("failed")
            rig.receiver.fail_next = 0
            token = await csrf_token(rig)
            status, _, response = await post_form(
                rig, "/deliveries/requeue", {"csrf": token, "delivery": str(failed[0].id)},
                Origin=rig.base, **{"Referer": rig.base + "/?state=failed&x=1"},
            )  # fmt: skip
            assert status == 303
            location = response.headers["Location"]
            assert location.startswith("/?state=failed&notice=")
            assert "x=1" not in location
            await eventually(
                lambda: any(d.event["resource"]["id"] == order_id for d in rig.receiver.accepted()),
                what="the requeued delivery", task=rig.daemon,
            )  # fmt: skip
            _, page = await get_page(rig, location)
        assert f"delivery {failed[0].id} requeued" in page

    @pytest.mark.timeout(30)
    async def test_requeue_all_and_replay(self, tmp_path: Path) -> None:
        """``Requeue all failed`` and ``Replay since`` call the CLI's tools and report counts;
        a bad time or sink is reported, not raised. They write through the daemon's own
        connection: the state is not opened again (each open raises the sequence floor)."""
        async with running_daemon(tmp_path) as rig:
            await new_failed_order(rig)
            opened = await rig.opened()
            token = await csrf_token(rig)
            forms = [
                ("/deliveries/requeue", {"all_failed": "1"}),
                ("/deliveries/replay", {"since": "1h", "sink": "store"}),
                ("/deliveries/replay", {"since": "yesterday", "sink": "store"}),
                ("/deliveries/replay", {"since": "1h", "sink": "nowhere"}),
                ("/deliveries/requeue", {"delivery": "abc"}),
                ("/deliveries/requeue", {"delivery": "99999"}),
            ]
            said = []
            for path, form in forms:
                _, _, response = await post_form(rig, path, {"csrf": token, **form})
                said.append((await get_page(rig, response.headers["Location"]))[1])
            assert await rig.opened() == opened
        notices = [re.findall(r'role="status">([^<]*)<', page)[0] for page in said]
        assert re.fullmatch(r"\d+ failed delivery\(ies\) requeued", notices[0])
        assert re.fullmatch(r"\d+ event\(s\) queued again for store", notices[1])
        assert notices[2].startswith("error: since &#x27;yesterday&#x27;: use a time like")
        assert notices[3].startswith("error: sink &#x27;nowhere&#x27;: no such sink")
        assert notices[4] == "error: &#x27;abc&#x27; is not a delivery id"
        assert notices[5] == "error: delivery 99999 not requeued: no such delivery"


class TestPaging:
    @pytest.mark.timeout(30)
    async def test_older_events_and_old_notices(self, tmp_path: Path) -> None:
        """A full page of events links to the older ones; a notice is kept for the last 32
        actions only."""
        async with running_daemon(tmp_path) as rig:
            rig.box.state.orders.create_many("shop", EVENTS_SHOWN + 5)
            await rig.wait_failed(EVENTS_SHOWN + 5)
            _, newest = await get_page(rig, "/?type=order.created")
            older = re.search(r'href="([^"]*)">older events', newest)
            assert older
            _, rest = await get_page(rig, older.group(1).replace("&amp;", "&"))
            token = await csrf_token(rig)
            locations = []
            for _ in range(NOTICES_KEPT + 1):
                _, _, response = await post_form(
                    rig, "/deliveries/requeue", {"csrf": token, "delivery": "x"}
                )
                locations.append(response.headers["Location"])
            first = (await get_page(rig, locations[0]))[1]
            last = (await get_page(rig, locations[-1]))[1]
        assert _events(newest).count(">order.created<") == EVENTS_SHOWN
        assert _events(rest).count(">order.created<") == 5
        assert 'role="status"' not in first
        assert 'role="status"' in last
