"""An unwritable state directory, as an operator meets it: one line naming the path and why.

A read-only mount gives EROFS (a bind mount remounted read-only, which needs root), a state
directory owned by someone else gives EACCES (the CLI runs as ``nobody`` when we are root, or
against a directory without write permission otherwise). Writing commands exit 1, check-config
exits 2 (a configuration that cannot work on this host), and no traceback is shown.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.errors import StoreError
from drgreen_poller.sandbox import SandboxState
from drgreen_poller.store.files import StateLock, check_writable
from tests.cli_run import CLI
from tests.conftest import write_config

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() == "true"
ORDER_ID = "6f1c2a9e-0000-4000-8000-000000000001"
# Every command that writes the state, with the exit code it must give.
WRITING_COMMANDS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("run",), 1),
    (("poll-once",), 1),
    (("track", "order", ORDER_ID), 1),
    (("deliveries", "retry", "--all-failed"), 1),
    (("deliveries", "replay", "--since", "1h", "--sink", "audit"), 1),
    (("check-config",), 2),
)


def _skip_or_fail(reason: str) -> None:
    """Skip with the reason printed; in CI (CI=true) a skipped environment check is a failure."""
    print(f"skipped: {reason}", file=sys.stderr)
    if IN_CI:
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


def _config(directory: Path, state_path: Path) -> Path:
    """A valid configuration whose state lives at ``state_path`` (nothing is ever polled)."""
    holder = SandboxState(SystemClock()).create_holder("shop")
    sink = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "events.jsonl"\n'
    path = write_config(directory, "http://127.0.0.1:9/api/v1", holder, extra=sink)
    path.write_text(path.read_text().replace('"state.db"', f'"{state_path}"'))
    return path


def _cli(
    config: Path, args: Sequence[str], *, prefix: Sequence[str] = (), clean_env: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if clean_env:  # a process of another user cannot write our coverage data
        env = {k: v for k, v in env.items() if not k.startswith("COVERAGE")}
    return _exec([*prefix, *CLI, "-c", str(config), *args], env)


def _exec(
    argv: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # S603: the argv is ours (our CLI, or mount/umount found on PATH), never outside input.
    return subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, timeout=20, env=env, check=False
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _skip_or_fail(f"{name} is not installed")
    assert path is not None
    return path


def _assert_refused(
    result: subprocess.CompletedProcess[str], code: int, path: Path, reason: str
) -> None:
    """Exactly one ``error:`` line on stderr naming ``path`` and ``reason``; the given exit code."""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: daemon.state_path: {path} cannot be written: {reason} (as user {_user_of(result)})"
    ], result.stderr
    assert result.returncode == code


def _user_of(result: subprocess.CompletedProcess[str]) -> str:
    return "nobody" if str(result.args[0]).endswith("setpriv") else _whoami()


def _whoami() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only bind mount of itself (EROFS for everyone, root included)."""
    target = tmp_path / "ro"
    target.mkdir()
    if not IS_ROOT:
        _skip_or_fail("a read-only bind mount needs root")
    mount, umount = _tool("mount"), _tool("umount")
    mounted = _exec([mount, "--bind", str(target), str(target)])
    if mounted.returncode != 0:
        _skip_or_fail(f"mount --bind is not permitted here: {mounted.stderr.strip()}")
    try:
        remounted = _exec([mount, "-o", "remount,ro,bind", str(target)])
        if remounted.returncode != 0:
            _skip_or_fail(f"remounting read-only failed: {remounted.stderr.strip()}")
        yield target
    finally:
        assert _exec([umount, str(target)]).returncode == 0


@pytest.fixture
def foreign() -> Iterator[tuple[Path, Path, tuple[str, ...]]]:
    """(config dir, state dir, command prefix): the state dir is not writable by the CLI's user.

    As root the CLI runs as ``nobody`` (its config dir is its own, the state dir root's);
    otherwise the state dir is made read-only by its mode.
    """
    base = Path(tempfile.mkdtemp(prefix="drgreen-foreign-", dir="/tmp"))
    config_dir, state_dir = base / "config", base / "state"
    config_dir.mkdir()
    state_dir.mkdir()
    base.chmod(0o755)
    state_dir.chmod(0o755 if IS_ROOT else 0o555)
    prefix: tuple[str, ...] = ()
    if IS_ROOT:
        prefix = (_tool("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    try:
        yield config_dir, state_dir, prefix
    finally:
        state_dir.chmod(0o755)
        shutil.rmtree(base)


def _own(directory: Path) -> None:
    """Give ``directory`` and its files to ``nobody`` (as root; otherwise they are ours)."""
    if IS_ROOT:
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, "nobody", "nogroup")


class TestReadOnlyMount:
    @pytest.mark.timeout(60)
    def test_every_writing_command_names_the_directory(
        self, tmp_path: Path, read_only_dir: Path
    ) -> None:
        """On a read-only mount each writing command prints one line with the path and EROFS."""
        config = _config(tmp_path, read_only_dir / "state.db")
        for args, code in WRITING_COMMANDS:
            _assert_refused(_cli(config, args), code, read_only_dir, "Read-only file system")

    @pytest.mark.timeout(30)
    def test_an_existing_database_and_a_missing_subdirectory(
        self, tmp_path: Path, read_only_dir: Path
    ) -> None:
        """A state dir still to be created is checked where it would be created."""
        config = _config(tmp_path, read_only_dir / "missing" / "deeper" / "state.db")
        _assert_refused(_cli(config, ["run"]), 1, read_only_dir, "Read-only file system")

    def test_the_lock_itself_says_so(self, read_only_dir: Path) -> None:
        """StateLock.acquire raises a StoreError naming the directory, not a raw OSError."""
        with pytest.raises(StoreError, match=r"ro cannot be written: Read-only file system"):
            StateLock(read_only_dir / "state.db").acquire()


class TestForeignOwner:
    @pytest.mark.timeout(60)
    def test_every_writing_command_names_the_directory(
        self, foreign: tuple[Path, Path, tuple[str, ...]]
    ) -> None:
        """A state directory of another owner: one line with the path and EACCES, per command."""
        config_dir, state_dir, prefix = foreign
        config = _config(config_dir, state_dir / "state.db")
        _own(config_dir)
        for args, code in WRITING_COMMANDS:
            result = _cli(config, args, prefix=prefix, clean_env=bool(prefix))
            _assert_refused(result, code, state_dir, "Permission denied")

    @pytest.mark.timeout(30)
    def test_a_database_of_another_owner(self, foreign: tuple[Path, Path, tuple[str, ...]]) -> None:
        """A database file the user cannot open for writing is named, even in a writable dir."""
        config_dir, state_dir, prefix = foreign
        if not IS_ROOT:
            _skip_or_fail("a file of another owner needs root to create")
        config = _config(config_dir, state_dir / "state.db")
        # root creates the database, 0600 (track writes; a reader such as status creates none)
        assert _cli(config, ["track", "order", ORDER_ID]).returncode == 0
        state_dir.chmod(0o777)
        _own(config_dir)
        for args, code in (("run",), 1), (("check-config",), 2):
            result = _cli(config, args, prefix=prefix, clean_env=True)
            _assert_refused(result, code, state_dir / "state.db", "Permission denied")


class TestCheckWritable:
    def test_a_writable_directory_is_left_as_it_was(self, tmp_path: Path) -> None:
        """The check leaves no file behind in a writable directory."""
        check_writable(tmp_path / "sub" / "state.db")
        assert list(tmp_path.iterdir()) == []

    def test_a_file_in_the_way(self, tmp_path: Path) -> None:
        """A file where the state directory should be is named with 'Not a directory'."""
        (tmp_path / "plain").write_text("")
        with pytest.raises(StoreError, match=r"plain cannot be written: Not a directory"):
            check_writable(tmp_path / "plain" / "state.db")
