"""``sandbox --write-config``: the commands it prints work when pasted as printed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from drgreen_poller.trial import program_name
from tests.cli_run import CLI


class TestProgramName:
    def test_python_dash_m_is_spelled_with_this_interpreter(self) -> None:
        """Started as ``python -m drgreen_poller``, the commands say the same."""
        name = program_name("/x/drgreen_poller/__main__.py", "/opt/py 3/bin/python", lambda _: None)
        assert name == "'/opt/py 3/bin/python' -m drgreen_poller"

    def test_the_bare_name_only_when_path_finds_this_program(self, tmp_path: Path) -> None:
        """``drgreen-poller`` alone when PATH leads to this very program, else the path used."""
        ours = tmp_path / "venv" / "bin" / "drgreen-poller"
        other = tmp_path / "elsewhere" / "drgreen-poller"
        for script in (ours, other):
            script.parent.mkdir(parents=True)
            script.write_text("#!/bin/sh\n")
        assert program_name(str(ours), "python", lambda _: str(ours)) == "drgreen-poller"
        assert program_name(str(ours), "python", lambda _: str(other)) == str(ours)
        assert program_name(str(ours), "python", lambda _: None) == str(ours)
        relative = os.path.relpath(ours)
        assert program_name(relative, "python", lambda _: None) == relative


class TestPrintedCommands:
    @pytest.mark.timeout(60)
    async def test_pasted_as_printed_they_work(self, tmp_path: Path) -> None:
        """check-config --online, poll-once --dry-run and run, pasted into a shell, succeed.

        (``listen`` is printed too; it takes port 8080, which a test cannot count on.)
        """
        sandbox = await asyncio.create_subprocess_exec(
            *CLI, "sandbox", "--port", "0",
            "--write-config", "try", cwd=tmp_path, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        try:
            assert sandbox.stdout is not None
            assert sandbox.stderr is not None
            await asyncio.wait_for(sandbox.stdout.readline(), 10)
            printed = [
                (await asyncio.wait_for(sandbox.stderr.readline(), 10)).decode() for _ in range(6)
            ]
            assert printed[0].startswith("wrote try/config.toml ")
            commands = {_verb(line): line.strip() for line in printed if line.startswith("  ")}
            assert set(commands) == {"listen", "check-config", "poll-once", "run"}
            code, out = await _shell(commands["check-config"], tmp_path)
            assert code == 0, out
            assert "demo: ok: signed call accepted" in out
            code, out = await _shell(commands["poll-once"], tmp_path)
            assert code == 0, out
            assert "would be recorded (dry run: nothing written)" in out
            await _run_then_stop(commands["run"], tmp_path)
        finally:
            sandbox.send_signal(signal.SIGTERM)
            await asyncio.wait_for(sandbox.communicate(), 10)


def _verb(line: str) -> str:
    """The subcommand of a printed ``PROGRAM -c CONFIG VERB ...`` line."""
    words = line.split()
    return words[words.index("-c") + 2]


async def _shell(line: str, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", line, cwd=cwd, stdout=PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _run_then_stop(line: str, cwd: Path) -> None:
    """Start the daemon as printed, see it start, stop it with SIGTERM: exit 0."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", f"exec {line}", cwd=cwd, stdout=PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    try:
        while True:
            raw = await asyncio.wait_for(process.stdout.readline(), 10)
            assert raw, "the daemon ended before it started"
            if json.loads(raw).get("event") == "daemon_started":
                break
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
