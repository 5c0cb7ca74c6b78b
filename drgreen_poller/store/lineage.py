"""Where the state came from: when it began, whether it was restored, and the sequence floor.

Owns the one rule that keeps event ids and sequences unique across state loss and restores:
every event's sequence is above the **sequence floor**, and every open moves the floor up to
the current time in milliseconds. A database put back in any way (a ``backup`` file, a copy of
the file or of the whole directory, a file-system snapshot taken while the daemon ran) is then
always numbered above every sequence already delivered, without having to recognise it as
older. Recognising it still matters to the operator: a file marked by ``backup``, a generation
below the one recorded beside it in ``<state>.lineage``, or another database put at this path
is reported as a restore. It also holds the file identity check that notices a database
deleted or replaced under a running daemon. It must not decide what to poll or deliver.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from drgreen_poller.errors import StateLost, StoreError
from drgreen_poller.events import iso_ms
from drgreen_poller.store.dialect import Backend, Db, Dialect

# Migration 4: the lineage row (exactly one).
LINEAGE_MIGRATION = """
    CREATE TABLE lineage (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        lineage TEXT NOT NULL,
        began_at TEXT,
        sequence_floor INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 0,
        backup_taken_at TEXT,
        rebased_at TEXT,
        rebase_reason TEXT
    );
"""


@dataclass(frozen=True, slots=True)
class Lineage:
    """This state's origin, as opened.

    Attributes:
        began_at: when this state database was created (None: before drgreen-poller 0.x kept it).
        fresh: the database was created by this open: there was no state at this path.
        sequence_floor: every new event's sequence is above this (raised at every open).
        rebased_at, rebase_reason: the last time this state was recognised as put back (a
            restore, another file), and how.
        rebased_now: that happened in this open.
    """

    lineage: str
    began_at: str | None
    fresh: bool
    sequence_floor: int
    generation: int
    rebased_at: str | None
    rebase_reason: str | None
    rebased_now: bool = False


def floor_at(now: datetime) -> int:
    """The sequence floor for a state opened at ``now``: Unix milliseconds.

    A resource gets at most a few events per poll and a poll takes far longer than the few
    milliseconds this leaves, so no earlier open of any copy of this state can have numbered
    an event above the floor of a later one, as long as the wall clock is not set back (the
    unit starts after ``time-sync.target``; a restored copy still never goes below its own
    recorded floor). A floor stepped ahead of the clock would break the case that matters
    most, a new database after the old one was lost, which only the clock can number above.
    """
    return int(now.timestamp() * 1000)


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".lineage")


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_sidecar(path: Path, lineage: str, generation: int) -> None:
    """Record which database (and which generation of it) was last opened at ``path``."""
    target = sidecar_path(path)
    temporary = target.with_name(target.name + ".tmp")
    text = json.dumps({"lineage": lineage, "generation": generation})
    with contextlib.suppress(OSError):  # advisory: a read-only copy still opens
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)


def _row(conn: Db) -> Any:
    row = conn.execute("SELECT * FROM lineage").fetchone()
    if row is None:
        raise StoreError("the state database has no lineage row (was it edited by hand?)")
    return row


def _create(conn: Db, now: datetime) -> bool:
    """Insert the lineage row; returns whether the database is new (holds nothing yet)."""
    used = conn.execute(
        "SELECT (SELECT COUNT(*) FROM holders) + (SELECT COUNT(*) FROM entities)"
        " + (SELECT COUNT(*) FROM events)"
    ).fetchone()
    fresh = used is None or int(used[0]) == 0
    began = conn.execute("SELECT MIN(added_at) FROM holders").fetchone()
    began_at = iso_ms(now) if fresh or began is None else began[0]
    conn.execute(
        "INSERT INTO lineage (one, lineage, began_at, sequence_floor) VALUES (1, ?, ?, ?)",
        (secrets.token_hex(16), began_at, floor_at(now)),
    )
    return fresh


def _lost_reason(seen: dict[str, Any] | None) -> str | None:
    """Why a new database is not a first start: ``<state>.lineage`` says a state was here."""
    if seen is None:
        return None
    return (
        f"the state that was here before is gone (opened {seen.get('generation', '?')} times);"
        " what it had seen but not announced is lost: restore a backup if there is one"
    )


def _restore_reason(row: Any, seen: dict[str, Any] | None) -> str | None:
    """Why this database may be behind what was already delivered from this path, if it is."""
    if row["backup_taken_at"]:
        return f"restored from a backup taken at {row['backup_taken_at']}"
    if seen is None:
        return None
    if seen.get("lineage") != row["lineage"]:
        return "another database was put at this path"
    recorded = seen.get("generation")
    if isinstance(recorded, int) and row["generation"] < recorded:
        return f"an older copy was put back (generation {row['generation']} < {recorded})"
    return None


async def open_lineage(
    backend: Backend, now: datetime, *, record: bool = True, path: Path | None = None
) -> Lineage:
    """Create or read the lineage row, raise the floor, note a restore, count this open.

    Runs after the migrations (SQLite: inside the caller's setup lock), in one transaction.
    With ``record`` false (a reader, a dry run) an existing row is only read: the floor this
    open would number from is computed, nothing is written. ``path``: the SQLite file, whose
    ``<state>.lineage`` beside it tells a restore or a lost state (None: a PostgreSQL database,
    which has no such file; its floor rule holds all the same).
    """
    seen = _read_sidecar(path) if path is not None else None
    [existing] = (await backend.fetch("SELECT * FROM lineage")) or [None]
    if existing is not None and not record:
        return _as_read(existing, seen, now)
    dialect = backend.dialect
    row, fresh, reason = await backend.atomically(lambda conn: _record(conn, dialect, now, seen))
    if path is not None:
        _write_sidecar(path, row["lineage"], row["generation"])
    return _lineage(row, fresh=fresh, floor=int(row["sequence_floor"]), now=reason is not None)


def _as_read(existing: Any, seen: dict[str, Any] | None, now: datetime) -> Lineage:
    """The lineage a reader sees: the floor this open would number from, a restore shown but
    not recorded."""
    floor = max(int(existing["sequence_floor"]), floor_at(now))
    restored = _restore_reason(existing, seen)
    if restored is None:
        return _lineage(existing, fresh=False, floor=floor)
    return replace(
        _lineage(existing, fresh=False, floor=floor), rebased_at=iso_ms(now), rebase_reason=restored
    )


def _record(
    conn: Db, dialect: Dialect, now: datetime, seen: dict[str, Any] | None
) -> tuple[Any, bool, str | None]:
    """In one transaction: create the row if there is none, note a loss or restore, raise the
    floor and count the open. Returns the row, whether the state is new, and the reason noted."""
    # The caller's setup lock (SQLite) or the dialect's (PostgreSQL: an advisory lock until
    # this transaction ends) keeps any other opener from creating the row meanwhile.
    if dialect.setup_lock is not None:
        conn.execute(dialect.setup_lock)
    found = conn.execute("SELECT 1 FROM lineage").fetchone()
    fresh = found is None and _create(conn, now)
    row = _row(conn)
    reason = _lost_reason(seen) if fresh else _restore_reason(row, seen)
    if reason:
        conn.execute(
            "UPDATE lineage SET rebased_at = ?, rebase_reason = ?, backup_taken_at = NULL",
            (iso_ms(now), reason),
        )
    conn.execute(
        "UPDATE lineage SET generation = generation + 1,"  # noqa: S608 - an engine's function name
        f" sequence_floor = {dialect.greatest}(sequence_floor, ?)",
        (floor_at(now),),
    )
    return _row(conn), fresh, reason


def _lineage(row: Any, *, fresh: bool, floor: int, now: bool = False) -> Lineage:
    return Lineage(
        lineage=row["lineage"],
        began_at=row["began_at"],
        fresh=fresh,
        sequence_floor=floor,
        generation=int(row["generation"]),
        rebased_at=row["rebased_at"],
        rebase_reason=row["rebase_reason"],
        rebased_now=now,
    )


def backup_database(source: Path, target: Path, taken_at: datetime) -> int:
    """Copy ``source`` consistently (SQLite's online backup) to ``target``; returns its size.

    Safe while a daemon writes ``source``: the copy is one read transaction's view. The copy
    is written beside ``target`` (mode 0600), marked as a backup taken at ``taken_at`` (so that
    the state it holds moves its sequence floor up when it is put back) and renamed into place.
    """
    _copy_database(source, target, backup_taken_at=iso_ms(taken_at))
    return target.stat().st_size


def _copy_database(source: Path, target: Path, *, backup_taken_at: str) -> None:
    """Copy with SQLite's backup API beside ``target`` (0600), mark it, rename it into place."""
    temporary = target.with_name(f".{target.name}.partial")
    _write_copy(source, temporary, backup_taken_at=backup_taken_at)
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_copy(source: Path, temporary: Path, *, backup_taken_at: str) -> None:
    """Write a self-contained, marked copy of ``source`` at ``temporary`` (0600).

    A mark already in the copy is kept (a backup put back keeps the time it was taken); a
    state from before the lineage table gets its lineage when it is first opened.
    """
    temporary.unlink(missing_ok=True)
    os.close(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        live, copy = sqlite3.connect(source), sqlite3.connect(temporary)
        try:
            live.backup(copy)
            with copy:
                if copy.execute("SELECT 1 FROM sqlite_master WHERE name = 'lineage'").fetchone():
                    copy.execute(
                        "UPDATE lineage SET backup_taken_at = COALESCE(backup_taken_at, ?)",
                        (backup_taken_at,),
                    )
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            copy.close()
            live.close()
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """The database file a connection opened (device and inode), to notice it being replaced."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = path.stat()
        return cls(path, stat.st_dev, stat.st_ino)

    def check(self) -> None:
        """Raise ``StateLost`` if the file at ``path`` is gone or is another file now."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise StateLost(
                f"the state database {self.path} was deleted while drgreen-poller ran; stopping"
                " so that nothing is written where it would be lost"
            ) from None
        except OSError as exc:
            raise StateLost(f"the state database {self.path} cannot be checked: {exc}") from exc
        if (stat.st_dev, stat.st_ino) != (self.device, self.inode):
            raise StateLost(
                f"the state database {self.path} was replaced by another file while"
                " drgreen-poller ran; stopping so that nothing is written where it would be lost"
            )


def restore_database(copy: Path, path: Path, now: datetime) -> Path | None:
    """Put ``copy`` in place at ``path``; returns where the database it replaced was kept.

    The caller holds the state lock (no daemon runs). The copy is checked to be a
    drgreen-poller state, written beside ``path`` and marked as put back; only then is the
    current database, if any, moved aside with its journal (nothing is destroyed, even a
    damaged file) and the copy renamed into place.
    """
    _check_state_file(copy)
    temporary = path.with_name(f".{path.name}.restoring")
    _write_copy(copy, temporary, backup_taken_at=RESTORED_MARK)
    try:
        kept = _move_aside(path, now) if path.exists() else None
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return kept


RESTORED_MARK = "an unknown time (put back by drgreen-poller restore)"


def _move_aside(path: Path, now: datetime) -> Path:
    """Rename the database and its WAL to a new ``.before-restore-TIME`` name; drop its -shm."""
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    kept = path.with_name(f"{path.name}.before-restore-{stamp}")
    number = 1
    while kept.exists():
        kept, number = path.with_name(f"{path.name}.before-restore-{stamp}-{number}"), number + 1
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        os.replace(wal, kept.with_name(kept.name + "-wal"))  # its committed work goes with it
    path.with_name(path.name + "-shm").unlink(missing_ok=True)  # rebuilt from the WAL
    os.replace(path, kept)
    return kept


def _check_state_file(copy: Path) -> None:
    """Raise ``StoreError`` unless ``copy`` is a readable drgreen-poller state database."""
    if not copy.is_file():
        raise StoreError(f"{copy} is not a file")
    try:
        db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{copy} is not a SQLite database: {exc}") from exc
    if not {"events", "entities"} <= tables:
        raise StoreError(f"{copy} is not a drgreen-poller state database")
    if not ok:
        raise StoreError(f"{copy} is damaged (SQLite's quick_check failed)")
