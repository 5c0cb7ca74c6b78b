"""The operator page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright):
the real daemon against the sandbox and a receiver that fails until told otherwise.

Outside CI a missing browser (or Playwright) skips these tests, saying why; with ``CI=true`` it
fails them: in CI the browser is part of the test, never silently left out.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from drgreen_poller.store import DeliveryState, Store
from drgreen_poller.store.operator_views import OperatorViews
from tests.operator_rig import Rig, running_daemon
from tests.waiting import eventually

if TYPE_CHECKING:  # Playwright is imported where it is used: without it the tests skip (or fail)
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCRIPT = "<script>window.__pwned = 1</script>"


def _unavailable(reason: str) -> None:
    """Skip for ``reason``, or fail in CI (``CI=true``), where the browser must be there."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true and {reason} (.ci/run installs Debian's chromium)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, when it is installed (see ``_unavailable`` when it is not)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Page]:
    """A headless Chromium page, closed after the test."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield await launched.new_page(viewport={"width": 1300, "height": 900})
        finally:
            await launched.close()


async def _new_failed_order(rig: Rig) -> tuple[str, int]:
    """An order created upstream now, and the id of its delivery once that has failed."""
    order = rig.box.state.orders.create("shop")
    found: list[int] = []

    async def failed() -> bool:
        for row in await rig.deliveries(DeliveryState.FAILED):
            store_order = row.event_type == "order.created"
            if store_order and order.id in await _event_resource(rig, row.event_id):
                found.append(row.id)
        return bool(found)

    await eventually(failed, what="the new order's failed delivery", task=rig.daemon, timeout_s=8)
    return order.id, found[0]


async def _event_resource(rig: Rig, event_id: str) -> str:
    store = await Store.open_reader(rig.config.daemon.state_path)
    try:
        event = await OperatorViews(store).event(event_id)
    finally:
        await store.close()
    return str(event["resource"]["id"]) if event else ""


class TestInChromium:
    @pytest.mark.timeout(60)
    async def test_requeue_button_delivers_a_failed_delivery(
        self, tmp_path: Path, browser: Page
    ) -> None:
        """The page shows the holder, the event that just happened and its failed delivery;
        once the receiver is back, the requeue button delivers it and the receiver gets it."""
        page = browser
        async with running_daemon(tmp_path) as rig:
            order_id, delivery_id = await _new_failed_order(rig)
            await page.goto(rig.base + "/")
            holders = await page.inner_text("#holders")
            events = await page.inner_text("#events")
            state_before = await page.inner_text(f"#delivery-{delivery_id} td.state")
            rig.receiver.fail_next = 0
            await page.click(f"#requeue-{delivery_id}")
            await page.wait_for_load_state()
            notice = await page.inner_text("[role=status]")
            await eventually(
                lambda: any(d.event["resource"]["id"] == order_id for d in rig.receiver.accepted()),
                what="the receiver getting the requeued delivery",
                task=rig.daemon,
            )
            await eventually(
                lambda: _delivered(page, delivery_id), what="the page showing it delivered"
            )
        assert "shop" in holders
        assert "working" in holders
        assert order_id in events
        assert "order.created" in events
        assert state_before == "failed"
        assert notice == f"delivery {delivery_id} requeued"

    @pytest.mark.timeout(60)
    async def test_markup_from_upstream_stays_text(self, tmp_path: Path, browser: Page) -> None:
        """An order field holding a script tag is shown as text on the event's page, and no
        script runs."""
        page = browser
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        async with running_daemon(tmp_path) as rig:
            rig.box.state.orders.of("shop")[0].order_status = SCRIPT
            await rig.wait_failed()
            await page.goto(rig.base + "/?type=order.status_changed")
            await page.click("#events >> text=JSON")
            await page.wait_for_load_state()
            shown = await page.inner_text("pre")
            ran = await page.evaluate("() => window.__pwned === 1")
        assert SCRIPT in shown
        assert not ran
        assert dialogs == []


async def _delivered(page: Page, delivery_id: int) -> bool:
    await page.reload()
    return bool(await page.inner_text(f"#delivery-{delivery_id} td.state") == "delivered")
