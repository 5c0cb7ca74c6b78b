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
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the CLI's processes run on it (conftest's ``box`` serves it)."""
    return SystemClock()


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
    try:
        while not any(line["event"] == "poll_finished" for line in lines):
            lines.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 10)))
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, lines


async def _stop(process: Process) -> tuple[int, str, str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await _stop_by_itself(process)


class TestBackup:
    @pytest.mark.timeout(60)
    async def test_backup_while_running_then_restore(
        self, box: LocalSandbox, config: Path, tmp_path: Path
    ) -> None:
        """backup copies a running daemon's state consistently; put back, it says restored."""
        process, _ = await _start(config)
        try:
            for _ in range(5):
                box.state.orders.create("shop")
                await SystemClock().sleep(0.1)
            code, out, err = await run_cli("-c", str(config), "backup", str(tmp_path / "b.db"))
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
        code, out, err = await run_cli("-c", str(config), "restore", str(copy))
        assert code == 0, err
        [restored, kept] = out.splitlines()
        assert restored == f"restored {copy} to {tmp_path / 'state.db'}"
        assert kept.startswith(f"the database it replaced is kept as {tmp_path / 'state.db'}.")
        code, out, _ = await run_cli("-c", str(config), "status", "--json")
        assert code == 0
        report = json.loads(out)["state"]
        assert report["restore_reason"].startswith("restored from a backup taken at ")

    async def test_backup_into_a_directory_and_refusals(self, config: Path, tmp_path: Path) -> None:
        """A directory gets a dated file; no state, or the state itself as target, is one line."""
        code, _, err = await run_cli("-c", str(config), "backup", str(tmp_path))
        state = tmp_path / "state.db"
        assert code == 1
        assert err.splitlines()[-1] == f"error: there is no state database at {state} to back up"
        assert (await run_cli("-c", str(config), "poll-once"))[0] == 0
        code, out, _ = await run_cli("-c", str(config), "backup", str(tmp_path))
        assert code == 0
        assert "drgreen-poller-state-" in out
        code, _, err = await run_cli("-c", str(config), "backup", str(state))
        assert code == 1
        assert "is the state database itself" in err
        code, _, err = await run_cli("-c", str(config), "backup", f"{tmp_path / 'nodir'}/")
        assert code == 1
        assert err.splitlines()[-1].endswith("nodir/: no such directory")
        code, _, err = await run_cli("-c", str(config), "backup", str(tmp_path / "no" / "b.db"))
        assert code == 1
        assert err.splitlines()[-1] == (
            f"error: cannot write the backup {tmp_path / 'no' / 'b.db'}: {tmp_path / 'no'} is not"
            " a directory"
        )
        assert "Traceback" not in err


class TestRestore:
    @pytest.mark.timeout(60)
    async def test_refused_while_running_and_for_a_non_state(
        self, config: Path, tmp_path: Path
    ) -> None:
        """restore refuses while the daemon runs, and refuses a file that is not a state."""
        process, _ = await _start(config)
        try:
            assert (await run_cli("-c", str(config), "backup", str(tmp_path / "b.db")))[0] == 0
            code, _, err = await run_cli("-c", str(config), "restore", str(tmp_path / "b.db"))
        finally:
            await _stop(process)
        assert code == 1
        assert "already running" in err.splitlines()[-1]
        (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
        code, _, err = await run_cli("-c", str(config), "restore", str(tmp_path / "junk.db"))
        assert code == 1
        assert err.splitlines()[-1].startswith(f"error: {tmp_path / 'junk.db'} is not a SQLite")
        code, _, err = await run_cli("-c", str(config), "restore", str(tmp_path / "none.db"))
        assert err.splitlines()[-1] == f"error: {tmp_path / 'none.db'} is not a file"
        assert "Traceback" not in err

    async def test_a_plain_copy_put_back_rebases(self, config: Path, tmp_path: Path) -> None:
        """A plain copy put back with restore moves the sequences forward at the next open."""
        assert (await run_cli("-c", str(config), "poll-once"))[0] == 0
        shutil.copyfile(tmp_path / "state.db", tmp_path / "plain.db")
        code, _, err = await run_cli("-c", str(config), "restore", str(tmp_path / "plain.db"))
        assert code == 0, err
        code, out, _ = await run_cli("-c", str(config), "status", "--json")
        reason = json.loads(out)["state"]["restore_reason"]
        assert reason == (
            "restored from a backup taken at an unknown time (put back by drgreen-poller restore)"
        )


class TestRestoreKeepsWhatItReplaces:
    async def test_over_a_damaged_database_and_twice_in_a_row(
        self, config: Path, tmp_path: Path
    ) -> None:
        """restore replaces even a damaged file, and every database it replaces is kept as was."""
        assert (await run_cli("-c", str(config), "poll-once"))[0] == 0
        assert (await run_cli("-c", str(config), "backup", str(tmp_path / "b.db")))[0] == 0
        state = tmp_path / "state.db"
        damaged = os.urandom(8192)
        state.write_bytes(damaged)
        kept = []
        for _ in range(2):
            code, out, err = await run_cli("-c", str(config), "restore", str(tmp_path / "b.db"))
            assert code == 0, err
            kept.append(Path(out.splitlines()[1].rsplit(" ", 1)[1]))
        assert kept[0] != kept[1]
        assert kept[0].read_bytes() == damaged
        with sqlite3.connect(kept[1]) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert (await run_cli("-c", str(config), "status"))[0] == 0


class TestStateUnderTheDaemon:
    @pytest.mark.timeout(60)
    async def test_a_new_state_says_so(self, config: Path) -> None:
        """The first start on a new database logs that the state begins now."""
        process, lines = await _start(config)
        await _stop(process)
        [created] = [line for line in lines if line["event"] == "state_created"]
        assert created["level"] == "warning"
        code, out, _ = await run_cli("-c", str(config), "status")
        assert code == 0
        assert out.splitlines()[1].startswith("  began 20")

    @pytest.mark.timeout(60)
    async def test_deleted_while_running_stops_with_one_line(
        self, config: Path, tmp_path: Path
    ) -> None:
        """A database deleted under the daemon stops it at the next poll: exit 1, one line."""
        process, _ = await _start(config)
        (tmp_path / "state.db").unlink()
        code, out, err = await _stop_by_itself(process)
        assert code == 1
        logged = [json.loads(line) for line in out.splitlines()]
        assert {"error"} == {
            line["level"] for line in logged if line["event"] == "state_database_failed"
        }
        assert err.splitlines()[-1] == (
            f"error: the state database {tmp_path / 'state.db'} was deleted while drgreen-poller"
            " ran; stopping so that nothing is written where it would be lost"
        )
        assert "Traceback" not in err
        process, lines = await _start(config)  # what systemd does next
        await _stop(process)
        [lost] = [line for line in lines if line["event"] == "state_lost"]
        assert lost["level"] == "error"
        assert str(lost["reason"]).startswith("the state that was here before is gone")
        code, out, _ = await run_cli("-c", str(config), "status")
        assert "the state that was here before is gone" in out.splitlines()[1]

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
    """Wait for the daemon to stop on its own; one that does not is killed, not left behind."""
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
