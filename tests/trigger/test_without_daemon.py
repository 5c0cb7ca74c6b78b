"""``drgreen-poller trigger`` with no daemon running: the command delivers the sample itself,
with the daemon's own worker and sinks, to a receiver that verifies it (also on PostgreSQL),
and leaves every other delivery to the daemon."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from aiohttp.test_utils import TestServer

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, load_config
from drgreen_poller.delivery import CLAIM_AHEAD
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.samples import sample
from drgreen_poller.store import DeliveryState, Observation, SinkRoute, Store
from drgreen_poller.trigger import _Only, trigger
from tests.conftest import PgDatabase, pg_store_config
from tests.contract_check import problems
from tests.trigger.rig import NOW, Receiver, config_file


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
        path = config_file(tmp_path, str(server.make_url("/hook")), credentials)
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
