"""The state database's connection: opening it on its engine, and the transaction helpers.

Owns choosing the backend from where the state is (a path: SQLite, ``sqlite``; a ``[store]``
database: PostgreSQL, ``postgres``), serialising the calls of the tasks that share one
connection, and translating the engine's errors into ``StoreError``. The other store modules
build on ``_atomically`` (a transaction's synchronous work in the engine's thread) and ``_fetch``
(one query's rows). It holds no knowledge of polling or delivery, and no schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import StoreError
from drgreen_poller.store.dialect import Backend, Db
from drgreen_poller.store.lineage import Lineage

if TYPE_CHECKING:  # only its type: the store does not read the configuration
    from drgreen_poller.config import StoreConfig

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """A sink's name and the event patterns it takes (for writing outbox rows)."""

    name: str
    patterns: tuple[str, ...]


class Connection:
    """Async access to the state database. Use ``await Store.open(state, sinks=...)`` (or
    ``Store.open_reader(state)``); ``close()`` last.

    Args:
        backend: the open, migrated database of one engine.
        sinks: the configured sinks, to write one outbox row per matching sink.
        lineage: the state's origin and sequence floor, as opened.
    """

    def __init__(self, backend: Backend, sinks: Sequence[SinkRoute], lineage: Lineage) -> None:
        self._backend = backend
        self.dialect = backend.dialect
        self.sinks = tuple(sinks)
        self.lineage = lineage
        self._lock = asyncio.Lock()
        # Several instances on one database (PostgreSQL): checks, inside each write of a
        # holder's, that this instance still holds its lease (``leases.Fence``). None: alone.
        self.fence: Callable[[Db, str], None] | None = None
        self.instance: str | None = None  # this instance's id, when it shares the database
        self.instance_ttl_s: float | None = None  # and how long a silent instance counts alive

    @classmethod
    async def open(
        cls,
        state: Path | StoreConfig,
        *,
        sinks: Sequence[SinkRoute],
        clock: Clock | None = None,
        writer: bool = True,
    ) -> Self:
        """Open and migrate the state: the SQLite file at a path (created 0600 if needed), or
        the ``[store]`` PostgreSQL database (``Config.state`` is either).

        ``sinks``: where the events this connection commits are delivered, one pending row per
        matching sink; always given, so that no caller writes events without their deliveries
        by leaving it out (``()`` says, on purpose, that nothing is routed).

        A ``writer`` (the daemon, poll-once, the repairing commands) counts as a start of the
        state: it raises the sequence floor and records the open (``lineage``). A reader (a
        listing, a dry run) only reads it.

        Raises:
            StoreError: the database cannot be opened, or its schema is newer than this program.
        """
        now = (clock or SystemClock()).now()
        if isinstance(state, Path):
            from drgreen_poller.store.sqlite import open_sqlite

            backend, lineage = await open_sqlite(state, now, writer=writer)
            return cls(backend, sinks, lineage)
        from drgreen_poller.store.postgres import open_postgres  # psycopg only when used

        pg_backend, lineage = await open_postgres(state, now, writer=writer)
        return cls(pg_backend, sinks, lineage)

    @classmethod
    async def open_reader(cls, state: Path | StoreConfig, *, clock: Clock | None = None) -> Self:
        """Open to read (a listing, ``status``, a backup's source): no start of the state is
        recorded and nothing is routed."""
        return await cls.open(state, sinks=(), clock=clock, writer=False)

    async def close(self) -> None:
        await self._backend.close()

    async def _atomically(self, work: Callable[[Db], T], *, holder: str | None = None) -> T:
        """Run ``work`` inside one transaction as ONE call into the engine's thread.

        ``holder``: the write is that holder's (a tier run's); where instances share the
        database, the transaction first passes ``fence`` (``LeaseLost``: nothing written).

        ``work`` gets the engine's ``Db`` and runs in that thread, so it must be short,
        synchronous SQL only. A cancelled caller does not cut it: it commits or rolls back
        whole before the next call runs. The poller and the delivery worker share this
        connection: the lock keeps one task's transaction (and reads) from interleaving with
        another's.

        Raises:
            StoreError: the engine failed (the transaction was rolled back).
        """
        fence = self.fence
        if holder is not None and fence is not None:
            unfenced = work

            def work(conn: Db) -> T:
                fence(conn, holder)
                return unfenced(conn)

        async with self._lock:
            try:
                return await self._backend.atomically(work)
            except self._backend.errors as exc:
                raise StoreError(
                    f"writing the state database failed: {self._backend.problem(exc)}"
                ) from exc

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """The rows of one query in ONE hand-off to the engine's thread."""
        try:
            async with self._lock:
                return await self._backend.fetch(sql, tuple(params))
        except self._backend.errors as exc:
            raise StoreError(
                f"reading the state database failed: {self._backend.problem(exc)}"
            ) from exc

    _rows = _fetch  # the operator's reads: the same one hand-off

    async def _write(
        self, sql: str, rows: Sequence[tuple[Any, ...]], *, holder: str | None = None
    ) -> None:
        """Run ``sql`` for each row, all in one transaction (``holder``: fenced, as
        ``_atomically``)."""

        def work(conn: Db) -> None:
            conn.executemany(sql, rows)

        await self._atomically(work, holder=holder)
