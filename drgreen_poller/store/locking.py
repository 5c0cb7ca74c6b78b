"""The one-daemon lock, for either engine: ``state_lock(state)``.

Owns choosing the lock for where the state is: SQLite's ``StateLock`` (a file beside the
database), or, for a PostgreSQL database, ``PostgresLock`` (a session advisory lock held on a
connection of its own for the daemon's lifetime: shared by the daemons, which divide the holders
through leases, exclusive for ``poll-once``). It runs no SQL on the state.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from drgreen_poller.errors import StateLocked, StoreError
from drgreen_poller.store.files import StateLock

if TYPE_CHECKING:
    from drgreen_poller.config import StoreConfig

# The key of the advisory lock a daemon holds on its database (another number than setup's).
DAEMON_LOCK_KEY = 0x64724773


class PostgresLock:
    """A session advisory lock on the ``[store]`` database, on a connection of its own.

    Daemons take it ``shared``: several run on one database (their holders shared through
    leases). ``poll-once`` takes it exclusively: it is refused while any daemon runs, and a
    daemon while it runs."""

    def __init__(self, store: StoreConfig, *, shared: bool = False) -> None:
        self.store = store
        self.shared = shared
        self._conn: Any = None

    def acquire(self) -> None:
        """Take the lock, or raise ``StateLocked`` (another daemon holds it) or ``StoreError``
        (the database cannot be reached)."""
        import psycopg

        from drgreen_poller.store.postgres import connect

        conn = connect(self.store)
        try:
            take = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
            row = conn.execute(f"SELECT {take}(%s)", (DAEMON_LOCK_KEY,)).fetchone()
            held = row is not None and bool(row[0])
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot lock the state database {self.store.shown}: {exc}") from None
        if not held:
            conn.close()
            raise StateLocked(
                f"poll-once is running on {self.store.shown}; start the daemon once it ends"
                if self.shared
                else f"another drgreen-poller is already running on {self.store.shown}"
                " (stop the daemons first)"
            )
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session's advisory lock goes with it
            self._conn = None

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


def state_lock(state: Path | StoreConfig, *, shared: bool = False) -> StateLock | PostgresLock:
    """The lock a daemon (``shared``: several daemons on one PostgreSQL database) or
    ``poll-once`` holds on ``state`` (``Config.state``) for its lifetime. SQLite's is one
    process's alone either way."""
    return StateLock(state) if isinstance(state, Path) else PostgresLock(state, shared=shared)
