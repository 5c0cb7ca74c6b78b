"""The command line as a user runs it: real processes, real ports, exit codes and messages."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import stat
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller import __version__
from drgreen_poller.cli import build_parser
from drgreen_poller.errors import ConfigError
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.trial import write_trial_config
from tests.cli_run import CLI, run_cli
from tests.conftest import ClientFactory


class TestBasics:
    async def test_version(self) -> None:
        """--version prints the version and exits 0."""
        code, out, _ = await run_cli("--version")
        assert (code, out.strip()) == (0, f"drgreen-poller {__version__}")

    @pytest.mark.timeout(60)
    async def test_help(self) -> None:
        """Every subcommand has --help."""
        for command in (
            ["run"],
            ["check-config"],
            ["poll-once"],
            ["status"],
            ["events", "list"],
            ["track"],
            ["sandbox"],
            ["demo"],
        ):
            code, out, _ = await run_cli(*command, "--help")
            assert code == 0
            assert f"drgreen-poller {' '.join(command)}" in out

    async def test_usage_error_is_exit_2(self) -> None:
        """A bad argument is a usage error: exit 2, a message, no traceback."""
        code, _, err = await run_cli("sandbox", "--port", "99999")
        assert code == 2
        assert "99999 is not between 0 and 65535" in err
        assert "Traceback" not in err


class TestSandboxCommand:
    async def test_first_line_is_a_usable_holder(self, make_client: ClientFactory) -> None:
        """The first stdout line is JSON with a working base URL and key pair; SIGTERM stops it."""
        process = await asyncio.create_subprocess_exec(
            *CLI, "sandbox", "--port", "0", stdout=PIPE, stderr=PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            ready: dict[str, Any] = json.loads(line)
            assert set(ready) >= {"base_url", "api_key", "secret_key"}
            assert ready["base_url"].startswith("http://127.0.0.1:")
            assert ready["base_url"].endswith("/api/v1")
            creds = ApiCredentials(ready["api_key"], ready["secret_key"])
            summary = await make_client(ready["base_url"], creds=creds).orders_summary()
            assert summary.total
            assert summary.total > 0
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert b"Traceback" not in stderr

    async def test_port_in_use(self) -> None:
        """A port already taken is one clear error line and exit 1."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            code, _, err = await run_cli("sandbox", "--port", str(port))
        assert code == 1
        assert f"cannot listen on 127.0.0.1:{port}" in err
        assert "Traceback" not in err


class TestTrialConfig:
    async def test_write_config_gives_a_working_setup(self, tmp_path: Path) -> None:
        """sandbox --write-config writes a config that passes check-config --online."""
        target = tmp_path / "try"
        process = await asyncio.create_subprocess_exec(
            *CLI, "sandbox", "--port", "0", "--write-config", str(target), stdout=PIPE, stderr=PIPE
        )
        try:
            assert process.stdout is not None
            await asyncio.wait_for(process.stdout.readline(), 10)
            code, out, err = await run_cli(
                "-c", str(target / "config.toml"), "check-config", "--online"
            )
            assert code == 0, err
            assert "demo: ok: signed call accepted" in out
            assert stat.S_IMODE((target / "demo.secret_key").stat().st_mode) == 0o600
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 10)

    def test_never_overwrites_a_users_config(self, tmp_path: Path) -> None:
        """A config.toml the user wrote is left alone, with a clear refusal."""
        (tmp_path / "config.toml").write_text("[daemon]\n")
        with pytest.raises(ConfigError, match="not written by --write-config"):
            write_trial_config(tmp_path, {"api_key": "a", "secret_key": "s", "base_url": "u"})
        assert (tmp_path / "config.toml").read_text() == "[daemon]\n"


class TestGlobalOptions:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["-c", "a.toml", "status"], ("a.toml", None)),
            (["status", "-c", "b.toml", "--log-level", "debug"], ("b.toml", "debug")),
            (
                ["-c", "a.toml", "--log-level", "error", "status", "-c", "b.toml"],
                ("b.toml", "error"),
            ),
            (["events", "list", "--config", "c.toml"], ("c.toml", None)),
            (["deliveries", "list", "--log-level", "warning"], (None, "warning")),
        ],
    )
    def test_before_or_after_the_command(
        self, argv: list[str], expected: tuple[str | None, str | None]
    ) -> None:
        """-c, --log-level and --log-format work before or after the command; after wins."""
        args = build_parser().parse_args(argv)
        assert (args.config, args.log_level) == expected

    async def test_check_config_takes_c_after_its_name(self, tmp_path: Path) -> None:
        """``check-config -c FILE`` reads FILE (it was refused as an unknown argument)."""
        path = tmp_path / "bad.toml"
        path.write_text('[api]\nburst = "many"\n')
        code, _, err = await run_cli("check-config", "-c", str(path))
        assert code == 2
        assert "error: api.burst: must be an integer, not a string" in err
