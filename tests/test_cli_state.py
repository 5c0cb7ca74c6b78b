"""The state file as an operator meets it: backup while running, restore, deletion, replacement."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import stat
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from tests.conftest import write_config
from tests.test_cli_daemon import CLI, _run


@pytest.fixture
async def box() -> AsyncIterator[LocalSandbox]:
    async with LocalSandbox(SandboxState(SystemClock())) as sandbox:
        yield sandbox


@pytest.fixture
def shop(box: LocalSandbox) -> HolderInfo:
    holder = box.state.create_holder("shop")
    box.state.create_order("shop")
    return holder


@pytest.fixture
def config(box: LocalSandbox, shop: HolderInfo, tmp_path: Path) -> Path:
    return write_config(tmp_path, box.base_url, shop)


async def _start(config: Path) -> tuple[Process, list[dict[str, object]]]:
    """``run`` as a subprocess, once its first poll has finished; returns it and its log so far."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "-c", str(config), "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
    )
    assert process.stdout is not None
    lines: list[dict[str, object]] = []
    while not any(line["event"] == "poll_finished" for line in lines):
        lines.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 10)))
    return process, lines


async def _stop(process: Process) -> tuple[int, str, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


class TestBackup:
    @pytest.mark.timeout(60)
    async def test_backup_while_running_then_restore(
        self, box: LocalSandbox, config: Path, tmp_path: Path
    ) -> None:
        """backup copies a running daemon's state consistently; put back, it says restored."""
        process, _ = await _start(config)
        try:
            for _ in range(5):
                box.state.create_order("shop")
                await SystemClock().sleep(0.1)
            code, out, err = await _run("-c", str(config), "backup", str(tmp_path / "b.db"))
        finally:
            assert (await _stop(process))[0] == 0
        assert code == 0, err
        assert out.startswith(f"backed up {tmp_path / 'state.db'} to {tmp_path / 'b.db'} (")
        copy = tmp_path / "b.db"
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] >= 1
            assert db.execute("SELECT backup_taken_at FROM lineage").fetchone()[0]
        state = tmp_path / "state.db"
        for leftover in ("state.db-wal", "state.db-shm"):
            (tmp_path / leftover).unlink(missing_ok=True)
        shutil.copyfile(copy, state)
        code, out, _ = await _run("-c", str(config), "status", "--json")
        assert code == 0
        report = json.loads(out)["state"]
        assert report["restore_reason"].startswith("restored from a backup taken at ")

    async def test_backup_into_a_directory_and_refusals(self, config: Path, tmp_path: Path) -> None:
        """A directory gets a dated file; no state, or the state itself as target, is one line."""
        code, _, err = await _run("-c", str(config), "backup", str(tmp_path))
        state = tmp_path / "state.db"
        assert code == 1
        assert err.splitlines()[-1] == f"error: there is no state database at {state} to back up"
        assert (await _run("-c", str(config), "poll-once"))[0] == 0
        code, out, _ = await _run("-c", str(config), "backup", str(tmp_path))
        assert code == 0
        assert "drgreen-poller-state-" in out
        code, _, err = await _run("-c", str(config), "backup", str(state))
        assert code == 1
        assert "is the state database itself" in err
        code, _, err = await _run("-c", str(config), "backup", str(tmp_path / "no" / "b.db"))
        assert code == 1
        assert err.splitlines()[-1] == (
            f"error: cannot write the backup {tmp_path / 'no' / 'b.db'}: {tmp_path / 'no'} is not"
            " a directory"
        )
        assert "Traceback" not in err


class TestStateUnderTheDaemon:
    @pytest.mark.timeout(60)
    async def test_a_new_state_says_so(self, config: Path) -> None:
        """The first start on a new database logs that the state begins now."""
        process, lines = await _start(config)
        await _stop(process)
        [created] = [line for line in lines if line["event"] == "state_created"]
        assert created["level"] == "warning"
        code, out, _ = await _run("-c", str(config), "status")
        assert code == 0
        assert out.splitlines()[1].startswith("  began 20")

    @pytest.mark.timeout(60)
    async def test_deleted_while_running_stops_with_one_line(
        self, config: Path, tmp_path: Path
    ) -> None:
        """A database deleted under the daemon stops it at the next poll: exit 1, one line."""
        process, _ = await _start(config)
        (tmp_path / "state.db").unlink()
        code, _, err = await _stop_by_itself(process)
        assert code == 1
        assert err.splitlines()[-1] == (
            f"error: the state database {tmp_path / 'state.db'} was deleted while drgreen-poller"
            " ran; stopping so that nothing is written where it would be lost"
        )
        assert "Traceback" not in err

    @pytest.mark.timeout(60)
    async def test_replaced_while_running_stops_with_one_line(
        self, config: Path, tmp_path: Path
    ) -> None:
        """A database replaced under the daemon (renamed over) stops it: exit 1, one line."""
        process, _ = await _start(config)
        shutil.copyfile(tmp_path / "state.db", tmp_path / "other.db")
        os.replace(tmp_path / "other.db", tmp_path / "state.db")
        code, _, err = await _stop_by_itself(process)
        assert code == 1
        assert "was replaced by another file while drgreen-poller ran" in err.splitlines()[-1]


async def _stop_by_itself(process: Process) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
