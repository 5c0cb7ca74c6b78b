"""The PostgreSQL backend: one synchronous psycopg connection, used from one worker thread.

Owns connecting (the ``[store]`` URL and its password, TCP keepalives derived from the lease; a
refused connection, a wrong password or a missing database is one line), migrating
(``postgres_schema``, tracked in ``schema_version``, under an advisory lock), and running a
transaction's work in the connection's own thread, as aiosqlite does for sqlite3: the store's
statements, written once with ``?`` placeholders, run through ``PgDb``, which translates them for
psycopg (each statement once) and reads rows by position and by column name. It holds no knowledge
of polling or delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker

from drgreen_poller.errors import StoreError
from drgreen_poller.store.dialect import PG_SETUP_LOCK, POSTGRESQL, Db
from drgreen_poller.store.lineage import Lineage, open_lineage
from drgreen_poller.store.postgres_schema import POSTGRES_MIGRATIONS, SCHEMA_VERSION_TABLE

if TYPE_CHECKING:
    from drgreen_poller.config import StoreConfig

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10
# The part of ``[store] lease_ttl`` a transaction of the store's may wait on its client: the
# store's transactions run their statements back to back, so only a process paused or cut off
# mid-transaction waits that long, and the server then ends its session, releasing the rows it
# locked (a lease's row read by the fence: other instances could take it over only once freed).
STALLED_SHARE = 1 / 3
PgConnection = psycopg.Connection[Any]
# TCP keepalives, so that a server that vanishes (a host powered off, a cable cut: no RST) is
# noticed within about a third of ``[store] lease_ttl``, not after the kernel's two hours: an
# idle connection is probed after a sixth of it, every fifteenth, three times; data sent and
# not acknowledged for a third of it ends the connection (``tcp_user_timeout``: the probes only
# test an idle one). Both ends get them: libpq's socket (the daemon notices a server gone) and,
# set after connecting, the server's (it ends the session of a daemon host gone).
KEEPALIVE_IDLE_SHARE = 1 / 6
KEEPALIVE_INTERVAL_SHARE = 1 / 15
KEEPALIVE_PROBES = 3
# libpq's connection parameters and the server settings that mirror them on the server's end.
SERVER_SIDE = {
    "keepalives_idle": "tcp_keepalives_idle",
    "keepalives_interval": "tcp_keepalives_interval",
    "keepalives_count": "tcp_keepalives_count",
    "tcp_user_timeout": "tcp_user_timeout",
}


@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """A statement with ``?`` placeholders as psycopg takes it: ``%s`` for each ``?`` outside a
    quoted literal, and every literal ``%`` doubled. Cached: a statement is translated once."""
    parts: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "%":
            parts.append("%%")
        elif char == "?" and not quoted:
            parts.append("%s")
        else:
            parts.append(char)
    return "".join(parts)


class PgRow(Sequence[Any]):
    """A result row readable by position and by column name, as ``sqlite3.Row`` is."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: Any) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def named_rows(cursor: Any) -> RowMaker[PgRow]:
    """psycopg's row factory for ``PgRow``: the column names of this result, read once."""
    index = {column.name: n for n, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, index)

    return make


class PgDb:
    """What a transaction's work runs statements on: the store's SQL, translated (``pg_sql``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self._conn.execute(pg_sql(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        cursor = self._conn.cursor()
        cursor.executemany(pg_sql(sql), [tuple(row) for row in parameters])
        return cursor


class PostgresBackend:
    """An open PostgreSQL state: one connection (autocommit outside ``atomically``), used only
    from its own worker thread, one call at a time."""

    dialect = POSTGRESQL
    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, conn: PgConnection, thread: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._thread = thread

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the connection's thread. Once handed over it runs, even when the
        caller is cancelled meanwhile (as aiosqlite runs what was queued): a transaction is
        committed or rolled back whole, never left for the next call to find open."""
        running = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        return await asyncio.shield(running)

    async def atomically(self, work: Callable[[Db], T]) -> T:
        """``work`` in one transaction (``BEGIN`` … ``COMMIT``, rolled back if it raised) as
        one call into the connection's thread; a cancelled caller does not cut it."""
        return await self._call(_run_atomically, self._conn, work)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._call(_fetch, self._conn, sql, params)

    def problem(self, exc: Exception) -> str:
        return error_line(exc)

    async def close(self) -> None:
        try:
            await self._call(self._conn.close)
        finally:
            self._thread.shutdown(wait=False)


def _run_atomically(conn: PgConnection, work: Callable[[Db], T]) -> T:
    with conn.transaction():
        return work(PgDb(conn))


def _fetch(conn: PgConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(pg_sql(sql), tuple(params)).fetchall()


def error_line(exc: Exception) -> str:
    """The server's own message of an error, on one line (without the statement it quotes)."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return primary or " ".join(str(exc).split()) or type(exc).__name__


def connection_problem(exc: psycopg.Error) -> str:
    """What libpq said, on one line, without its repeated prefix: ``password authentication
    failed for user "x"``, ``database "y" does not exist``, ``Connection refused ...``."""
    text = str(exc).split(" failed: ")[-1]  # "connection to server at ... failed: <reason>"
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    reason, hints = lines[0].removeprefix("FATAL:").strip(), lines[1:]
    if not hints:  # libpq's hint lines ("Is the server running ...?") read as an aside
        return reason
    return f"{reason} ({'; '.join(hint[:1].lower() + hint[1:] for hint in hints)})"


def keepalives(lease_ttl_s: float) -> dict[str, int]:
    """libpq's keepalive parameters for a lease of ``lease_ttl_s`` (never below a second)."""
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, int(lease_ttl_s * KEEPALIVE_IDLE_SHARE)),
        "keepalives_interval": max(1, int(lease_ttl_s * KEEPALIVE_INTERVAL_SHARE)),
        "keepalives_count": KEEPALIVE_PROBES,
        "tcp_user_timeout": max(1000, round(lease_ttl_s * STALLED_SHARE * 1000)),
    }


def connection_settings(store: StoreConfig) -> dict[str, Any]:
    """The keepalive parameters a connection to the ``[store]`` database adds to its URL: those
    the URL does not set itself (its own win); ``keepalives=0`` in the URL: none.

    Raises:
        psycopg.ProgrammingError: the URL cannot be read.
    """
    given = conninfo_to_dict(store.url)
    if given.get("keepalives") == "0":
        return {}
    return {
        name: value for name, value in keepalives(store.lease_ttl_s).items() if name not in given
    }


def server_keepalives(store: StoreConfig) -> dict[str, str]:
    """The server's end of the keepalives (``SERVER_SIDE``), as the daemon's end has them, but
    those the URL's ``options`` set itself. Set with SET after connecting, not in ``options``:
    a pooler such as PgBouncer refuses a startup ``options`` it does not track.

    Raises:
        psycopg.ProgrammingError: the URL cannot be read.
    """
    given = conninfo_to_dict(store.url)
    chosen = {**connection_settings(store), **given}
    if str(chosen.get("keepalives")) != "1":  # off (or left to libpq by a URL that says so)
        return {}
    options = str(given.get("options", ""))
    return {
        setting: str(chosen[name])
        for name, setting in SERVER_SIDE.items()
        if f"{setting}=" not in options
    }


def connect(store: StoreConfig) -> PgConnection:
    """A connection to the ``[store]`` database (autocommit; rows as ``PgRow``; TCP
    keepalives from ``connection_settings``).

    Raises:
        StoreError: it cannot be reached or refuses us, in one line naming the URL (password
            hidden).
    """
    password = store.password.value if store.password is not None else None
    try:
        conn = psycopg.connect(
            store.url,
            **connection_settings(store),
            password=password,
            autocommit=True,
            row_factory=named_rows,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="drgreen-poller",
        )
        _set_server_keepalives(conn, server_keepalives(store))
        return conn
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to the state database {store.shown}: {connection_problem(exc)}"
        ) from None


def _set_server_keepalives(conn: PgConnection, settings: dict[str, str]) -> None:
    """Set the server's end of the keepalives in one statement (``conn`` closed if it fails)."""
    if not settings:
        return
    calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
    with contextlib.ExitStack() as unless_done:
        unless_done.callback(conn.close)
        conn.execute(f"SELECT {calls}", [part for pair in settings.items() for part in pair])
        unless_done.pop_all()


def describe_database(store: StoreConfig) -> str:
    """What ``check-config --online`` says of a database it reached: the server's version and
    the state's schema in it (none yet, current, or to be migrated).

    Raises:
        StoreError: it cannot be reached or refuses us (``connect``).
    """
    with connect(store) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), to_regclass('schema_version') IS NOT NULL"
        ).fetchone()
        server, has_schema = (row[0], row[1]) if row is not None else ("?", False)
        version_row = (
            conn.execute("SELECT version FROM schema_version").fetchone() if has_schema else None
        )
    version = int(version_row[0]) if version_row is not None else 0
    state = (
        "no drgreen-poller state yet (the daemon creates it when it first runs)"
        if not has_schema
        else f"schema version {version} of {len(POSTGRES_MIGRATIONS)}"
    )
    return f"PostgreSQL {server}, {state}"


def migrate(conn: PgConnection, where: str, *, writer: bool) -> None:
    """Apply the pending migrations in one transaction under the setup lock.

    Raises:
        StoreError: the schema is newer than this program, or (a reader) there is none yet.
    """
    with conn.transaction():
        conn.execute(PG_SETUP_LOCK)
        known = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not writer and known is not None and not known[0]:
            raise StoreError(
                f"there is no drgreen-poller state in {where} yet (the daemon creates it when "
                "it first runs; is [store] url right?)"
            )
        conn.execute(SCHEMA_VERSION_TABLE)
        conn.execute("INSERT INTO schema_version VALUES (1, 0) ON CONFLICT DO NOTHING")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = int(row[0]) if row is not None else 0
        if version > len(POSTGRES_MIGRATIONS):
            raise StoreError(
                f"{where} has schema version {version}, newer than this drgreen-poller knows "
                f"({len(POSTGRES_MIGRATIONS)}); upgrade drgreen-poller or use another database"
            )
        for migration in POSTGRES_MIGRATIONS[version:]:
            for statement in filter(str.strip, migration.split(";")):
                conn.execute(statement.encode())
        conn.execute("UPDATE schema_version SET version = %s", (len(POSTGRES_MIGRATIONS),))


async def open_postgres(
    store: StoreConfig, now: datetime, *, writer: bool
) -> tuple[PostgresBackend, Lineage]:
    """Connect to and migrate the ``[store]`` database; read or record its lineage.

    Raises:
        StoreError: it cannot be reached, refuses us, or holds a newer schema.
    """
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drgreen-postgres")
    loop = asyncio.get_running_loop()
    try:
        conn = await loop.run_in_executor(thread, connect, store)
    except BaseException:
        thread.shutdown(wait=False)
        raise
    backend = PostgresBackend(conn, thread)
    stalled_ms = max(1, round(store.lease_ttl_s * STALLED_SHARE * 1000))
    try:
        await loop.run_in_executor(
            thread, conn.execute, f"SET idle_in_transaction_session_timeout = {stalled_ms}"
        )
        await loop.run_in_executor(
            thread, functools.partial(migrate, conn, store.shown, writer=writer)
        )
        lineage = await open_lineage(backend, now, record=writer)
    except psycopg.Error as exc:
        await backend.close()
        raise StoreError(f"cannot use the state database {store.shown}: {error_line(exc)}") from exc
    except BaseException:
        await backend.close()
        raise
    return backend, lineage
