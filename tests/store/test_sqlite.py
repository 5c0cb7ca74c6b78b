"""Tests of what only SQLite has: the database file (created private, in WAL mode, at the newest
schema; a newer schema or an unusable path refused), the daemon's lock on it, and the check of
the SQLite library Python brings."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from drgreen_poller.errors import StoreError
from drgreen_poller.store import MIGRATIONS, StateLock, Store
from drgreen_poller.store.files import check_sqlite


class TestFile:
    async def test_created_private_with_wal(self, tmp_path: Path) -> None:
        """The database is created 0600, in WAL mode, at the newest schema version."""
        path = tmp_path / "sub" / "state.db"
        opened = await Store.open(path, sinks=())
        await opened.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database from a newer drgreen-poller is refused with a clear message."""
        path = tmp_path / "state.db"
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        with pytest.raises(StoreError, match="newer than this drgreen-poller"):
            await Store.open(path, sinks=())

    async def test_unopenable_path(self, tmp_path: Path) -> None:
        """A path that cannot hold a database gives a StoreError naming it."""
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(StoreError, match=r"dir\.db"):
            await Store.open(tmp_path / "dir.db", sinks=())

    def test_second_lock_refused(self, tmp_path: Path) -> None:
        """A second daemon on the same database is refused while the first holds the lock."""
        path = tmp_path / "state.db"
        with StateLock(path), pytest.raises(StoreError, match="already running"):
            StateLock(path).acquire()
        with StateLock(path):
            pass  # released by the first: free again


class TestSqliteLibrary:
    @pytest.mark.parametrize(
        ("version", "has_json", "refusal"),
        [
            ((3, 40, 1), True, None),
            ((3, 35, 0), True, None),
            ((3, 34, 1), True, "SQLite library is 3.34.1; drgreen-poller needs 3.35.0 or newer"),
            ((3, 40, 1), False, "built without the JSON functions"),
        ],
    )
    def test_an_old_or_json_less_library_is_refused_in_one_line(
        self, version: tuple[int, int, int], has_json: bool, refusal: str | None
    ) -> None:
        """A Python whose SQLite cannot run the claim is told so at open, not at the first claim."""
        if refusal is None:
            check_sqlite(version, has_json)
            return
        with pytest.raises(StoreError, match=refusal) as refused:
            check_sqlite(version, has_json)
        assert "\n" not in str(refused.value)
