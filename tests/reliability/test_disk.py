"""The disk under a running daemon (issue 7, point 11c), each case through the real CLI.

A full disk, a read-only state directory, a garbage database file, the database deleted or
replaced while the daemon runs, and two daemons on one database. The sandbox runs in its own
process (``drgreen-poller sandbox --port 0``) and events go to a real receiver on loopback.
``RELIABILITY_FULL=1`` (``make reliability``) fills the disk several times instead of once.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.request_signing import generate_credentials
from tests.fakes import WebhookReceiver
from tests.reliability.disk_support import (
    CLOCK,
    Daemon,
    Driver,
    Sandbox,
    Upstream,
    check_deliveries,
    exceptions,
    fill,
    mount_refusal,
    problem_lines,
    read_only,
    run_cli,
    sandbox_process,
    tmpfs,
    until_delivered,
    write_config,
)

FULL = os.environ.get("RELIABILITY_FULL") == "1"
FILL_ROUNDS = 3 if FULL else 1
CHANGES_PER_ROUND = 20 if FULL else 5
# Room for the database and a WAL of 1,000 pages (SQLite's checkpoint point) before filling.
TMPFS_KIB = 16 * 1024
# How long a daemon gets to notice a lost database: over a dozen of its 0.2 s polls.
NOTICE_S = 3.0


@dataclass
class World:
    """A sandbox process, a receiver on loopback, a driver of upstream changes, a config."""

    sandbox: Sandbox
    receiver: WebhookReceiver
    driver: Driver
    config: Path
    state: Path


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with sandbox_process(tmp_path / "sandbox.log") as running:
        yield running


def _world(
    tmp_path: Path,
    state_dir: Path,
    sandbox: Sandbox,
    webhook_receiver: tuple[WebhookReceiver, str],
    session: aiohttp.ClientSession,
) -> World:
    state = state_dir / "state.db"
    config = write_config(tmp_path, sandbox, state, webhook_receiver[1])
    driver = Driver(session, sandbox.control_url, random.Random(11))
    return World(sandbox, webhook_receiver[0], driver, config, state)


@pytest.fixture
def world(
    tmp_path: Path,
    sandbox: Sandbox,
    webhook_receiver: tuple[WebhookReceiver, str],
    session: aiohttp.ClientSession,
) -> World:
    """The world with its state in ``tmp_path/state``."""
    (tmp_path / "state").mkdir()
    return _world(tmp_path, tmp_path / "state", sandbox, webhook_receiver, session)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs for the state directory, unmounted afterwards; skipped where not root."""
    refusal = mount_refusal()
    if refusal:
        pytest.skip(refusal)
    try:
        with tmpfs(tmp_path / "state", TMPFS_KIB) as mounted:
            yield mounted
    except OSError as exc:  # root in a container without CAP_SYS_ADMIN
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


StartDaemon = Callable[[Path], Awaitable[Daemon]]


@pytest.fixture
async def start_daemon() -> AsyncIterator[StartDaemon]:
    """Start ``drgreen-poller run`` processes; any still running at the end is killed."""
    started: list[Daemon] = []

    async def start(config: Path) -> Daemon:
        started.append(await Daemon.start(config))
        return started[-1]

    try:
        yield start
    finally:
        for daemon in started:
            await daemon.kill()


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


def _clean_log(daemon: Daemon) -> None:
    """No traceback in what the daemon printed, nor an exception in its JSON log lines."""
    _no_traceback(*daemon.lines, *daemon.stderr)
    assert exceptions(daemon) == []


async def _changes(driver: Driver, receiver: WebhookReceiver, count: int) -> None:
    """Make ``count`` upstream changes and wait until the receiver has them all."""
    for _ in range(count):
        await driver.step()
    await until_delivered(receiver, driver.expected)
    check_deliveries(receiver, driver.expected)


class TestDiskFull:
    @pytest.mark.timeout(120 * FILL_ROUNDS)
    async def test_full_disk_stops_cleanly_and_loses_nothing(
        self,
        tmp_path: Path,
        small_disk: Path,
        sandbox: Sandbox,
        webhook_receiver: tuple[WebhookReceiver, str],
        session: aiohttp.ClientSession,
        start_daemon: StartDaemon,
    ) -> None:
        """Filling the state disk under changes stops the daemon with one line; nothing is lost."""
        w = _world(tmp_path, small_disk, sandbox, webhook_receiver, session)
        for _ in range(FILL_ROUNDS):
            daemon = await start_daemon(w.config)
            await daemon.synced()
            await _changes(w.driver, w.receiver, CHANGES_PER_ROUND)
            stop_driving = asyncio.Event()
            driving = asyncio.create_task(w.driver.run(stop_driving))
            try:
                filler = fill(small_disk)
                code = await daemon.exit_code(60)
            finally:
                stop_driving.set()
                await driving
            assert code == 1, daemon.output()
            [line] = problem_lines(daemon)
            assert "full" in line, line
            _clean_log(daemon)
            filler.unlink()
        daemon = await start_daemon(w.config)
        await until_delivered(w.receiver, w.driver.expected)
        assert await daemon.stop() == 0, daemon.output()
        check_deliveries(w.receiver, w.driver.expected)
        _clean_log(daemon)

    @pytest.mark.timeout(60)
    async def test_full_disk_logs_no_traceback(
        self, tmp_path: Path, small_disk: Path, sandbox: Sandbox, start_daemon: StartDaemon
    ) -> None:
        """A poll that cannot write its state is logged as one error, without a traceback."""
        config = write_config(tmp_path, sandbox, small_disk / "state.db", None)
        daemon = await start_daemon(config)
        await daemon.synced()
        fill(small_disk)  # with no sink to deliver to, the next poll's commit is what fails
        code = await daemon.exit_code(30)
        assert code == 1, daemon.output()
        assert daemon.count("state_database_failed") >= 1
        assert exceptions(daemon) == []


class TestReadOnly:
    @pytest.fixture(params=["empty", "with a database"])
    async def locked_config(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[tuple[Path, Path]]:
        """A config whose state directory is read-only: empty, or holding an earlier state."""
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        config = _offline_config(tmp_path, state_dir / "state.db")
        if request.param != "empty":
            # track writes, so it creates the state database (a reader such as status never does)
            order = "00000000-0000-4000-8000-000000000001"
            code, _, err = await run_cli(config, "track", "order", order)
            assert code == 0, err
        try:
            with read_only(state_dir):
                yield config, state_dir
        except OSError as exc:
            pytest.skip(f"cannot make a read-only mount here: {exc}")

    @pytest.mark.parametrize("command", ["run", "check-config"])
    async def test_unwritable_directory_is_one_line(
        self, locked_config: tuple[Path, Path], command: str
    ) -> None:
        """run and check-config say in one line which path cannot be written and why; both fail."""
        config, state_dir = locked_config
        code, out, err = await run_cli(config, command)
        _no_traceback(out, err)
        [line] = problem_lines(err)
        assert str(state_dir) in line, line
        assert ("Read-only file system" if os.geteuid() == 0 else "Permission denied") in line
        assert code in ((1,) if command == "run" else (1, 2))


def _offline_config(tmp_path: Path, state: Path) -> Path:
    """A valid config whose Dr Green is nowhere (for cases that must fail before polling)."""
    credentials = generate_credentials()
    nowhere = Upstream("http://127.0.0.1:9/api/v1", credentials.api_key, credentials.secret_key)
    return write_config(tmp_path, nowhere, state, "http://127.0.0.1:9/hook")


class TestGarbageDatabase:
    @pytest.fixture(params=["random bytes", "truncated", "text"])
    async def garbage(self, request: pytest.FixtureRequest, tmp_path: Path, world: World) -> bytes:
        """Write a database file that is not one: random bytes, half a real one, or prose."""
        if request.param == "random bytes":
            content = random.Random(7).randbytes(16384)
        elif request.param == "truncated":
            code, _, err = await run_cli(world.config, "poll-once")
            assert code == 0, err
            with sqlite3.connect(world.state) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            real = world.state.read_bytes()
            content = real[: len(real) // 2]
        else:
            content = b"state_path must point at a SQLite file, and this is a note.\n"
        for leftover in world.state.parent.iterdir():
            leftover.unlink()
        world.state.write_bytes(content)
        return content

    @pytest.mark.parametrize("command", ["run", "poll-once", "status"])
    async def test_garbage_is_one_line_and_untouched(
        self, world: World, garbage: bytes, command: str
    ) -> None:
        """A file that is not a state database: one line, a failure, the file left as it was."""
        code, out, err = await run_cli(world.config, command)
        _no_traceback(out, err)
        [line] = problem_lines(err)
        assert str(world.state) in line, line
        assert code in (1, 2)
        assert world.state.read_bytes() == garbage


class TestDatabaseLost:
    async def _running(self, world: World, start_daemon: StartDaemon) -> Daemon:
        daemon = await start_daemon(world.config)
        await daemon.wait_for("poll_finished", times=3)
        return daemon

    async def _check_stopped(self, daemon: Daemon, since_loss: datetime) -> None:
        code = await daemon.exit_code(NOTICE_S)
        assert code == 1, daemon.output()
        [line] = problem_lines(daemon)
        assert "state.db" in line, line
        assert daemon.count("poll_finished", after=since_loss) <= 1
        _clean_log(daemon)

    @pytest.mark.timeout(30)
    async def test_deleted_database_stops_the_daemon(
        self, world: World, start_daemon: StartDaemon
    ) -> None:
        """Deleting the database under the daemon stops it within one poll: exit 1, one line."""
        daemon = await self._running(world, start_daemon)
        lost_at = CLOCK.now()
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            (world.state.parent / name).unlink(missing_ok=True)
        await self._check_stopped(daemon, lost_at)

    @pytest.mark.timeout(30)
    async def test_replaced_database_stops_the_daemon(
        self, world: World, start_daemon: StartDaemon
    ) -> None:
        """A database renamed over the daemon's stops it within one poll: exit 1, one line."""
        daemon = await self._running(world, start_daemon)
        copy = world.state.with_name("older.db")
        with sqlite3.connect(world.state) as live, sqlite3.connect(copy) as older:
            live.backup(older)
        lost_at = CLOCK.now()
        copy.replace(world.state)
        await self._check_stopped(daemon, lost_at)


class TestTwoDaemons:
    @pytest.mark.timeout(60)
    async def test_second_refuses_first_carries_on(
        self, world: World, start_daemon: StartDaemon
    ) -> None:
        """A second run on the same database refuses in one line; the first keeps delivering."""
        first = await start_daemon(world.config)
        await first.synced()
        code, out, err = await run_cli(world.config, "run")
        assert code == 1
        [line] = problem_lines(err)
        assert "already running" in line
        assert str(world.state) in line
        _no_traceback(out, err)
        await _changes(world.driver, world.receiver, 6)
        assert first.process.returncode is None
        assert await first.stop() == 0, first.output()
        _clean_log(first)

    @pytest.mark.parametrize("link", ["symlink", "hard link"])
    @pytest.mark.timeout(60)
    async def test_another_name_for_the_database_is_refused(
        self, tmp_path: Path, world: World, link: str, start_daemon: StartDaemon
    ) -> None:
        """A second run reaching the same database through a link refuses to start."""
        first = await start_daemon(world.config)
        await first.synced()
        alias = tmp_path / "alias.db"
        if link == "symlink":
            alias.symlink_to(world.state)
        else:
            alias.hardlink_to(world.state)
        (tmp_path / "second").mkdir()
        config = write_config(tmp_path / "second", world.sandbox, alias, None)
        second = await start_daemon(config)
        code = await second.exit_code(NOTICE_S)
        assert code == 1, second.output()
        [line] = problem_lines(second)
        # A symlink reaches the same lock; a hard link is refused as such (two journals).
        assert ("already running" if link == "symlink" else "has 2 names (hard links)") in line
        assert first.process.returncode is None
