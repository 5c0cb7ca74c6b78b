"""The seam between the store's logic and a database engine: what a backend offers, and the few
SQL spellings in which the engines differ.

Owns the ``Db`` a transaction's work runs its statements on (``sqlite3.Connection`` itself, or
PostgreSQL's adapter: statements are written once, with ``?`` placeholders), the ``Backend``
protocol (one transaction as one call into the engine's own thread, one query's rows) and the
``Dialect`` of each engine. It runs no SQL and holds no schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class DbCursor(Protocol):
    """A statement's result, as both engines' cursors give it."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """What a transaction's work runs statements on, in the engine's thread. Rows read by
    position and by column name (``row[0]``, ``row["sequence"]``)."""

    def execute(self, sql: str, parameters: Any = (), /) -> DbCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> DbCursor: ...


class Backend(Protocol):
    """One open database of one engine. ``Connection`` serialises the calls (one at a time)."""

    dialect: Dialect
    errors: tuple[type[Exception], ...]  # what the engine raises, to become ``StoreError``

    async def atomically(self, work: Callable[[Db], T]) -> T:
        """``work`` inside one transaction, committed, or rolled back if it raised; as ONE call
        into the engine's thread. A cancelled caller does not cut it."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query (outside any transaction of ``atomically``)."""
        ...

    async def close(self) -> None: ...

    def problem(self, exc: Exception) -> str:
        """One of ``errors`` as one line for a ``StoreError``."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The spellings one engine needs where the two differ.

    Attributes:
        name: ``sqlite`` or ``postgresql``.
        greatest: the two-argument maximum (SQLite's scalar ``MAX``, PostgreSQL's ``GREATEST``).
        glob_operator: how a text column is matched against a sink's event glob.
        glob_pattern: a glob as that operator takes it.
        data_version: a statement whose value moves when another connection committed (SQLite's
            ``PRAGMA data_version``), for the tiers' entities kept in memory; None: nothing is
            kept, each tier run reads its entities.
        setup_lock: a statement that holds other openers off until the transaction ends (the
            migrations, the lineage row); None: the engine's caller holds a lock of its own
            (SQLite: a lock file beside the state).
        notify_deliveries: a statement, run in a commit that wrote outbox rows, that wakes
            the other instances' delivery workers once it commits (PostgreSQL's ``NOTIFY``);
            None: one process alone delivers, woken in memory.
    """

    name: str
    greatest: str
    glob_operator: str
    glob_pattern: Callable[[str], str]
    data_version: str | None
    setup_lock: str | None
    notify_deliveries: str | None = None


def _same(pattern: str) -> str:
    return pattern


def glob_regex(pattern: str) -> str:
    """A sink's event glob (``*``, ``?``, ``[...]``, no negation) as an anchored POSIX regular
    expression matching the same texts, for PostgreSQL's ``~``."""
    parts = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        end = pattern.find("]", index + 2) if char == "[" else -1
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif end != -1:
            parts.append(pattern[index : end + 1])
            index = end
        else:
            parts.append(re.escape(char))
        index += 1
    parts.append("$")
    return "".join(parts)


# The key of PostgreSQL's advisory lock around setting a database up (any fixed number).
SETUP_LOCK_KEY = 0x64724772  # "drGr"
# The channel on which a commit with new deliveries wakes every instance's delivery worker.
DELIVERIES_CHANNEL = "drgreen_poller_deliveries"
PG_SETUP_LOCK = f"SELECT pg_advisory_xact_lock({SETUP_LOCK_KEY})"

SQLITE = Dialect("sqlite", "MAX", "GLOB", _same, "PRAGMA data_version", None)
POSTGRESQL = Dialect(
    "postgresql",
    "GREATEST",
    "~",
    glob_regex,
    None,
    f"SELECT pg_advisory_xact_lock({SETUP_LOCK_KEY})",
    f"NOTIFY {DELIVERIES_CHANNEL}",
)
