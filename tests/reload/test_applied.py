"""A reload applied to the running daemon, in-process against the sandbox and real receivers:
sinks and holders follow the new file, intervals, API settings and keys apply at once, a file
with mistakes keeps the running configuration; and ``apply_config`` keeping or replacing the
parts (request budget, webhook connections) a reload touches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from drgreen_poller.config import load_config
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.service import apply_config, build_service, open_runtime
from tests.conftest import write_config
from tests.fakes import WebhookReceiver
from tests.reload.conftest import StoreConfigs
from tests.reload.running import (
    CLOCK,
    SECRET,
    Running,
    accepted_types,
    logged,
    requests_of,
    sink_toml,
)
from tests.waiting import eventually


class TestReloadApplied:
    @pytest.mark.timeout(30)
    async def test_sinks_follow_the_new_file(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """A sink added by reload gets the next event; a removed one gets nothing more."""
        (tmp_path / "store.whsec").write_text(SECRET)
        (first, first_url), (second, second_url) = await receivers(), await receivers()
        path = write_config(
            tmp_path, box.base_url, shop, first_sync="emit", extra=sink_toml("first", first_url)
        )
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: accepted_types(first) == ["order.created"])
                write_config(
                    tmp_path,
                    box.base_url,
                    shop,
                    first_sync="emit",
                    extra=sink_toml("second", second_url),
                )
                reloaded = await daemon.reload(logs)
                box.state.lifecycle.approve(order.id)
                await daemon.until(lambda: accepted_types(second) == ["order.approved"])
        assert reloaded["sinks_added"] == ["second"]
        assert reloaded["sinks_removed"] == ["first"]
        assert accepted_types(first) == ["order.created"]

    @pytest.mark.timeout(30)
    async def test_holders_added_and_removed(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """An added holder is polled from the reload on; a removed one is not polled again."""
        other = box.state.create_holder("other")
        path = write_config(tmp_path, box.base_url, shop)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: requests_of(box, "shop") > 0)
                write_config(tmp_path, box.base_url, other)
                reloaded = await daemon.reload(logs)
                await CLOCK.sleep(0.1)  # a request sent just before the reload may land now
                shop_requests = requests_of(box, "shop")
                await daemon.until(lambda: requests_of(box, "other") > 0)
                await CLOCK.sleep(0.5)  # two and a half intervals of 0.2 s
                assert requests_of(box, "shop") == shop_requests
        assert reloaded["holders_added"] == ["other"]
        assert reloaded["holders_removed"] == ["shop"]

    @pytest.mark.timeout(30)
    async def test_intervals_and_api_settings_apply_at_once(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """Longer intervals apply from the next run; shorter ones move a far run closer now."""
        path = write_config(tmp_path, box.base_url, shop)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: requests_of(box, "shop") > 0)
                write_config(tmp_path, box.base_url, shop, interval="1h")
                slow = await daemon.reload(logs)
                await CLOCK.sleep(0.5)  # runs in progress end and reschedule an hour away
                quiet = requests_of(box, "shop")
                await CLOCK.sleep(0.5)
                assert requests_of(box, "shop") == quiet
                fast = write_config(tmp_path, box.base_url, shop).read_text()
                path.write_text(
                    fast.replace("requests_per_second = 200", "requests_per_second = 50")
                )
                quick = await daemon.reload(logs)
                await daemon.until(lambda: requests_of(box, "shop") > quiet)
        assert "schedule.active_orders: 0.2s → 3600s" in slow["settings"]
        assert "api.requests_per_second: 200.0 → 50.0" in quick["settings"]

    @pytest.mark.timeout(30)
    async def test_new_keys_end_a_refusal_at_once(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A refused holder given working keys is probed at the reload, not an interval later."""
        revoked = box.state.create_holder("revoked")
        box.state.revoke_holder_key("revoked")
        path = write_config(tmp_path, box.base_url, revoked, extra='unauthorized_retry = "1h"')
        # The file names the holder "revoked" with revoked keys; the reload gives it shop's.
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: logged(logs, "holder_unauthorized"))
                (tmp_path / "shop.api_key").write_text(shop.credentials.api_key)
                (tmp_path / "shop.secret_key").write_text(shop.credentials.secret_key)
                reloaded = await daemon.reload(logs)
                await daemon.until(lambda: logged(logs, "holder_recovered"))
        assert reloaded["holders_changed"] == {"revoked": ["keys"]}

    @pytest.mark.timeout(30)
    async def test_an_invalid_file_keeps_the_running_config(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        store_config: StoreConfigs,
    ) -> None:
        """Each problem of a bad file is one error line; polling and delivery go on as before."""
        hook, path = await store_config()
        good = path.read_text()
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: accepted_types(hook) == ["order.created"])
                path.write_text(
                    good.replace("requests_per_second = 200", 'requests_per_second = "x"')
                    + "\n[bogus]\n"
                )
                await daemon.reload(logs)
                failed = [e for e in logs if e["event"] == "config_reload_failed"]
                box.state.lifecycle.approve(order.id)
                await daemon.until(
                    lambda: accepted_types(hook) == ["order.created", "order.approved"]
                )
        assert [e["log_level"] for e in failed] == ["error", "error"]
        assert {e["problem"].split(":")[0] for e in failed} == {"api.requests_per_second", "bogus"}
        assert not logged(logs, "config_reloaded")


class TestApplyConfig:
    async def test_the_request_budget_survives_unless_it_changes(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A reload of the API timeout keeps each holder's token bucket; a new rate replaces it."""
        config = load_config(write_config(tmp_path, box.base_url, shop))
        async with open_runtime(config, CLOCK) as runtime:
            service = build_service(runtime)
            bucket = service.runner.pollers["shop"].api.bucket
            slower = replace(config, api=replace(config.api, timeout_s=99.0))
            await apply_config(service, slower)
            assert service.runner.pollers["shop"].api.bucket is bucket
            faster = replace(slower, api=replace(config.api, requests_per_second=7.0))
            await apply_config(service, faster)
            assert service.runner.pollers["shop"].api.bucket is not bucket

    async def test_a_higher_concurrency_reaches_an_unchanged_webhook_sink(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """A reload raising [delivery] concurrency from 1 to 4 lets 4 requests reach a webhook
        sink the reload left unchanged at once (its connections are not held at the old 1)."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        hook.hang_next = 4
        extra = "[delivery]\nconcurrency = 1\n" + sink_toml("store", url)
        config = load_config(write_config(tmp_path, box.base_url, shop, extra=extra))
        async with open_runtime(config, CLOCK) as runtime:
            service = build_service(runtime)
            await apply_config(
                service, replace(config, delivery=replace(config.delivery, concurrency=4))
            )
            sink = service.worker.sinks["store"]
            sending = [
                asyncio.create_task(sink.deliver(f"evt_{n}", "order.paid", b"{}", CLOCK.now()))
                for n in range(4)
            ]
            try:
                await eventually(lambda: len(hook.received) == 4, timeout_s=3, what="4 at once")
            finally:
                for task in sending:
                    task.cancel()
                await asyncio.gather(*sending, return_exceptions=True)
                for each in (*service.worker.sinks.values(), *service.retired_sinks):
                    await each.close()
