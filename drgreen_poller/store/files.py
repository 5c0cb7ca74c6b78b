"""The state's files on disk: permissions, the one-daemon lock, and the SQLite library check.

Owns what is checked and created before SQLite opens the database: that this process can write
the state's files (one-line errors naming the path and the user), that the database has one name
(hard links would split its journal), the file created ``0600``, the exclusive ``StateLock`` a
daemon holds for its lifetime, and the SQLite version and JSON functions the store needs. It
runs no SQL on the state.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from drgreen_poller.errors import StateLocked, StoreError

# The files SQLite and our locks keep beside the database, as suffixes of its name.
STATE_FILE_SUFFIXES = ("", "-wal", "-shm", ".lock", ".setup")


def _user() -> str:
    """This process's user, as the operator knows it (``nobody``), else its uid."""
    uid = os.geteuid()
    return {entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}.get(uid, f"uid {uid}")


def _open_writable(path: Path, flags: int = 0) -> int:
    """``os.open`` for reading and writing; a refusal becomes a one-line ``StoreError``."""
    try:
        return os.open(path, os.O_RDWR | flags, 0o600)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def _unwritable(path: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    return StoreError(f"daemon.state_path: {path} cannot be written: {reason} (as user {_user()})")


def check_writable(state_path: Path) -> None:
    """Check, changing nothing, that this process can create and write the state's files.

    The directory (or its nearest existing ancestor, when it is still to be created) gets a
    probe file created and removed at once; the database, its ``-wal``/``-shm`` journal and the
    lock files, where they exist, are opened for writing.

    Raises:
        StoreError: one line naming the first path that cannot be written and why.
    """
    directory = state_path.parent
    while not directory.exists():
        directory = directory.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".drgreen-poller-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _unwritable(directory, exc) from None
    for suffix in STATE_FILE_SUFFIXES:
        path = state_path.with_name(state_path.name + suffix)
        if path.exists():
            os.close(_open_writable(path))


def check_single_name(state_path: Path) -> None:
    """Refuse a database file with several names (hard links).

    SQLite keeps the journal beside the name it was opened by, so two names of one file get
    two journals, and the lock file beside each name would let two daemons in: corruption.
    A symbolic link is fine (both the lock and SQLite follow it).
    """
    try:
        links = state_path.stat().st_nlink
    except OSError:
        return  # not there yet (or unreadable: opening it says why)
    if links > 1:
        raise StoreError(
            f"the state database {state_path} has {links} names (hard links); SQLite would"
            " keep a separate journal per name and corrupt it: use one path (a symlink is fine)"
        )


class StateLock:
    """An exclusive lock on ``<state>.lock`` held for the daemon's lifetime (kernel-released).

    The lock file sits beside the database's real path (symbolic links followed), so every
    path that reaches the database takes the same lock.
    """

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        real = state_path.resolve()
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``StateLocked`` (another daemon holds it) or ``StoreError``."""
        check_writable(self.state_path)
        check_single_name(self.state_path)
        fd = _open_writable(self.path, os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"another drgreen-poller is already running on {self.state_path}"
                " (one daemon per database; stop it first)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def exclusive_lock(lock_path: Path) -> int:
    """Block until an exclusive lock on ``lock_path`` is ours; returns the descriptor to close."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


# The delivery loop's claim needs MATERIALIZED (SQLite 3.35) and JSON1 (built in since 3.38,
# compiled into common Python builds before that): an older library fails at the first claim.
MIN_SQLITE = (3, 35, 0)


def check_sqlite(version: tuple[int, int, int], has_json: bool) -> None:
    """Refuse, in one line, an SQLite library the store's statements cannot run on.

    Raises:
        StoreError: older than ``MIN_SQLITE``, or without the JSON functions.
    """
    needed = ".".join(map(str, MIN_SQLITE))
    found = ".".join(map(str, version))
    if version < MIN_SQLITE:
        raise StoreError(
            f"this Python's SQLite library is {found}; drgreen-poller needs {needed} or newer "
            "(use a Python built against a newer SQLite, e.g. Debian 12's or Ubuntu 24.04's)"
        )
    if not has_json:
        raise StoreError(
            f"this Python's SQLite library ({found}) was built without the JSON functions, "
            "which drgreen-poller needs"
        )


def create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would honour the umask)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
