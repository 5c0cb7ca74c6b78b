"""Listing commands piped into a reader that stops early (``| head -1``) exit quietly, like git.

The reader closes the pipe after one line while the command still has far more than a pipe
buffer (64 KiB) to write: the command must end without a traceback, with the status a shell
shows for ``git log | head`` (141, killed by SIGPIPE).
"""

from __future__ import annotations

import asyncio
import os
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.commands import EXIT_BROKEN_PIPE
from drgreen_poller.sandbox import LocalSandbox, SandboxState
from tests.cli_run import CLI, run_cli
from tests.conftest import write_config

ORDERS = 1500  # 1,500 events: about 170 KB as a table (a pipe holds 64 KiB), 1.5 MB as JSON
SINK = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "events.jsonl"\nevents = ["order.*"]\n'


@dataclass
class Seeded:
    recorded: Path  # a configuration whose state holds ORDERS events and their deliveries
    fresh: Path  # the same sandbox, a state not yet synced (poll-once --dry-run shows all)


async def _head_1(*args: str, until: str = "") -> tuple[str, int, str]:
    """Run the CLI into a pipe whose reader closes it after one line (or the first with ``until``).

    Returns that line, the exit status and stderr.
    """
    read_end, write_end = os.pipe()
    process = await asyncio.create_subprocess_exec(*CLI, *args, stdout=write_end, stderr=PIPE)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        line = await asyncio.to_thread(reader.readline)
        while until.encode() not in line:
            line = await asyncio.to_thread(reader.readline)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return line.decode(), process.returncode, err.decode()


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[Seeded]:
    async with LocalSandbox(SandboxState(SystemClock())) as box:
        holder = box.state.create_holder("shop")
        box.state.orders.create_many("shop", ORDERS)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        recorded = write_config(tmp_path / "a", box.base_url, holder, first_sync="emit", extra=SINK)
        fresh = write_config(tmp_path / "b", box.base_url, holder, first_sync="emit", extra=SINK)
        code, _, err = await run_cli("-c", str(recorded), "poll-once", timeout_s=30)
        assert code == 0, err
        yield Seeded(recorded, fresh)


class TestClosedPipe:
    @pytest.mark.timeout(90)
    async def test_listings_and_a_dry_run_exit_quietly(self, seeded: Seeded) -> None:
        """Listings and poll-once --dry-run into `head -1`: 141, no trace; read to the end: 0."""
        listed = ("-c", str(seeded.recorded))
        runs = {
            "events list": (*listed, "events", "list", "--limit", "5000"),
            "events list --json": (*listed, "events", "list", "--limit", "5000", "--json"),
            "deliveries list": (*listed, "deliveries", "list", "--limit", "5000"),
            "poll-once --dry-run": ("-c", str(seeded.fresh), "poll-once", "--dry-run"),
        }
        for name, args in runs.items():
            line, status, err = await _head_1(*args)
            assert "order" in line, name
            assert "Traceback" not in err, (name, err)
            assert "BrokenPipe" not in err, (name, err)
            assert status == EXIT_BROKEN_PIPE, (name, status, err)
        code, _, err = await run_cli(*runs["events list"], timeout_s=30)
        assert (code, err) == (0, "")


class TestDaemonIntoClosedPipe:
    @pytest.mark.timeout(60)
    async def test_run_stops_like_on_sigterm(self, tmp_path: Path) -> None:
        """run's log reader gone mid-run (`| grep -m1`): a clean stop, 141, no logging errors."""
        async with LocalSandbox(SandboxState(SystemClock())) as box:
            holder = box.state.create_holder("shop")
            config = write_config(tmp_path, box.base_url, holder, extra=SINK)
            line, status, err = await _head_1(
                "-c", str(config), "--log-format", "json", "run", until="poll_finished"
            )
        assert "poll_finished" in line
        assert "Logging error" not in err
        assert "Traceback" not in err
        assert status == EXIT_BROKEN_PIPE
