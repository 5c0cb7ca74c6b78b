"""The benches' store backends: SQLite, or PostgreSQL with one or two daemon instances.

Owns ``--backend sqlite|postgresql|both`` and ``--instances 1 2`` (``backend_arguments``), the
columns they make (``Setup``), a PostgreSQL server of the bench's own and the ``[store]``
section that points a daemon at one of its databases, and telling a second instance that the
build refuses at start (the one-daemon-per-database lock) from a failure (``refused``).

The server is ``tests/pg.py``'s (``initdb`` and ``pg_ctl`` on a temporary directory beside the
SQLite files, on the same disk, a free loopback port, run as ``postgres`` under root), started
with none of the tests' settings: every setting at PostgreSQL's default, so fsync,
synchronous_commit and full_page_writes are on and a commit waits for its WAL to reach the disk,
as the delivery guarantees need. Nothing here measures, and nothing here is the product.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests.pg

from drgreen_poller.config import Secret, StoreConfig
from tests.pg import PASSWORD, PgServer, find_bin

SQLITE, POSTGRESQL = "sqlite", "postgresql"
# What a run prints where the second instance was refused at start (this build's PostgreSQL
# store keeps one daemon per database until instances share holders through leases).
NOT_SUPPORTED = "two instances: not supported by this build"
# The one-daemon lock's refusal, in the refused daemon's log (store/locking.py, store/files.py).
REFUSAL = "already running"
TICKS_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setup:
    """One column of a bench's table: a backend and how many daemons share its state."""

    backend: str
    instances: int = 1

    @property
    def label(self) -> str:
        if self.backend == SQLITE:
            return "SQLite"
        return f"PostgreSQL × {self.instances}"


def backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--instances``; left out, the profile decides (``setups``)."""
    parser.add_argument(
        "--backend",
        choices=(SQLITE, POSTGRESQL, "both"),
        help="the daemon's store (default: both in the full profile, sqlite in the quick one)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        nargs="+",
        choices=(1, 2),
        help="daemons sharing the PostgreSQL database (default: 1 2 in the full profile, 1 in "
        "the quick one); SQLite runs one (a second one is refused by design)",
    )


def setups(profile: str, backend: str | None, instances: Sequence[int] | None) -> list[Setup]:
    """The columns to measure: the options, or the profile's defaults where left out."""
    full = profile == "full"
    backend = backend or ("both" if full else SQLITE)
    counts = sorted(set(instances or ((1, 2) if full else (1,))))
    chosen = [Setup(SQLITE)] if backend in (SQLITE, "both") else []
    if backend in (POSTGRESQL, "both"):
        chosen += [Setup(POSTGRESQL, n) for n in counts]
    return chosen


class InstancesRefused(Exception):
    """The second daemon on one database was refused at start: this build runs one."""


def store_note(chosen: Sequence[Setup]) -> list[str]:
    """The note explaining the store column, when a PostgreSQL column was measured."""
    if all(setup.backend == SQLITE for setup in chosen):
        return []
    return [
        "store: SQLite is the daemon's state file; PostgreSQL × N is N `drgreen-poller run` "
        "processes on one database of a server the bench started (its settings below). The "
        "stores' runs alternate within each round with the same raw runs, so every row stands "
        f"beside the same baseline. A second instance refused at start reads '{NOT_SUPPORTED}'."
    ]


def refused(logs: Sequence[Path]) -> bool:
    """Whether one of these daemon logs says the daemon was refused by the one-daemon lock."""
    return any(REFUSAL in log.read_text(errors="replace") for log in logs if log.exists())


class Postgres:
    """The bench's server: databases made from ``template0`` or from a seed, and the
    ``[store]`` section naming one."""

    def __init__(self, server: PgServer) -> None:
        self.server = server
        self._numbers = count(1)

    def new_database(self, template: str = "template0") -> str:
        name = f"bench{next(self._numbers)}_{os.getpid()}"
        with self.server.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def server_cpu_s(self) -> dict[int, float]:
        """CPU seconds (utime + stime) of each of the server's processes: the postmaster and
        its children (connections, WAL writer, checkpointer, autovacuum), from ``/proc``."""
        postmaster = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS_S
        return found

    def analyze(self, database: str) -> None:
        """Gather the planner's statistics of ``database`` (what autovacuum does a while after
        rows arrive): a seed made a moment ago has none, and every copy would inherit that."""
        with self.server.connect(database) as conn:
            conn.execute("ANALYZE")

    def drop_database(self, name: str) -> None:
        self.server.drop_database(name)

    def store(self, database: str) -> StoreConfig:
        """The ``[store]`` a configuration naming ``database`` loads (password given apart)."""
        return StoreConfig(self.server.url(database), Secret(PASSWORD, "bench"))

    def store_section(self, database: str, directory: Path) -> str:
        """The ``[store]`` TOML for ``database``, its password in a file in ``directory``."""
        (directory / "pg.password").write_text(PASSWORD)
        return f'\n[store]\nurl = "{self.server.url(database)}"\npassword_file = "pg.password"\n'

    def settings(self) -> str:
        """A sentence for the notes: the server's version and the settings that matter here."""
        names = ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        with self.server.connect() as conn:
            rows = [conn.execute(f"SHOW {name}").fetchone() for name in names]
        version, fsync, sync, buffers = (str(row[0]) if row else "?" for row in rows)
        return (
            f"PostgreSQL {version}, started by the bench on a temporary directory on the same "
            f"disk as the SQLite files, reached over loopback TCP; every setting at its "
            f"default (fsync = {fsync}, synchronous_commit = {sync}: a commit waits for its "
            f"WAL to reach the disk, as the guarantees need; shared_buffers = {buffers})."
        )


@contextmanager
def postgres(chosen: Sequence[Setup], settings: Sequence[str] = ()) -> Iterator[Postgres | None]:
    """A server for the run when a column needs one (None otherwise), stopped on the way out;
    ``settings`` (``name=value``) on its command line, none by default."""
    if all(setup.backend == SQLITE for setup in chosen):
        yield None
        return
    bin_dir = find_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)")
    server = PgServer.start(bin_dir, settings=settings)
    try:
        yield Postgres(server)
    finally:
        server.stop()
