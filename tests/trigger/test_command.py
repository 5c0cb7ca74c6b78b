"""``drgreen-poller trigger`` as a command: exit codes and usage errors, and a sample delivered
by the running daemon's worker (the command waiting for its attempts)."""

from __future__ import annotations

import asyncio
import signal
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import Config
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.samples import sample
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import SinkRoute, Store
from drgreen_poller.trigger import _result, _watch, chosen_sinks
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config
from tests.trigger.rig import NOW, SECRET, Receiver, config_file, sinks_toml


class TestTriggerCommand:
    async def test_without_a_daemon(
        self, config: Config, receiver: tuple[Receiver, TestServer]
    ) -> None:
        """With no daemon running, the command delivers and says so, per sink."""
        code, out, err = await run_cli(
            "-c", str(config.path), "trigger", "order.approved", timeout_s=40
        )
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
        code, out, _ = await run_cli(
            "-c", str(config.path), "trigger", "order.paid", "--sink", "store", timeout_s=40
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
        path = config_file(tmp_path, str(receiver[1].make_url("/hook")), credentials)
        with path.open("a") as file:
            file.write('\n[delivery]\nretry_schedule = ["0s"]\n')
        code, out, _ = await run_cli(
            "-c", str(path), "trigger", "client.created", "--sink", "store", timeout_s=40
        )
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
        code, out, err = await run_cli("-c", str(config.path), "trigger", *args, timeout_s=40)
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
        path = str(write_config(tmp_path, box.base_url, shop, interval="1s", extra=sinks_toml(url)))
        daemon = await asyncio.create_subprocess_exec(
            *CLI, "-c", path, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        try:
            assert daemon.stdout is not None
            while b"poll_finished" not in await asyncio.wait_for(daemon.stdout.readline(), 10):
                pass
            code, out, err = await run_cli(
                "-c", path, "trigger", "client.activated", "--sink", "store", timeout_s=40
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.communicate(), 15)
        assert code == 0, err
        assert out.splitlines()[1] == "  store: delivered (HTTP 204) by the running daemon"
        assert receiver[0].ids == [out.split()[3]]


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
