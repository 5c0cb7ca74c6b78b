"""``drgreen-poller trigger``: a sample of each type, valid and marked as a test, sent through the
outbox and the sinks to a real receiver that verifies it with the ``standardwebhooks`` library;
delivered by this command without a daemon, by the daemon's worker with one."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.commands_contract import _said
from drgreen_poller.config import Config, load_config
from drgreen_poller.contract import EVENT_TYPES
from drgreen_poller.delivery import CLAIM_AHEAD
from drgreen_poller.errors import ConfigError
from drgreen_poller.events import envelope
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.samples import TEST_ID_PREFIX, sample
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import DeliveryState, Observation, SinkRoute, Store
from drgreen_poller.trigger import SinkResult, _Only, _result, _watch, chosen_sinks, trigger
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.contract_check import problems
from tests.fakes import start

CLI = (sys.executable, "-m", "drgreen_poller")
SECRET = generate_webhook_secret()
NOW = FakeClock().now()


@dataclass
class Receiver:
    """A store's endpoint verifying with ``standardwebhooks``: 204, 401 unverified, or 500."""

    fail: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        from standardwebhooks.webhooks import Webhook

        body = await request.read()
        try:
            event = Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:  # the library's own verification error types
            self.refused += 1
            return web.Response(status=401)
        self.events.append(event)
        self.ids.append(request.headers["webhook-id"])
        return (
            web.Response(status=500, text="store down") if self.fail else web.Response(status=204)
        )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await start(app)
    try:
        yield hook, server
    finally:
        await server.close()


def _sinks(url: str) -> str:
    """A webhook sink for orders and clients, and a file sink for everything."""
    return f"""
[[sinks]]
name = "store"
kind = "webhook"
url = "{url}"
secret_file = "store.whsec"
events = ["order.*", "client.*"]

[[sinks]]
name = "audit"
kind = "file"
path = "events.jsonl"
events = ["*"]
"""


def _config_file(directory: Path, url: str, credentials: ApiCredentials) -> Path:
    (directory / "store.whsec").write_text(SECRET)
    holder = HolderInfo("shop", credentials, user_id="u-1", nft=None)
    return write_config(directory, "http://127.0.0.1:9/api/v1", holder, extra=_sinks(url))


@pytest.fixture
def config(
    receiver: tuple[Receiver, TestServer], tmp_path: Path, credentials: ApiCredentials
) -> Config:
    return load_config(_config_file(tmp_path, str(receiver[1].make_url("/hook")), credentials))


class TestSamples:
    @pytest.mark.parametrize("event_type", EVENT_TYPES)
    def test_valid_and_marked(self, event_type: str) -> None:
        """The sample of each type matches its schemas and says test: true, about test_ ids."""
        observation = sample(event_type, holder="shop", country="GBR", now=NOW)
        [change] = observation.changes
        event = envelope(
            holder="shop", resource=observation.resource, sequence=1, change=change,
            observed_at=NOW, obj=observation.obj,
        )  # fmt: skip
        assert problems(event) == []
        assert event["test"] is True
        assert event["resource"]["id"].startswith(TEST_ID_PREFIX)

    def test_real_events_carry_no_mark(self) -> None:
        """An event of the poller's has no test field at all."""
        observation = sample("order.paid", holder="shop", country="GBR", now=NOW)
        event = envelope(
            holder="shop", resource=observation.resource, sequence=1,
            change=Change("order.paid", {"paymentStatus": "PENDING"}), observed_at=NOW,
            obj=observation.obj,
        )  # fmt: skip
        assert "test" not in event
        assert problems(event) == []

    def test_unknown_type(self) -> None:
        """A type the daemon never emits has no sample."""
        with pytest.raises(ConfigError, match=r"unknown event type 'order\.x'"):
            sample("order.x", holder="shop", country="GBR", now=NOW)


class TestChosenSinks:
    def test_every_sink_that_takes_the_type(self, config: Config) -> None:
        """Without --sink: each sink whose filter takes the type."""
        assert [s.name for s in chosen_sinks(config, "order.paid", None)] == ["store", "audit"]
        assert [s.name for s in chosen_sinks(config, "strain.created", None)] == ["audit"]

    @pytest.mark.parametrize(
        ("event_type", "sink", "message"),
        [
            ("order.paid", "nope", "--sink 'nope': no such sink (store, audit)"),
            (
                "strain.created",
                "store",
                "--sink store: its events filter (order.*, client.*) does not take strain.created",
            ),
            ("order.x", "store", "unknown event type 'order.x'"),
        ],
    )
    def test_refusals(self, config: Config, event_type: str, sink: str, message: str) -> None:
        """An unknown sink or type, or a sink that does not take the type: one clear line."""
        with pytest.raises(ConfigError) as caught:
            chosen_sinks(config, event_type, sink)
        (line,) = caught.value.problems
        assert line.startswith(message)

    def test_no_sink_takes_it(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """No sink at all for the type names every filter."""
        holder = HolderInfo("shop", credentials, user_id="u-1", nft=None)
        path = write_config(tmp_path, "http://127.0.0.1:9/api/v1", holder)
        with pytest.raises(ConfigError, match=r"no sink takes order\.paid"):
            chosen_sinks(load_config(path), "order.paid", None)


class TestTriggerWithoutDaemon:
    async def test_delivered_signed_to_each_sink(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """The sample reaches the webhook (verified by standardwebhooks) and the file, once."""
        hook, _ = receiver
        report = await trigger(config, "order.approved", None, SystemClock())
        assert (report.delivered_by, report.ok) == ("trigger", True)
        assert [(r.sink, r.state, r.outcome) for r in report.results] == [
            ("store", DeliveryState.DELIVERED, "204"),
            ("audit", DeliveryState.DELIVERED, "ok"),
        ]
        assert hook.refused == 0
        assert hook.events == [report.event]
        assert hook.ids == [report.event["id"]]
        assert report.event["test"] is True
        assert problems(report.event) == []
        line = (config.daemon.state_path.parent / "events.jsonl").read_text().splitlines()
        assert [json.loads(text) for text in line] == [report.event]

    async def test_each_trigger_is_a_new_event(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """Two triggers of one type are two events with two ids, both logged."""
        hook, _ = receiver
        first = await trigger(config, "client.kyc.completed", "store", SystemClock())
        second = await trigger(config, "client.kyc.completed", "store", SystemClock())
        assert first.event["id"] != second.event["id"]
        assert hook.ids == [first.event["id"], second.event["id"]]
        store = await Store.open_reader(config.daemon.state_path)
        try:
            logged = await store.events(patterns=["client.kyc.completed"])
        finally:
            await store.close()
        assert logged == [first.event, second.event]

    async def test_a_refusing_receiver(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """A 500 is a failed attempt with its excerpt, left pending for the daemon's retries."""
        hook, _ = receiver
        hook.fail = True
        report = await trigger(config, "order.paid", "store", SystemClock())
        assert not report.ok
        [result] = report.results
        assert (result.state, result.outcome, result.excerpt) == ("pending", "500", "store down")

    async def test_the_backlog_is_left_to_the_daemon(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """Other due deliveries stay pending, also other sinks': the command delivers only its
        sample."""
        hook, _ = receiver
        routes = [SinkRoute("store", ("*",)), SinkRoute("audit", ("*",))]
        store = await Store.open(config.daemon.state_path, sinks=routes)
        try:
            waiting = sample("order.created", holder="shop", country="GBR", now=NOW)
            await store.commit_events("shop", [waiting], now=NOW)
        finally:
            await store.close()
        report = await trigger(config, "order.paid", "store", SystemClock())
        assert hook.ids == [report.event["id"]]
        store = await Store.open_reader(config.daemon.state_path)
        try:
            states = {(r.event_type, r.sink): r.state for r in await store.deliveries()}
        finally:
            await store.close()
        assert states == {
            ("order.created", "store"): "pending",
            ("order.created", "audit"): "pending",
            ("order.paid", "store"): "delivered",
        }

    async def test_queued_behind_a_due_backlog(
        self, tmp_path: Path, credentials: ApiCredentials, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """Behind more due deliveries than one claim takes, the sample waits its turn, queued."""
        hook, server = receiver
        path = _config_file(tmp_path, str(server.make_url("/hook")), credentials)
        with path.open("a") as file:
            file.write("\n[delivery]\nconcurrency = 1\n")  # a claim takes CLAIM_AHEAD rows
        config = load_config(path)
        store = await Store.open(config.daemon.state_path, sinks=[SinkRoute("store", ("*",))])
        try:
            for _ in range(CLAIM_AHEAD + 1):
                waiting = sample("order.created", holder="shop", country="GBR", now=NOW)
                await store.commit_events("shop", [waiting], now=NOW)
        finally:
            await store.close()
        report = await trigger(config, "order.paid", "store", SystemClock())
        assert [(r.state, r.outcome) for r in report.results] == [("queued", None)]
        assert report.ok
        assert hook.ids == []


class TestOnlyTheSample:
    async def test_leaves_the_daemons_upkeep_alone(self, tmp_path: Path) -> None:
        """Claiming for the sample resets no delivering row and prunes nothing."""
        store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("s", ("*",))])
        try:
            only = _Only(store, set())
            obs: Observation = sample("order.paid", holder="h", country="GBR", now=NOW)
            await store.commit_events("h", [obs], now=NOW)
            claimed = await store.settle([], NOW, {"s": 10})  # as a daemon's worker would
            assert len(claimed.claimed) == 1
            assert await only.reset_delivering(NOW) == 0
            assert await only.unrouted(["another"], 100) == []
            assert await only.prune(NOW) == (0, 0)
            await only.release([claimed.claimed[0].id], NOW)
            assert [r.state for r in await store.deliveries()] == ["pending"]
        finally:
            await store.close()


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*CLI, *args, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestTriggerCommand:
    async def test_without_a_daemon(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """With no daemon running, the command delivers and says so, per sink."""
        code, out, err = await _cli("-c", str(config.path), "trigger", "order.approved")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("sent test event evt_")
        assert "(order.approved, holder shop, order test_" in lines[0]
        assert lines[1:] == [
            "  store: delivered (HTTP 204) by this command (no daemon is running)",
            "  audit: delivered (ok) by this command (no daemon is running)",
        ]
        assert receiver[0].ids == [lines[0].split()[3]]

    async def test_a_failed_delivery_is_exit_1(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """A receiver answering 500: the line says so and what happens next; exit 1."""
        receiver[0].fail = True
        code, out, _ = await _cli(
            "-c", str(config.path), "trigger", "order.paid", "--sink", "store"
        )
        assert code == 1
        assert out.splitlines()[1] == (
            "  store: attempt failed (HTTP 500: store down); 'drgreen-poller run' retries it "
            "on its retry schedule"
        )

    async def test_a_last_attempt_that_failed(
        self, tmp_path: Path, credentials: ApiCredentials, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """With one attempt in the schedule, a refusal is final and the line says how to requeue."""
        receiver[0].fail = True
        path = _config_file(tmp_path, str(receiver[1].make_url("/hook")), credentials)
        with path.open("a") as file:
            file.write('\n[delivery]\nretry_schedule = ["0s"]\n')
        code, out, _ = await _cli("-c", str(path), "trigger", "client.created", "--sink", "store")
        assert code == 1
        assert out.splitlines()[1] == (
            "  store: failed (HTTP 500: store down); 'drgreen-poller deliveries retry' requeues it"
        )

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("order.x",), "error: unknown event type 'order.x'; the known types are: "),
            (("order.paid", "--sink", "nope"), "error: --sink 'nope': no such sink (store, audit)"),
            (("strain.removed", "--sink", "store"), "error: --sink store: its events filter"),
        ],
    )
    async def test_usage_errors(self, config: Config, args: tuple[str, ...], message: str) -> None:
        """Unknown type or sink, or a sink that does not take the type: one line, exit 2."""
        code, out, err = await _cli("-c", str(config.path), "trigger", *args)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1
        assert err.startswith(message)
        assert not config.daemon.state_path.exists()


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon runs in a subprocess (conftest's ``box`` serves it)."""
    return SystemClock()


class TestTriggerWithTheDaemon:
    @pytest.mark.timeout(60)
    async def test_the_running_daemon_delivers_it(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        tmp_path: Path,
        receiver: tuple[Receiver, TestServer],
    ) -> None:
        """With the daemon running, its worker delivers the sample and the command reports it."""
        (tmp_path / "store.whsec").write_text(SECRET)
        url = str(receiver[1].make_url("/hook"))
        path = str(write_config(tmp_path, box.base_url, shop, interval="1s", extra=_sinks(url)))
        daemon = await asyncio.create_subprocess_exec(
            *CLI, "-c", path, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        try:
            assert daemon.stdout is not None
            while b"poll_finished" not in await asyncio.wait_for(daemon.stdout.readline(), 10):
                pass
            code, out, err = await _cli(
                "-c", path, "trigger", "client.activated", "--sink", "store"
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.communicate(), 15)
        assert code == 0, err
        assert out.splitlines()[1] == "  store: delivered (HTTP 204) by the running daemon"
        assert receiver[0].ids == [out.split()[3]]


class TestWhatTheCommandSays:
    @pytest.mark.parametrize(
        ("result", "daemon", "said"),
        [
            (
                SinkResult("store", "queued", None, None),
                True,
                "queued: the running daemon has not attempted it yet "
                "(see 'drgreen-poller deliveries list --sink store')",
            ),
            (
                SinkResult("store", "queued", None, None),
                False,
                "queued behind deliveries due before it: 'drgreen-poller run' delivers them in "
                "order",
            ),
            (
                SinkResult("store", "pending", "connection refused", "cannot connect to h:1"),
                True,
                "attempt failed (cannot connect to h:1); the daemon retries it on its retry "
                "schedule",
            ),
            (
                SinkResult("store", "delivered", "204", None),
                True,
                "delivered (HTTP 204) by the running daemon",
            ),
        ],
    )
    def test_each_outcome(self, result: SinkResult, daemon: bool, said: str) -> None:
        """Each sink's line says what happened and what happens next."""
        assert _said(result, daemon=daemon) == said


class TestWatching:
    async def test_gives_up_waiting_for_a_daemon(self, tmp_path: Path, config: Config) -> None:
        """A daemon that does not attempt the sample in time leaves it reported as queued."""
        observation = sample("order.paid", holder="shop", country="GBR", now=NOW)
        store = await Store.open(config.daemon.state_path, sinks=[SinkRoute("store", ("*",))])
        try:
            [event] = (await store.commit_events("shop", [observation], now=NOW)).events
            sinks = chosen_sinks(config, "order.paid", "store")
            rows = await _watch(store, event["id"], sinks, FakeClock(), patience_s=0)
            assert [(await _result(store, row)).state for row in rows] == ["queued"]
        finally:
            await store.close()


class TestOnPostgres:
    async def test_the_sample_goes_to_the_store_database(
        self, config: Config, receiver: tuple[Receiver, TestServer], pg_database: PgDatabase
    ) -> None:
        """With a ``[store]`` database, the sample is committed and delivered there, and no
        SQLite file is made beside the configuration."""
        hook, _ = receiver
        on_pg = replace(config, store=pg_store_config(pg_database))
        report = await trigger(on_pg, "order.approved", "store", SystemClock())
        assert (report.delivered_by, report.ok) == ("trigger", True)
        assert hook.ids == [report.event["id"]]
        store = await Store.open_reader(on_pg.state)
        try:
            assert await store.events(patterns=["order.approved"]) == [report.event]
        finally:
            await store.close()
        assert not config.daemon.state_path.exists()
