"""Reloading the configuration (SIGHUP) while the daemon runs: what changes, what is kept.

The comparison is tested from tables; applying it runs the real daemon against the sandbox and
real receivers on loopback, in-process (``Controls.reload``) and as ``drgreen-poller run`` under a
real SIGHUP.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sqlite3
import sys
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, Secret, load_config
from drgreen_poller.config_sinks import FileSinkConfig, WebhookSinkConfig
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.errors import StoreError
from drgreen_poller.reload import config_changes, keep_restart_keys
from drgreen_poller.request_signing import generate_credentials
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.service import apply_config, build_service, open_runtime
from drgreen_poller.webhook_signing import generate_webhook_secret, verify_webhook
from tests.conftest import write_config
from tests.fakes import Delivery, WebhookReceiver, start
from tests.waiting import eventually

CLOCK = SystemClock()
CLI = (sys.executable, "-m", "drgreen_poller")
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _sink(name: str, url: str) -> str:
    return f"""
[[sinks]]
name = "{name}"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = ["order.*"]
"""


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon runs on it (conftest's ``box`` serves it)."""
    return CLOCK


@pytest.fixture
def shop(state: SandboxState) -> HolderInfo:
    """Holder ``shop`` with no orders yet: each test's events are the ones it makes."""
    return state.create_holder("shop")


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Awaitable[tuple[WebhookReceiver, str]]]]:
    """A factory of verifying webhook receivers on loopback (each with its URL)."""
    servers: list[TestServer] = []

    async def make() -> tuple[WebhookReceiver, str]:
        hook = WebhookReceiver()
        servers.append(await start(hook.app))
        return hook, str(servers[-1].make_url("/events"))

    yield make
    for server in servers:
        await server.close()


class TestConfigChanges:
    @pytest.fixture
    def base(self, shop: HolderInfo, tmp_path: Path) -> Config:
        (tmp_path / "store.whsec").write_text(SECRET)
        sink = _sink("store", "http://127.0.0.1:9/hook?token=t0ps3cret")
        return load_config(write_config(tmp_path, "http://127.0.0.1:1/api/v1", shop, extra=sink))

    def test_the_same_file_changes_nothing(self, base: Config) -> None:
        """Loading an unchanged file again is an empty change with nothing to log."""
        changes = config_changes(base, base)
        assert changes.empty
        assert changes.log_fields() == {}

    def test_holders_added_removed_and_rekeyed(self, base: Config) -> None:
        """Holders are compared by name: new names are added, gone ones removed, keys noticed."""
        shop = base.holders[0]
        rekeyed = replace(shop, secret_key=Secret(generate_credentials().secret_key, "x"))
        other = replace(shop, name="other")
        assert config_changes(base, replace(base, holders=(rekeyed, other))).log_fields() == {
            "holders_added": ["other"],
            "holders_changed": {"shop": ["keys"]},
        }
        assert config_changes(base, replace(base, holders=())).holders_removed == ("shop",)
        countries = replace(shop, strain_countries=("PRT",))
        changed = config_changes(base, replace(base, holders=(countries,)))
        assert changed.holders_changed == {"shop": ("strain_countries",)}
        assert changed.rekeyed == ()

    def test_sinks_say_what_changed_but_never_a_secret_or_url(self, base: Config) -> None:
        """A rotated secret and a new URL are named, their values never appear."""
        store = base.sinks[0]
        assert isinstance(store, WebhookSinkConfig)
        rotated = replace(
            store,
            secrets=(Secret("whsec_bmV3IHNlY3JldCB2YWx1ZQ==", "inline"), *store.secrets),
            url="http://127.0.0.1:9/hook?token=n3wt0ken",
        )
        changes = config_changes(base, replace(base, sinks=(rotated,)))
        assert changes.sinks_changed == {"store": ("url", "secrets")}
        shown = json.dumps(changes.log_fields())
        for secret in ("t0ps3cret", "n3wt0ken", "bmV3IHNlY3JldCB2YWx1ZQ", SECRET[6:]):
            assert secret not in shown

    def test_a_sink_of_another_kind_is_a_kind_change(self, base: Config, tmp_path: Path) -> None:
        """A sink keeping its name but changing its kind is reported as a kind change."""
        store = base.sinks[0]
        as_file = FileSinkConfig(name=store.name, path=tmp_path / "events.jsonl")
        changes = config_changes(base, replace(base, sinks=(as_file,)))
        assert changes.sinks_changed == {"store": ("kind",)}

    def test_settings_show_old_and_new_values(self, base: Config) -> None:
        """Plain settings are listed as ``section.key: old → new`` in the file's own terms."""
        new = replace(
            base,
            schedule=replace(base.schedule, active_orders_s=30.0),
            api=replace(base.api, requests_per_second=2.5),
            delivery=replace(base.delivery, retry_schedule_s=(0.0, 60.0)),
        )
        assert config_changes(base, new).settings == (
            "api.requests_per_second: 200.0 → 2.5",
            "schedule.active_orders: 0.2s → 30s",
            "delivery.retry_schedule: [0s, 60s, 600s, 3600s, 21600s, 57600s] → [0s, 60s]",
        )

    def test_keys_only_a_restart_applies_are_kept(self, base: Config) -> None:
        """state_path, http_listen and logging keep their running values and are listed."""
        moved = replace(
            base.daemon,
            state_path=Path("/elsewhere.db"),
            log_level="debug",
            first_sync="emit",
        )
        changes = config_changes(base, replace(base, daemon=moved))
        assert changes.restart_required == ("daemon.state_path", "daemon.log_level")
        assert changes.settings == ("daemon.first_sync: seed → emit",)
        kept = keep_restart_keys(base.daemon, moved)
        assert (kept.state_path, kept.log_level, kept.first_sync) == (
            base.daemon.state_path,
            base.daemon.log_level,
            "emit",
        )


class Running:
    """``run_daemon`` in-process on a config file that a test rewrites and reloads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.controls = Controls()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        config = load_config(self.path)
        self.task = asyncio.create_task(
            run_daemon(config, CLOCK, self.controls, lambda: load_config(self.path))
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.controls.request_stop()
        await asyncio.wait_for(self.task, 5)

    async def until(self, check: Callable[[], bool], timeout_s: float = 5) -> None:
        assert self.task is not None
        await eventually(check, task=self.task, timeout_s=timeout_s)

    async def reload(self, logs: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
        """Ask for a reload and wait for its outcome line (``config_reloaded`` or the first
        ``config_reload_failed``)."""
        seen = len(logs)
        self.controls.reload.set()
        outcomes = {"config_reloaded", "config_reload_failed"}
        await self.until(lambda: any(e["event"] in outcomes for e in logs[seen:]))
        return next(e for e in logs[seen:] if e["event"] in outcomes)


def _events(hook: WebhookReceiver) -> list[str]:
    return [d.event["type"] for d in hook.accepted()]


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
            tmp_path, box.base_url, shop, first_sync="emit", extra=_sink("first", first_url)
        )
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: _events(first) == ["order.created"])
                write_config(
                    tmp_path,
                    box.base_url,
                    shop,
                    first_sync="emit",
                    extra=_sink("second", second_url),
                )
                reloaded = await daemon.reload(logs)
                box.state.lifecycle.approve(order.id)
                await daemon.until(lambda: _events(second) == ["order.approved"])
        assert reloaded["sinks_added"] == ["second"]
        assert reloaded["sinks_removed"] == ["first"]
        assert _events(first) == ["order.created"]

    @pytest.mark.timeout(30)
    async def test_holders_added_and_removed(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """An added holder is polled from the reload on; a removed one is not polled again."""
        other = box.state.create_holder("other")
        path = write_config(tmp_path, box.base_url, shop)
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                await daemon.until(lambda: _requests(box, "shop") > 0)
                write_config(tmp_path, box.base_url, other)
                reloaded = await daemon.reload(logs)
                await CLOCK.sleep(0.1)  # a request sent just before the reload may land now
                shop_requests = _requests(box, "shop")
                await daemon.until(lambda: _requests(box, "other") > 0)
                await CLOCK.sleep(0.5)  # two and a half intervals of 0.2 s
                assert _requests(box, "shop") == shop_requests
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
                await daemon.until(lambda: _requests(box, "shop") > 0)
                write_config(tmp_path, box.base_url, shop, interval="1h")
                slow = await daemon.reload(logs)
                await CLOCK.sleep(0.5)  # runs in progress end and reschedule an hour away
                quiet = _requests(box, "shop")
                await CLOCK.sleep(0.5)
                assert _requests(box, "shop") == quiet
                fast = write_config(tmp_path, box.base_url, shop).read_text()
                path.write_text(
                    fast.replace("requests_per_second = 200", "requests_per_second = 50")
                )
                quick = await daemon.reload(logs)
                await daemon.until(lambda: _requests(box, "shop") > quiet)
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
                await daemon.until(lambda: _logged(logs, "holder_unauthorized"))
                (tmp_path / "shop.api_key").write_text(shop.credentials.api_key)
                (tmp_path / "shop.secret_key").write_text(shop.credentials.secret_key)
                reloaded = await daemon.reload(logs)
                await daemon.until(lambda: _logged(logs, "holder_recovered"))
        assert reloaded["holders_changed"] == {"revoked": ["keys"]}

    @pytest.mark.timeout(30)
    async def test_an_invalid_file_keeps_the_running_config(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """Each problem of a bad file is one error line; polling and delivery go on as before."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        path = write_config(
            tmp_path, box.base_url, shop, first_sync="emit", extra=_sink("store", url)
        )
        good = path.read_text()
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: _events(hook) == ["order.created"])
                path.write_text(
                    good.replace("requests_per_second = 200", 'requests_per_second = "x"')
                    + "\n[bogus]\n"
                )
                await daemon.reload(logs)
                failed = [e for e in logs if e["event"] == "config_reload_failed"]
                box.state.lifecycle.approve(order.id)
                await daemon.until(lambda: _events(hook) == ["order.created", "order.approved"])
        assert [e["log_level"] for e in failed] == ["error", "error"]
        assert {e["problem"].split(":")[0] for e in failed} == {"api.requests_per_second", "bogus"}
        assert not _logged(logs, "config_reloaded")


def _requests(box: LocalSandbox, holder: str) -> int:
    total: int = box.state.traffic.request_counts(holder)["total"]
    return total


def _logged(logs: list[MutableMapping[str, Any]], event: str) -> bool:
    return any(e["event"] == event for e in logs)


class Process_:
    """``drgreen-poller run`` in a subprocess, its JSON log read line by line."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def until_logged(self, event: str, timeout_s: float = 10) -> dict[str, Any]:
        """Read the log until a line named ``event``; returns it."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"the daemon ended before logging {event}")
                self.lines.append(json.loads(raw))
                if self.lines[-1]["event"] == event:
                    return self.lines[-1]

    async def finish(self) -> tuple[int, list[dict[str, Any]], str]:
        """Wait for the exit; returns the exit code, every log line and stderr."""
        out, err = await asyncio.wait_for(self.process.communicate(), 10)
        self.lines.extend(json.loads(line) for line in out.splitlines())
        assert self.process.returncode is not None
        return self.process.returncode, self.lines, err.decode()


@pytest.fixture
async def run_cli() -> AsyncIterator[Callable[[Path], Awaitable[Process_]]]:
    """Starts ``drgreen-poller -c PATH run``; whatever is still running at the end is killed."""
    started: list[Process] = []

    async def launch(path: Path) -> Process_:
        process = await asyncio.create_subprocess_exec(
            *CLI, "-c", str(path), "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        started.append(process)
        return Process_(process)

    yield launch
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _received(hook: WebhookReceiver, expected: list[str], timeout_s: float = 10) -> None:
    deadline = CLOCK.monotonic() + timeout_s
    while _events(hook) != expected:
        assert CLOCK.monotonic() < deadline, f"{_events(hook)} != {expected}"
        await CLOCK.sleep(0.02)


class TestSignals:
    @pytest.mark.timeout(45)
    async def test_sighup_reloads_a_running_daemon(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        run_cli: Callable[[Path], Awaitable[Process_]],
        tmp_path: Path,
    ) -> None:
        """SIGHUP: a sink added to the file gets the next event; a broken file changes nothing."""
        (tmp_path / "store.whsec").write_text(SECRET)
        (first, first_url), (second, second_url) = await receivers(), await receivers()
        one = _sink("first", first_url)
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=one)
        daemon = await run_cli(path)
        await daemon.until_logged("daemon_started")
        order = box.state.orders.create("shop")
        await _received(first, ["order.created"])
        both = one + _sink("second", second_url)
        write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=both)
        daemon.process.send_signal(signal.SIGHUP)
        reloaded = await daemon.until_logged("config_reloaded")
        box.state.lifecycle.approve(order.id)
        await _received(second, ["order.approved"])
        path.write_text(
            path.read_text().replace('strain_countries = ["GBR"]', "strain_countries = 3")
        )
        daemon.process.send_signal(signal.SIGHUP)
        failed = await daemon.until_logged("config_reload_failed")
        box.state.lifecycle.pay(order.id)
        await _received(first, ["order.created", "order.approved", "order.paid"])
        await _received(second, ["order.approved", "order.paid"])
        daemon.process.send_signal(signal.SIGTERM)
        code, lines, err = await daemon.finish()
        assert code == 0, err
        assert reloaded["sinks_added"] == ["second"]
        assert failed["level"] == "error"
        assert failed["problem"].startswith("holders[0].strain_countries: ")
        assert [line["event"] for line in lines].count("config_reloaded") == 1
        assert "Traceback" not in err

    @pytest.mark.timeout(30)
    async def test_a_second_sigterm_stops_at_once(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        run_cli: Callable[[Path], Awaitable[Process_]],
        tmp_path: Path,
    ) -> None:
        """A delivery hanging through the grace period is cut by a second SIGTERM; the next
        start delivers it under the same id."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        hook.hang_next = 1
        sink = _sink("store", url) + 'timeout = "1h"\n'
        extra = sink.replace("[[sinks]]", '[delivery]\ntimeout = "1h"\n\n[[sinks]]')
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=extra)
        path.write_text(path.read_text().replace("[daemon]", '[daemon]\nstop_grace = "1h"'))
        daemon = await run_cli(path)
        box.state.orders.create("shop")
        while not hook.received:
            await CLOCK.sleep(0.02)
        daemon.process.send_signal(signal.SIGTERM)
        stopping = await daemon.until_logged("daemon_stopping")
        daemon.process.send_signal(signal.SIGTERM)
        code, lines, err = await daemon.finish()
        assert (code, err) == (0, "")
        assert stopping["deliveries_in_flight"] == 1
        assert "daemon_stop_forced" in [line["event"] for line in lines]
        again = await run_cli(path)
        await _received(hook, ["order.created"])
        again.process.send_signal(signal.SIGTERM)
        assert (await again.finish())[0] == 0
        assert hook.accepted()[0].id == hook.received[0].id


def _marked_unauthorized(state: Path) -> bool:
    """Whether the database remembers holder "revoked" as refused (False before it exists)."""
    query = "SELECT unauthorized_since FROM holders WHERE name = 'revoked'"
    return _value(state, query) is not None


def _value(state: Path, query: str) -> Any:
    """The first column of the first row of ``query`` (None when none, or no database yet)."""
    if not state.exists():
        return None
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        row = db.execute(query).fetchone()
    return row[0] if row is not None else None


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
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """After a reload that rotates a sink's secret, the next event is signed with it."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        path = write_config(
            tmp_path, box.base_url, shop, first_sync="emit", extra=_sink("store", url)
        )
        rotated = generate_webhook_secret()
        with structlog.testing.capture_logs() as logs:
            async with Running(path) as daemon:
                order = box.state.orders.create("shop")
                await daemon.until(lambda: _events(hook) == ["order.created"])
                (tmp_path / "store.whsec").write_text(rotated)
                reloaded = await daemon.reload(logs)
                box.state.lifecycle.approve(order.id)
                await daemon.until(lambda: len(_events(hook)) == 2)
        assert reloaded["sinks_changed"] == {"store": ["secrets"]}
        first, second = hook.accepted()
        assert [_signed_with(first, SECRET), _signed_with(first, rotated)] == [True, False]
        assert [_signed_with(second, SECRET), _signed_with(second, rotated)] == [False, True]

    @pytest.mark.timeout(30)
    async def test_a_sink_retired_while_its_attempt_hangs_is_closed_on_stop(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        receivers: Callable[[], Awaitable[tuple[WebhookReceiver, str]]],
        tmp_path: Path,
    ) -> None:
        """A sink replaced by a reload while its attempt hangs is still closed when a stop
        cuts that attempt (no unclosed HTTP session is left behind)."""
        (tmp_path / "store.whsec").write_text(SECRET)
        hook, url = await receivers()
        hook.hang_next = 1
        extra = '[delivery]\ntimeout = "1h"\n' + _sink("store", url)
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=extra)
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
        assert _logged(logs, "daemon_stop_forced")

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
                await daemon.until(lambda: _marked_unauthorized(tmp_path / "state.db"))
                write_config(tmp_path, box.base_url, replace(shop, name="other"), extra=refusing)
                assert (await daemon.reload(logs))["holders_removed"] == ["revoked"]
                write_config(tmp_path, box.base_url, replace(shop, name="revoked"), extra=refusing)
                assert (await daemon.reload(logs))["holders_added"] == ["revoked"]
                await daemon.until(lambda: _logged(logs, "holder_recovered"))

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
                await daemon.until(lambda: _requests(box, "keyed") > 0)
                box.state.traffic.add_fault({"kind": "slow", "delay_s": 1, "holder": "keyed"})
                box.state.revoke_holder_key("keyed")
                await CLOCK.sleep(0.4)  # a run (0.2 s intervals) is now waiting on its answer
                write_config(tmp_path, box.base_url, replace(shop, name="keyed"), extra=refusing)
                assert (await daemon.reload(logs))["holders_changed"] == {"keyed": ["keys"]}
                await daemon.until(lambda: _logged(logs, "holder_unauthorized"))
                await daemon.until(lambda: _logged(logs, "holder_recovered"))

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
        extra = '[delivery]\ntimeout = "1h"\n' + _sink("store", url)
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
            await daemon.until(lambda: _marked_unauthorized(tmp_path / "state.db"))
            await CLOCK.sleep(0.3)
            (tmp_path / "state.db").unlink()
            with pytest.raises(StoreError, match="was deleted"):
                await asyncio.wait_for(daemon.task, 10)
        failed = [e for e in logs if e["event"] == "state_database_failed"]
        assert [(e["log_level"], e.get("source")) for e in failed] == [("error", "delivery")]


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
        extra = "[delivery]\nconcurrency = 1\n" + _sink("store", url)
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
