"""The CLI's conventions as a user meets them: listings (order, --json, empty), per-id retry,
status's exit code, no database created by a reader, connection errors in words, listen's secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.listener import ListenerState, build_listener
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sinks import build_sinks
from drgreen_poller.store import Store
from drgreen_poller.webhook_signing import generate_webhook_secret, sign_hex, sign_webhook
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config
from tests.fakes import start
from tests.ports import free_port


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the CLI's processes run on it (conftest's ``box`` serves it)."""
    return SystemClock()


CLOCK = SystemClock()


def _sinks(hook_port: int) -> str:
    """An audit file sink and a webhook sink to ``hook_port``; a failed attempt is final."""
    return f"""
[delivery]
retry_schedule = ["0s"]

[[sinks]]
name = "audit"
kind = "file"
path = "events.jsonl"
events = ["order.*"]

[[sinks]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/events"
secret_file = "hook.whsec"
events = ["order.*"]
"""


async def _on_a_terminal(*args: str) -> str:
    """Run the CLI with stdout on a pseudo-terminal; returns what it printed there."""
    leader, follower = os.openpty()
    process = await asyncio.create_subprocess_exec(*CLI, *args, stdout=follower, stderr=PIPE)
    os.close(follower)
    await asyncio.wait_for(process.wait(), 20)
    output = b""
    while chunk := await asyncio.to_thread(_read_pty, leader):
        output += chunk
    os.close(leader)
    return output.decode().replace("\r\n", "\n")


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other end is closed and drained
        return b""


@pytest.fixture
async def delivered(box: LocalSandbox, shop: HolderInfo, tmp_path: Path) -> dict[str, Any]:
    """A state after one recorded pass (three orders created) and one round of delivery:
    the oldest delivery left in flight, the rest delivered to ``audit`` and failed to ``hook``
    (nobody listens there)."""
    box.state.orders.create_many("shop", 2)
    (tmp_path / "hook.whsec").write_text(f"whsec_{base64.b64encode(b'k' * 32).decode()}")
    path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=_sinks(free_port()))
    code, out, err = await run_cli("-c", str(path), "poll-once")
    assert code == 0, err
    config = load_config(path, {})
    store = await Store.open(config.daemon.state_path, clock=CLOCK, sinks=())
    sinks = build_sinks(config.sinks, config.delivery)
    try:
        # The oldest (audit's) claimed, never finished.
        [in_flight] = (await store.settle([], CLOCK.now(), {"audit": 1})).claimed
        worker = DeliveryWorker(store, sinks, config.delivery, CLOCK, random.Random(0))
        while await worker.run_once():
            pass
        states = {row.id: row.state for row in await store.deliveries(limit=100)}
    finally:
        for sink in sinks.values():
            await sink.close()
        await store.close()
    return {
        "config": str(path),
        "states": states,
        "in_flight": in_flight.id,
        "events": [json.loads(line)["id"] for line in out.splitlines()],
    }


class TestListings:
    @pytest.mark.timeout(60)
    async def test_same_order_and_json(self, delivered: dict[str, Any]) -> None:
        """events list and deliveries list are both oldest first; deliveries list --json is
        one object per line, with the attempt log under --attempts."""
        config = str(delivered["config"])
        code, out, _ = await run_cli("-c", config, "events", "list", "--json")
        listed = [json.loads(line)["id"] for line in out.splitlines()]
        assert (code, listed) == (0, delivered["events"])  # as poll-once recorded them
        code, out, _ = await run_cli("-c", config, "deliveries", "list")
        ids = [int(line.split()[0]) for line in out.splitlines()]
        assert (code, ids) == (0, sorted(ids))
        assert len(ids) == 6
        code, out, _ = await run_cli("-c", config, "deliveries", "list", "--json", "--attempts")
        rows = [json.loads(line) for line in out.splitlines()]
        assert [row["id"] for row in rows] == ids
        failed = next(row for row in rows if row["sink"] == "hook")
        assert failed["state"] == "failed"
        [attempt] = failed["attempt_log"]
        assert attempt["ok"] is False
        assert attempt["error_class"] == "connection refused"
        assert attempt["response_excerpt"].startswith("cannot connect to 127.0.0.1:")
        code, out, _ = await run_cli("-c", config, "deliveries", "list", "--json", "--limit", "1")
        [newest] = [json.loads(line) for line in out.splitlines()]
        assert newest["id"] == ids[-1]
        assert "attempt_log" not in newest

    @pytest.mark.timeout(60)
    async def test_empty(self, delivered: dict[str, Any]) -> None:
        """Nothing to list: 'no events' / 'no deliveries' on a terminal; no output at all to a
        program, plain or --json (an empty JSON Lines stream)."""
        config = str(delivered["config"])
        no_events = ("-c", config, "events", "list", "--type", "nothing.*")
        no_deliveries = ("-c", config, "deliveries", "list", "--state", "pending")
        assert await _on_a_terminal(*no_events) == "no events\n"
        assert await _on_a_terminal(*no_deliveries) == "no deliveries\n"
        for args in (no_events, no_deliveries):
            assert await run_cli(*args) == (0, "", "")
            assert await run_cli(*args, "--json") == (0, "", "")


class TestRetry:
    @pytest.mark.timeout(60)
    async def test_says_per_id_why_not(self, delivered: dict[str, Any]) -> None:
        """retry confirms each id requeued and says why each other one was not; exit 1 then."""
        config, states = str(delivered["config"]), delivered["states"]
        failed = [i for i, state in states.items() if state == "failed"]
        done = next(i for i, state in states.items() if state == "delivered")
        in_flight = delivered["in_flight"]
        code, out, err = await run_cli(
            "-c", config, "deliveries", "retry", str(failed[0]), str(done), str(in_flight), "999"
        )
        assert code == 1
        assert out == f"delivery {failed[0]} requeued\n"
        assert err.splitlines() == [
            f"error: delivery {done} not requeued: already delivered",
            f"error: delivery {in_flight} not requeued: being delivered right now (a daemon "
            "stopped mid-attempt puts it back to pending when it starts again)",
            "error: delivery 999 not requeued: no such delivery",
        ]
        code, out, _ = await run_cli(
            "-c", config, "deliveries", "list", "--state", "pending", "--json"
        )
        [requeued] = [json.loads(line) for line in out.splitlines()]
        assert (requeued["id"], requeued["attempts"]) == (failed[0], 1)
        assert requeued["next_attempt_at"].endswith("Z")
        code, out, err = await run_cli("-c", config, "deliveries", "retry", *map(str, failed[1:]))
        assert (code, err) == (0, "")
        assert out.splitlines() == [f"delivery {i} requeued" for i in failed[1:]]


class TestStatusHealth:
    @pytest.mark.timeout(60)
    async def test_healthy_is_0(self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path) -> None:
        """Every tier polled just now, nothing failed: exit 0, 'health: ok', healthy in JSON."""
        config = str(write_config(tmp_path, box.base_url, shop))
        assert (await run_cli("-c", config, "poll-once"))[0] == 0
        code, out, _ = await run_cli("-c", config, "status")
        assert (code, out.splitlines()[-1]) == (0, "health: ok")
        code, out, _ = await run_cli("-c", config, "status", "--json")
        report = json.loads(out)
        assert (code, report["healthy"], report["problems"]) == (0, True, [])

    @pytest.mark.timeout(60)
    async def test_failed_deliveries_are_1(self, delivered: dict[str, Any]) -> None:
        """Failed deliveries wait for an operator: exit 1, the sink named in the problems."""
        code, out, _ = await run_cli("-c", str(delivered["config"]), "status")
        assert code == 1
        assert "health: UNHEALTHY" in out
        failed = sum(state == "failed" for state in delivered["states"].values())
        assert failed >= 2
        assert f"  sink hook: {failed} failed delivery(ies), retried only by an operator" in out

    @pytest.mark.timeout(60)
    async def test_overdue_deliveries_are_1(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """Events owed to a sink for longer than health_max_delivery_age (nobody delivering
        them) make status exit 1, by /healthz's own rule."""
        audit = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "events.jsonl"\n'
        path = write_config(tmp_path, box.base_url, shop, first_sync="emit", extra=audit)
        text = path.read_text().replace("[daemon]\n", "[daemon]\nhealth_max_delivery_age = 0.001\n")
        path.write_text(text)
        assert (await run_cli("-c", str(path), "poll-once"))[0] == 0
        code, out, _ = await run_cli("-c", str(path), "status", "--json")
        report = json.loads(out)
        assert (code, report["healthy"]) == (1, False)
        assert report["problems"][0].startswith("sink audit: oldest undelivered event waiting ")

    @pytest.mark.timeout(60)
    async def test_refused_key_is_1(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """A holder whose key Dr Green refused the daemon makes status exit 1, naming it."""
        config = str(write_config(tmp_path, box.base_url, shop))
        box.state.revoke_holder_key("shop")
        async with _daemon(config) as lines:
            await _wait_for(lines, "holder_unauthorized")
            deadline = CLOCK.monotonic() + 10
            code, out, _ = await run_cli("-c", config, "status", "--json")
            while code == 0 and CLOCK.monotonic() < deadline:  # the mark follows the log line
                code, out, _ = await run_cli("-c", config, "status", "--json")
        report = json.loads(out)
        assert (code, report["healthy"]) == (1, False)
        assert report["problems"][0].startswith("shop: Dr Green refuses the key since ")


@asynccontextmanager
async def _daemon(config: str) -> AsyncIterator[asyncio.StreamReader]:
    """``run`` as a subprocess logging JSON lines; stopped with SIGTERM on the way out."""
    daemon = await asyncio.create_subprocess_exec(
        *CLI, "-c", config, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
    )
    assert daemon.stdout is not None
    try:
        yield daemon.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.communicate(), 20)


async def _wait_for(lines: asyncio.StreamReader, event: str) -> dict[str, Any]:
    """Read the daemon's log until ``event``; returns that line."""
    line: dict[str, Any] = {}
    while line.get("event") != event:
        line = json.loads(await asyncio.wait_for(lines.readline(), 10))
    return line


class TestNoStateNoDatabase:
    @pytest.mark.timeout(60)
    async def test_readers_refuse(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """Without a state database, readers and repairs say so in one line, exit 1, and
        leave no file behind."""
        audit = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "events.jsonl"\n'
        config = str(write_config(tmp_path, box.base_url, shop, extra=audit))
        before = sorted(os.listdir(tmp_path))
        state = tmp_path / "state.db"
        commands = [
            ["status"],
            ["status", "--json"],
            ["events", "list"],
            ["deliveries", "list", "--json"],
            ["deliveries", "retry", "1"],
            ["deliveries", "retry", "--all-failed"],
            ["deliveries", "replay", "--since", "1h", "--sink", "audit"],
        ]
        results = await asyncio.gather(*(run_cli("-c", config, *c) for c in commands))
        for command, (code, out, err) in zip(commands, results, strict=True):
            assert (code, out) == (1, ""), command
            assert err.splitlines()[-1] == (
                f"error: there is no state database at {state} (the daemon creates it when it "
                "first runs; is daemon.state_path right?)"
            ), command
        assert sorted(os.listdir(tmp_path)) == before

    @pytest.mark.timeout(60)
    async def test_dry_run_shows_a_first_pass(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """poll-once --dry-run on a fresh install shows what a first pass finds, creates nothing."""
        config = str(write_config(tmp_path, box.base_url, shop, first_sync="emit"))
        before = sorted(os.listdir(tmp_path))
        code, out, err = await run_cli(
            "-c", config, "--log-level", "warning", "poll-once", "--dry-run"
        )
        assert code == 0, err
        assert "order.created" in [json.loads(line)["type"] for line in out.splitlines()]
        assert err.splitlines()[1] == (
            f"no state at {tmp_path / 'state.db'} yet: showing what a first pass would find, "
            "against an empty state (nothing written)"
        )
        assert sorted(os.listdir(tmp_path)) == before


class TestConnectionErrors:
    @pytest.mark.timeout(60)
    async def test_in_words_everywhere(self, shop: HolderInfo, tmp_path: Path) -> None:
        """A closed API port reads 'cannot connect to HOST:PORT: connection refused' in
        check-config --online, poll-once and the daemon's poll_failed line."""
        port = free_port()
        config = str(write_config(tmp_path, f"http://127.0.0.1:{port}/api/v1", shop))
        refused = f"cannot connect to 127.0.0.1:{port}: connection refused"
        code, out, _ = await run_cli("-c", config, "check-config", "--online")
        assert code == 1
        assert out.splitlines()[1] == f"shop: FAILED: {refused} (GET /dapp/orders/summary)"
        code, _, err = await run_cli("-c", config, "--log-level", "error", "poll-once")
        assert code == 1
        assert f"error: shop/active_orders: {refused} (GET /dapp/orders)" in err.splitlines()
        async with _daemon(config) as lines:
            line = await _wait_for(lines, "poll_failed")
        assert str(line["error"]).startswith(refused)


class TestListenSecret:
    @pytest.mark.parametrize(
        ("secret", "problem"),
        [
            ("", "empty; give a whsec_ secret (make one with: drgreen-poller secret)"),
            ("hunter2", "not a whsec_ secret (for a hmac-sha256-hex sink, pass its "
             "configuration with -c instead of --secret)"),
            ("whsec_not*base64", "the text after whsec_ is not base64"),
            ("whsec_c2hvcnQ=", "holds 5 bytes; a whsec_ secret holds 24 to 64 (drgreen-poller "
             "secret)"),
        ],
    )  # fmt: skip
    async def test_malformed_is_one_line_exit_2(self, secret: str, problem: str) -> None:
        """A malformed --secret is refused before listening: one line, exit 2, not echoed."""
        code, out, err = await run_cli("listen", "--port", str(free_port()), "--secret", secret)
        assert (code, out, err) == (2, "", f"error: --secret: {problem}\n")


class TestListenerSecrets:
    async def test_a_hex_sinks_secret_does_not_break_standard_webhooks(self) -> None:
        """With a hmac-sha256-hex sink's plain secret among its secrets (listen -c FILE), the
        listener still verifies Standard Webhooks (it answered 500) and the hex scheme."""
        whsec = generate_webhook_secret()
        state = ListenerState(["plain text secret", whsec])
        said: list[str] = []
        server = await start(build_listener(state, CLOCK, said.append))
        body = b'{"id": "evt_1"}'
        stamp = int(CLOCK.now().timestamp())
        standard = {
            "webhook-id": "evt_1", "webhook-timestamp": str(stamp),
            "webhook-signature": sign_webhook([whsec], "evt_1", stamp, body),
        }  # fmt: skip
        hexed = {"webhook-id": "evt_2", "x-signature": sign_hex("plain text secret", body)}
        try:
            async with aiohttp.ClientSession() as session:
                for headers in (standard, hexed):
                    async with session.post(server.make_url("/"), data=body, headers=headers) as r:
                        assert r.status == 204
        finally:
            await server.close()
        assert [line.split(":")[0] for line in said] == ["ok       evt_1", "ok       evt_2"]
