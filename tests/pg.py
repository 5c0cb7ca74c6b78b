"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` on a temporary directory.

Owns starting one server per test session on a free loopback port (as the ``postgres`` user when
the tests run as root, which PostgreSQL refuses), handing out a fresh database per test (``CREATE
DATABASE ... TEMPLATE``, so tests never see each other's rows) and stopping the server. It knows
nothing of drgreen-poller's schema: the store migrates each database like any other. The
server's port comes from tests/ports.py, as every test's does.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import psycopg

from tests.ports import free_port

# Where Debian's packages put the server programs; the newest version found is used.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"
PASSWORD = "drgreen-test-password"  # the server runs on loopback only, for one test session
# A test server's data is thrown away: it need not reach the disk. (The benchmarks start theirs
# with no settings changed: fsync on, as a deployment runs.)
TEST_SETTINGS = ("fsync=off",)


def find_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb`` and ``pg_ctl``, if any."""
    found = [Path(d) for d in glob.glob(BIN_GLOB) if (Path(d) / "initdb").exists()]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


@dataclass
class PgServer:
    """One running server: where it listens and how to reach it as the superuser."""

    bin_dir: Path
    data_dir: Path
    port: int
    run_as: str | None  # the user the server programs run as (root: ``postgres``)
    _numbers: count[int]

    @classmethod
    def start(cls, bin_dir: Path, settings: Sequence[str] = TEST_SETTINGS) -> PgServer:
        """``initdb`` a temporary directory and start a server on a free loopback port, with
        ``settings`` (``name=value``) on its command line."""
        run_as = SUPERUSER if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="drgreen-pg-"))
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        server = cls(bin_dir, base / "data", free_port(), run_as, count(1))
        (base / "pw").write_text(PASSWORD + "\n")
        if run_as is not None:
            os.chown(base / "pw", pwd.getpwnam(run_as).pw_uid, -1)
        server._run(
            "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "-A", "scram-sha-256",
            f"--pwfile={base / 'pw'}", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [f"-c listen_addresses=127.0.0.1 -p {server.port} -k {base}"]
            + [f"-c {setting}" for setting in settings]
        )
        server._run(
            "pg_ctl", "-D", str(server.data_dir), "-l", str(base / "log"), "-o", options,
            "-w", "start",
        )  # fmt: skip
        return server

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own fixed programs
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut) and remove its directory."""
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def url(self, database: str = "postgres", *, user: str = SUPERUSER) -> str:
        """A ``postgresql://`` URL without the password (given apart, as a config would)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database), password=PASSWORD, autocommit=True)

    def new_database(self) -> str:
        """A new, empty database of its own (from ``template0``: fast, and nothing in it)."""
        name = f"t{next(self._numbers)}_{os.getpid()}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
