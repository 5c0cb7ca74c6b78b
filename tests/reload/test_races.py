"""Reloads meeting work in flight: a secret rotated between attempts, a sink retired while its
attempt hangs, a refused holder removed and added back or rekeyed mid-run, a hanging attempt
and the next reload; and the daemon ending when the delivery side finds the database gone.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from drgreen_poller.errors import StoreError
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.webhook_signing import generate_webhook_secret, verify_webhook
from tests.conftest import write_config
from tests.fakes import Delivery, WebhookReceiver
from tests.reload.conftest import StoreConfigs
from tests.reload.running import (
    CLOCK,
    SECRET,
    Running,
    accepted_types,
    logged,
    marked_unauthorized,
    requests_of,
    sink_toml,
)


def _signed_with(delivery: Delivery, secret: str) -> bool:
    return verify_webhook(
        [secret],
        msg_id=delivery.id,
        timestamp=delivery.headers["webhook-timestamp"],
        signature_header=delivery.headers["webhook-signature"],
        body=delivery.body,
        now_s=CLOCK.now().timestamp(),
    )


class TestReloadRaces:
    @pytest.mark.timeout(30)
    async def test_a_rotated_secret_signs_the_next_attempt(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        store_config: StoreConfigs,
        tmp_path: Path,
    ) -> None:
        """After a reload that rotates a sink's secret, the next event is signed with it."""
        hook, path = await store_config()
        rotated = generate_webhook_secret()
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: accepted_types(hook) == ["order.created"])
                (tmp_path / "store.whsec").write_text(rotated)
                reloaded = await daemon.reload(logs)
                box.state.lifecycle.approve(order.id)
                await daemon.until(lambda: len(accepted_types(hook)) == 2)
        assert reloaded["sinks_changed"] == {"store": ["secrets"]}
        first, second = hook.accepted()
        assert [_signed_with(first, SECRET), _signed_with(first, rotated)] == [True, False]
        assert [_signed_with(second, SECRET), _signed_with(second, rotated)] == [False, True]

    @pytest.mark.timeout(30)
    async def test_a_sink_retired_while_its_attempt_hangs_is_closed_on_stop(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        store_config: StoreConfigs,
        tmp_path: Path,
    ) -> None:
        """A sink replaced by a reload while its attempt hangs is still closed when a stop
        cuts that attempt (no unclosed HTTP session is left behind)."""
        hook, path = await store_config('timeout = "1h"\n')
        hook.hang_next = 1
        with structlog.testing.capture_logs() as logs:
            daemon = Running(path)
            await daemon.__aenter__()
            assert daemon.task is not None
            box.state.orders.create("shop")
            await daemon.until(lambda: bool(hook.received))
            (tmp_path / "store.whsec").write_text(generate_webhook_secret())
            await daemon.reload(logs)
            daemon.controls.request_stop()
            daemon.controls.request_stop()
            await asyncio.wait_for(daemon.task, 5)
        gc.collect()  # an unclosed aiohttp session warns when collected
        assert logged(logs, "daemon_stop_forced")

    @pytest.mark.timeout(30)
    async def test_a_refused_holder_removed_and_added_back_is_probed(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A refused holder removed by one reload and added back by another with working keys
        recovers at once (its refusal is not silently forgotten, leaving the mark for good)."""
        revoked = box.state.create_holder("revoked")
        box.state.revoke_holder_key("revoked")
        refusing = 'unauthorized_retry = "1h"'
        path = write_config(tmp_path, box.base_url, revoked, extra=refusing)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: marked_unauthorized(tmp_path / "state.db"))
                write_config(tmp_path, box.base_url, replace(shop, name="other"), extra=refusing)
                assert (await daemon.reload(logs))["holders_removed"] == ["revoked"]
                write_config(tmp_path, box.base_url, replace(shop, name="revoked"), extra=refusing)
                assert (await daemon.reload(logs))["holders_added"] == ["revoked"]
                await daemon.until(lambda: logged(logs, "holder_recovered"))

    @pytest.mark.timeout(30)
    async def test_new_keys_given_during_a_refused_run_are_tried_at_once(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A run that started with the old keys and is refused after a reload gave new ones
        does not park the holder until the next probe: the new keys are probed at once."""
        keyed = box.state.create_holder("keyed")
        refusing = 'unauthorized_retry = "1h"'
        path = write_config(tmp_path, box.base_url, keyed, extra=refusing)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: requests_of(box, "keyed") > 0)
                box.state.traffic.add_fault({"kind": "slow", "delay_s": 1, "holder": "keyed"})
                box.state.revoke_holder_key("keyed")
                await CLOCK.sleep(0.4)  # a run (0.2 s intervals) is now waiting on its answer
                write_config(tmp_path, box.base_url, replace(shop, name="keyed"), extra=refusing)
                assert (await daemon.reload(logs))["holders_changed"] == {"keyed": ["keys"]}
                await daemon.until(lambda: logged(logs, "holder_unauthorized"))
                await daemon.until(lambda: logged(logs, "holder_recovered"))

    @pytest.mark.timeout(30)
    async def test_a_hanging_attempt_does_not_hold_up_the_next_reload(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """A reload that retires no sink does not wait for the attempts in flight, so the next
        reload is applied at once even while a receiver hangs."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        hook.hang_next = 1
        extra = '[delivery]\ntimeout = "1h"\n' + sink_toml("store", url)
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=extra)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                box.state.orders.create("shop")
                await daemon.until(lambda: bool(hook.received))
                assert (await daemon.reload(logs))["changed"] is False
                write_config(
                    tmp_path, box.base_url, shop, first_sync="emit", interval="1s", extra=extra
                )
                assert (await daemon.reload(logs))["changed"] is True
                daemon.controls.request_stop()  # leaving, the second request cuts the attempt


class TestFatalErrors:
    @pytest.mark.timeout(30)
    async def test_the_delivery_side_losing_the_database_says_so(
        self, box: LocalSandbox, tmp_path: Path
    ) -> None:
        """When the delivery worker is the first to find the database gone, the daemon logs
        ``state_database_failed`` for it before stopping with that error."""
        revoked = box.state.create_holder("revoked")
        box.state.revoke_holder_key("revoked")
        path = write_config(tmp_path, box.base_url, revoked, extra='unauthorized_retry = "1h"')
        with structlog.testing.capture_logs() as logs:
            daemon = Running(path)
            await daemon.__aenter__()
            assert daemon.task is not None
            # Refused for an hour, the holder's tiers touch the database no more once the
            # refusal is stored (its last write, postponing the tiers, follows within ms).
            await daemon.until(lambda: marked_unauthorized(tmp_path / "state.db"))
            await CLOCK.sleep(0.3)
            (tmp_path / "state.db").unlink()
            with pytest.raises(StoreError, match="was deleted"):
                await asyncio.wait_for(daemon.task, 10)
        failed = [e for e in logs if e["event"] == "state_database_failed"]
        assert [(e["log_level"], e.get("source")) for e in failed] == [("error", "delivery")]
