"""The daemon commands as a user runs them: check-config, poll-once, status, events, track, run."""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.request_signing import generate_credentials
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon and its subprocesses run on it (conftest's ``box`` serves it)."""
    return SystemClock()


@pytest.fixture
def config(box: LocalSandbox, shop: HolderInfo, tmp_path: Path) -> str:
    return str(write_config(tmp_path, box.base_url, shop))


class TestCheckConfig:
    async def test_ok_and_online(self, config: str) -> None:
        """A good file passes, and --online makes one accepted signed call per holder."""
        code, out, err = await run_cli("-c", config, "check-config", "--online")
        assert code == 0, err
        assert "ok (1 holder(s): shop; 0 sink(s))" in out
        assert "shop: ok: signed call accepted (1 orders)" in out

    async def test_online_401_is_explained(self, box: LocalSandbox, config: str) -> None:
        """A revoked key fails --online with exit 1 and an explanation of what to check."""
        box.state.revoke_holder_key("shop")
        code, out, _ = await run_cli("-c", config, "check-config", "--online")
        assert code == 1
        assert "shop: FAILED: HTTP 401: User is not authorized" in out
        assert "current pair" in out

    async def test_problems_are_exit_2_one_line_each(self, tmp_path: Path) -> None:
        """An invalid file: exit 2, one 'error:' line per problem naming the key, no traceback."""
        path = tmp_path / "bad.toml"
        path.write_text(
            '[api]\nburst = "many"\n[schedule]\nactive_orders = "soon"\n'
            '[[holders]]\nname = "x"\napi_key_file = "/nope"\nsecret_key_env = "UNSET_VAR"\n'
        )
        code, _, err = await run_cli("-c", str(path), "check-config")
        assert code == 2
        assert err.splitlines() == [
            "error: api.burst: must be an integer, not a string",
            "error: holders[0].api_key_file: no such file: /nope",
            "error: holders[0].secret_key_env: environment variable UNSET_VAR is not set or empty",
            'error: schedule.active_orders: \'soon\' is not a duration (use e.g. "90s", "30m", '
            '"1h", "7d")',
        ]

    async def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is one line and exit 2."""
        code, _, err = await run_cli("-c", str(tmp_path / "none.toml"), "check-config")
        assert code == 2
        assert "no such file: " in err
        assert "none.toml (pass -c/--config or set DRGREEN_POLLER_CONFIG)" in err
        assert "Traceback" not in err


class TestPollingCommands:
    @pytest.mark.timeout(60)
    async def test_poll_once_status_events(self, box: LocalSandbox, config: str) -> None:
        """poll-once prints events as JSON lines; status and events list show what happened."""
        code, out, err = await run_cli("-c", config, "poll-once")
        assert (code, out) == (0, ""), err
        assert "first sync" in err
        order = box.state.orders.create("shop")
        code, out, _ = await run_cli("-c", config, "poll-once", "--dry-run")
        assert [json.loads(line)["type"] for line in out.splitlines()] == ["order.created"]
        code, out, _ = await run_cli("-c", config, "poll-once")
        [event] = [json.loads(line) for line in out.splitlines()]
        assert (event["type"], event["resource"]["id"]) == ("order.created", order.id)

        code, out, _ = await run_cli("-c", config, "status", "--json")
        report = json.loads(out)
        tiers = {t["tier"]: t for t in report["holders"][0]["tiers"]}
        assert tiers["active_orders"]["active"] == 2
        assert tiers["active_orders"]["consecutive_failures"] == 0
        code, out, _ = await run_cli("-c", config, "status")
        assert "holder shop" in out
        assert "active_orders" in out

        code, out, _ = await run_cli("-c", config, "events", "list", "--type", "order.*")
        assert "order.created" in out
        assert order.id in out
        code, out, _ = await run_cli("-c", config, "events", "list", "--since", "1h", "--json")
        assert json.loads(out.splitlines()[0])["id"] == event["id"]
        code, _, err = await run_cli("-c", config, "events", "list", "--since", "yesterday")
        assert code == 2
        assert "--since 'yesterday'" in err

    @pytest.mark.timeout(60)
    async def test_track(self, box: LocalSandbox, config: str) -> None:
        """track puts a new order in the active set; a non-UUID is a usage error."""
        order = box.state.orders.create("shop")
        code, out, _ = await run_cli("-c", config, "track", "order", order.id)
        assert code == 0
        assert "will be watched" in out
        code, out, _ = await run_cli("-c", config, "poll-once")
        assert "order.created" in out
        code, _, err = await run_cli("-c", config, "track", "order", "12345")
        assert code == 2
        assert "is not a Dr Green id" in err
        code, _, err = await run_cli("-c", config, "track", "order", order.id, "--holder", "other")
        assert code == 2
        assert "no such holder" in err


class TestRun:
    @pytest.mark.timeout(60)
    async def test_run_stops_cleanly_and_refuses_a_twin(self, config: str) -> None:
        """run polls until SIGTERM (exit 0); a second run on the same database exits 1."""
        process = await asyncio.create_subprocess_exec(
            *CLI, "-c", config, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        assert process.stdout is not None
        seen: list[str] = []
        while "poll_finished" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            seen.append(json.loads(line)["event"])
        code, _, err = await run_cli("-c", config, "run")
        assert code == 1
        assert "already running" in err
        code, _, err = await run_cli("-c", config, "poll-once")
        assert code == 1
        assert "poll-once would race it (use poll-once --dry-run" in err
        code, _, err = await run_cli("-c", config, "poll-once", "--dry-run")
        assert code == 0, err
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert b"Traceback" not in stderr

    async def test_mixed_up_key_pair_is_a_config_error(
        self, box: LocalSandbox, shop: HolderInfo, tmp_path: Path
    ) -> None:
        """An api_key that does not match the secret_key is refused before anything runs."""
        path = write_config(tmp_path, box.base_url, shop)
        (tmp_path / "shop.api_key").write_text(generate_credentials().api_key)
        code, _, err = await run_cli("-c", str(path), "run")
        assert code == 2
        assert "api_key is not the public key of secret_key" in err
