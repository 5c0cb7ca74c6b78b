"""``backup`` and ``restore``: a consistent copy of the state, and putting one back.

Owns where a copy goes (a file, or a dated name in a directory), that a backup runs while the
daemon runs (SQLite's online backup, after the schema is brought up to date) and that a restore
refuses while one runs (the daemon's ``StateLock``). How a copy is made and a replaced database
kept is ``store.lineage``'s. Printing and exit codes belong to the CLI.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path

from drgreen_poller.clock import Clock
from drgreen_poller.config import Config
from drgreen_poller.errors import ConfigError, StoreError
from drgreen_poller.store import StateLock, Store
from drgreen_poller.store.lineage import backup_database, restore_database


async def backup(config: Config, given: str, clock: Clock) -> tuple[Path, int]:
    """Copy the state consistently to ``given`` (a file, or a directory to name it in).

    Returns the copy's path and size. Raises ``StoreError`` when there is no state to copy or
    the copy cannot be written.
    """
    source, now = _state_file(config, "backup"), clock.now()
    target = _backup_target(source, given, now)
    # Brings an older schema up to date first; a backup is no start of the state.
    store = await Store.open_reader(source, clock=clock)
    await store.close()
    try:
        size = await asyncio.to_thread(backup_database, source, target, now)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot write the backup {target}: {exc}") from exc
    return target, size


def _state_file(config: Config, command: str) -> Path:
    """The SQLite state file; a PostgreSQL state is copied and put back with its own tools.

    Raises:
        ConfigError: the state is in PostgreSQL (``[store]``).
    """
    if config.store is not None:
        tool = "pg_dump" if command == "backup" else "pg_restore (or psql for a plain dump)"
        raise ConfigError(
            f"{command}: the state is in PostgreSQL ({config.store.shown}); use {tool} "
            "on that database instead"
        )
    return config.daemon.state_path


def _backup_target(source: Path, given: str, now: datetime) -> Path:
    """Where the copy goes: ``given`` itself, or a dated file in it when it is a directory."""
    if not source.is_file():
        raise StoreError(f"there is no state database at {source} to back up")
    target = Path(given)
    if given.endswith("/") and not target.is_dir():
        raise StoreError(f"cannot write the backup into {given}: no such directory")
    if target.is_dir():
        target = target / f"drgreen-poller-state-{now.strftime('%Y%m%dT%H%M%SZ')}.db"
    if not target.parent.is_dir():
        raise StoreError(f"cannot write the backup {target}: {target.parent} is not a directory")
    if target.resolve() == source.resolve():
        raise StoreError(f"{target} is the state database itself; choose another path")
    return target


def restore(config: Config, copy: Path, clock: Clock) -> Path | None:
    """Put a backup in place of the state; returns where the replaced database was kept.

    Raises ``StoreError`` while a daemon runs on the state, or when ``copy`` is no state.
    """
    path = _state_file(config, "restore")
    if copy.resolve() == path.resolve():
        raise StoreError(f"{copy} is the state database itself; name the backup to put back")
    try:
        with StateLock(path):  # refuses while a daemon runs: "... already running ..."
            return restore_database(copy, path, clock.now())
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot restore {copy} to {path}: {exc}") from exc
