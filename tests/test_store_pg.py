"""Tests of the PostgreSQL store that only PostgreSQL has: its server (tests/pg.py), connecting,
its schema, statement translation, the daemon's lock, and the commands and daemon on it. The
store's contract on both engines is tests/store/'s."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from asyncio.subprocess import PIPE
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import Secret, StoreConfig
from drgreen_poller.errors import StateLocked, StoreError
from drgreen_poller.events import Resource
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.store.dialect import Db
from drgreen_poller.store.locking import PostgresLock, state_lock
from drgreen_poller.store.postgres import PgRow, pg_sql
from drgreen_poller.store.postgres_schema import POSTGRES_MIGRATIONS
from drgreen_poller.webhook_signing import generate_webhook_secret, verify_webhook
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.fakes import WebhookReceiver
from tests.waiting import eventually

CLI = (sys.executable, "-m", "drgreen_poller")
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*CLI, *args, stdout=PIPE, stderr=PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once it is closed


class TestOwnDatabase:
    def test_a_test_writes_in_its_own_database(self, pg_database: PgDatabase) -> None:
        """A table made in one test's database is absent from another's (the next test)."""
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)
            conn.execute("CREATE TABLE marker (n int)")

    def test_the_next_test_starts_empty(self, pg_database: PgDatabase) -> None:
        """The other test's table is not here: each test's database is new."""
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('marker')").fetchone() == (None,)
            conn.execute("CREATE TABLE marker (n int)")


class TestConnecting:
    async def test_a_refused_connection_is_one_line(self, pg_database: PgDatabase) -> None:
        """Nothing listening at the URL's port: one line naming the URL and the refusal."""
        port = _closed_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/{pg_database.name}"
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url), sinks=())
        message = str(refused.value)
        assert message.startswith(f"cannot connect to the state database {url}: ")
        assert "Connection refused" in message
        assert "\n" not in message

    async def test_a_wrong_password_is_one_line(self, pg_database: PgDatabase) -> None:
        """A wrong password: libpq's reason, never the password."""
        wrong = StoreConfig(pg_database.url, Secret("not-the-password", "test"))
        with pytest.raises(StoreError) as refused:
            await Store.open(wrong, sinks=())
        assert str(refused.value) == (
            f"cannot connect to the state database {pg_database.url}: "
            'password authentication failed for user "postgres"'
        )

    async def test_a_missing_database_is_one_line(self, pg_database: PgDatabase) -> None:
        """A database that does not exist is named as such."""
        url = pg_database.server.url("no_such_db")
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url, Secret(pg_database.password, "test")), sinks=())
        assert str(refused.value) == (
            f'cannot connect to the state database {url}: database "no_such_db" does not exist'
        )

    async def test_a_password_in_the_url_is_never_shown(self, pg_database: PgDatabase) -> None:
        """A refusal of a URL holding a password shows it as ***."""
        url = f"postgresql://postgres:hunter2@127.0.0.1:{_closed_port()}/db"
        with pytest.raises(StoreError) as refused:
            await Store.open(StoreConfig(url), sinks=())
        assert "hunter2" not in str(refused.value)
        assert "postgres:***@127.0.0.1" in str(refused.value)


class TestSchema:
    async def test_migrated_once_to_its_own_version(self, pg_database: PgDatabase) -> None:
        """A new database gets PostgreSQL's migrations, recorded in schema_version; opening it
        again applies nothing more."""
        state = pg_store_config(pg_database)
        for _ in range(2):
            await (await Store.open(state, sinks=())).close()
        with pg_database.server.connect(pg_database.name) as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row == (len(POSTGRES_MIGRATIONS),)

    async def test_a_reader_never_creates_the_state(self, pg_database: PgDatabase) -> None:
        """A listing on a database the daemon never ran on is refused and creates nothing."""
        with pytest.raises(StoreError, match="there is no drgreen-poller state in"):
            await Store.open_reader(pg_store_config(pg_database))
        with pg_database.server.connect(pg_database.name) as conn:
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)

    async def test_a_newer_schema_is_refused(self, pg_database: PgDatabase) -> None:
        """A database migrated by a newer drgreen-poller is refused with a clear message."""
        state = pg_store_config(pg_database)
        await (await Store.open(state, sinks=())).close()
        with pg_database.server.connect(pg_database.name) as conn:
            conn.execute("UPDATE schema_version SET version = 99")
        with pytest.raises(StoreError, match="has schema version 99, newer than"):
            await Store.open(state, sinks=())


class TestLineage:
    async def test_every_writer_open_raises_the_floor(self, pg_database: PgDatabase) -> None:
        """As with SQLite, each start numbers above every sequence an earlier start could
        have used, so a lost or restored database never reuses an event id."""
        state, clock = pg_store_config(pg_database), FakeClock(NOW)
        first = await Store.open(state, sinks=(), clock=clock)
        await first.close()
        assert first.lineage.fresh
        clock.advance(60)
        second = await Store.open(state, sinks=(), clock=clock)
        await second.close()
        assert not second.lineage.fresh
        assert second.lineage.sequence_floor - first.lineage.sequence_floor == 60_000
        assert second.lineage.generation == first.lineage.generation + 1
        clock.advance(60)
        reader = await Store.open_reader(state, clock=clock)
        await reader.close()
        assert reader.lineage.generation == second.lineage.generation  # a reader records none

    async def test_a_sequence_above_int32_is_stored(self, pg_database: PgDatabase) -> None:
        """Sequences start above the floor (Unix milliseconds): they need 64 bits."""
        store = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        try:
            change = Observation(ORDER, {}, None, changes=[Change("order.approved", {})])
            [event] = (await store.commit_events("main", [change], now=NOW)).events
            assert event["sequence"] > 2**31
            [entity] = await store.entities("main")
            assert entity.sequence == event["sequence"]
        finally:
            await store.close()


class TestStatements:
    def test_placeholders_and_percent_signs_are_translated(self) -> None:
        """``?`` becomes ``%s`` outside quoted literals; a literal ``%`` is doubled."""
        assert pg_sql("SELECT '?', '100%' FROM t WHERE a = ? AND b LIKE ?") == (
            "SELECT '?', '100%%' FROM t WHERE a = %s AND b LIKE %s"
        )
        assert pg_sql("SELECT 1") is pg_sql("SELECT 1")  # translated once

    async def test_literals_survive_a_round_trip(self, pg_database: PgDatabase) -> None:
        """A statement with a literal ``%`` and a quoted ``?`` runs as written."""
        store = await Store.open(pg_store_config(pg_database), sinks=())
        try:
            [row] = await store._fetch("SELECT '100%' || ? AS a, '?' AS b", ["x"])
            assert (row[0], row["b"], len(row), list(row), row.keys()) == (
                "100%x", "?", 2, ["100%x", "?"], ["a", "b"],
            )  # fmt: skip
            assert isinstance(row, PgRow)

            def many(conn: Db) -> int:
                conn.executemany("INSERT INTO holders (name, added_at) VALUES (?, ?)", [("a", "t")])
                return int(conn.execute("SELECT COUNT(*) FROM holders").fetchone()[0])

            assert await store._atomically(many) == 1
        finally:
            await store.close()


class TestLock:
    def test_a_second_daemon_is_refused(self, pg_database: PgDatabase) -> None:
        """Taken exclusively (poll-once), one process holds it; the lock goes with its
        connection."""
        state = pg_store_config(pg_database)
        first = state_lock(state)
        assert isinstance(first, PostgresLock)
        with first, pytest.raises(StateLocked, match="already running on postgresql://"):
            state_lock(state).acquire()
        with state_lock(state):  # released: taken again
            pass

    def test_an_unreachable_database_is_a_store_error(self) -> None:
        """The lock of a database that cannot be reached says why, in one line."""
        url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/db"
        with pytest.raises(StoreError, match="cannot connect to the state database"):
            state_lock(StoreConfig(url)).acquire()


def _config(
    tmp_path: Path, box: LocalSandbox, holder: HolderInfo, db: PgDatabase, extra: str = ""
) -> str:
    (tmp_path / "pg.password").write_text(db.password + "\n")
    store = f'[store]\nurl = "{db.url}"\npassword_file = "pg.password"\n'
    return str(write_config(tmp_path, box.base_url, holder, extra=store + extra))


def _replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon and the commands run in subprocesses (conftest's ``box``)."""
    return SystemClock()


class TestCommands:
    async def test_check_config_online_reaches_the_database(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """``check-config --online`` connects to the database and says what it found."""
        config = _config(tmp_path, box, shop, pg_database)
        code, out, err = await _run("-c", config, "check-config", "--online")
        assert code == 0, err
        assert f"store: ok: connected to {pg_database.url}: PostgreSQL 1" in out
        assert "no drgreen-poller state yet" in out
        assert "shop: ok: signed call accepted" in out

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ("password", 'password authentication failed for user "postgres"'),
            ("port", "Connection refused"),
            ("database", 'database "elsewhere" does not exist'),
        ],
    )
    async def test_check_config_online_says_what_is_wrong(
        self,
        tmp_path: Path,
        box: LocalSandbox,
        shop: HolderInfo,
        pg_database: PgDatabase,
        change: str,
        reason: str,
    ) -> None:
        """A wrong password, a refused port or a missing database: one FAILED line, exit 1."""
        config = Path(_config(tmp_path, box, shop, pg_database))
        if change == "password":
            (tmp_path / "pg.password").write_text("wrong\n")
        url = {
            "password": pg_database.url,
            "port": pg_database.url.replace(f":{pg_database.server.port}/", f":{_closed_port()}/"),
            "database": pg_database.server.url("elsewhere"),
        }[change]
        _replace_in(config, pg_database.url, url)
        code, out, err = await _run("-c", str(config), "check-config", "--online")
        assert code == 1
        [line] = [line for line in out.splitlines() if line.startswith("store:")]
        assert line.startswith(f"store: FAILED: cannot connect to the state database {url}: ")
        assert reason in line
        assert "Traceback" not in err
        code, _, err = await _run("-c", str(config), "run")
        assert code == 1
        assert err.strip().splitlines()[-1].startswith("error: cannot connect to the state")

    async def test_backup_points_to_pg_dump(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """``backup`` and ``restore`` of a PostgreSQL state say to use its own tools: exit 2."""
        config = _config(tmp_path, box, shop, pg_database)
        code, _, err = await _run("-c", config, "backup", str(tmp_path / "copy.db"))
        assert code == 2
        assert err.splitlines()[-1] == (
            f"error: backup: the state is in PostgreSQL ({pg_database.url}); use pg_dump on "
            "that database instead"
        )
        code, _, err = await _run("-c", config, "restore", str(tmp_path / "copy.db"))
        assert code == 2
        assert "use pg_restore" in err

    @pytest.mark.timeout(90)
    async def test_poll_once_status_events_deliveries(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """poll-once, status, events list and the delivery commands work on PostgreSQL."""
        sink = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "audit.jsonl"\nevents = ["*"]\n'
        config = _config(tmp_path, box, shop, pg_database, sink)
        code, _, err = await _run("-c", config, "status")
        assert code == 1
        assert "there is no drgreen-poller state in" in err
        code, out, err = await _run("-c", config, "poll-once")
        assert (code, out) == (0, ""), err
        order = box.state.orders.create("shop")
        code, out, _ = await _run("-c", config, "poll-once")
        [event] = [json.loads(line) for line in out.splitlines()]
        assert (event["type"], event["resource"]["id"]) == ("order.created", order.id)
        code, out, _ = await _run("-c", config, "status", "--json")
        report = json.loads(out)
        assert report["state_path"] == pg_database.url
        assert report["deliveries"] == {"audit": {"pending": 1}}
        code, out, _ = await _run("-c", config, "events", "list", "--type", "order.*", "--json")
        assert [json.loads(line)["id"] for line in out.splitlines()] == [event["id"]]
        code, out, _ = await _run("-c", config, "deliveries", "list", "--json")
        [row] = [json.loads(line) for line in out.splitlines()]
        assert (row["event_id"], row["state"]) == (event["id"], "pending")
        code, out, _ = await _run("-c", config, "deliveries", "retry", str(row["id"]))
        assert code == 0, out
        code, out, _ = await _run("-c", config, "deliveries", "replay", "--since", "1h", "--sink",
                                  "audit")  # fmt: skip
        assert code == 0
        assert "1" in out


class TestDaemon:
    @pytest.mark.timeout(90)
    async def test_a_story_reaches_the_receiver(
        self,
        tmp_path: Path,
        box: LocalSandbox,
        shop: HolderInfo,
        pg_database: PgDatabase,
        webhook_receiver: tuple[WebhookReceiver, str],
    ) -> None:
        """``run`` on PostgreSQL delivers an order's lifecycle, signed, in order, each event
        once; SIGTERM stops it cleanly, and poll-once beside it is refused (several daemons
        share a database: test_ha.py)."""
        receiver, url = webhook_receiver
        secret = generate_webhook_secret()
        (tmp_path / "store.whsec").write_text(secret)
        sink = (
            f'[[sinks]]\nname = "store"\nkind = "webhook"\nurl = "{url}"\n'
            'secret_file = "store.whsec"\nevents = ["order.*"]\n'
        )
        config = _config(tmp_path, box, shop, pg_database, sink)
        daemon = await asyncio.create_subprocess_exec(
            *CLI, "-c", config, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
        )
        try:
            await _until_polled(daemon)
            code, _, err = await _run("-c", config, "poll-once")
            assert (code, "daemon is running on this database" in err) == (1, True)
            order = box.state.orders.create("shop")
            for step in (box.state.lifecycle.approve, box.state.lifecycle.pay):
                step(order.id)
            wanted = ["order.created", "order.approved", "order.paid"]
            await eventually(lambda: len(receiver.accepted()) >= len(wanted), timeout_s=30)
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(daemon.communicate(), 20)
        assert daemon.returncode == 0, stderr.decode()[-2000:]
        delivered = receiver.accepted()
        assert [d.event["type"] for d in delivered] == wanted
        assert len({d.id for d in delivered}) == len(wanted)
        now_s = SystemClock().now().timestamp()
        assert all(
            verify_webhook(
                [secret], msg_id=d.id, timestamp=d.headers["webhook-timestamp"],
                signature_header=d.headers["webhook-signature"], body=d.body, now_s=now_s,
            )
            for d in delivered
        )  # fmt: skip
        code, out, _ = await _run("-c", config, "events", "list", "--type", "order.*", "--json")
        assert [json.loads(line)["id"] for line in out.splitlines()] == [d.id for d in delivered]


async def _until_polled(daemon: asyncio.subprocess.Process) -> None:
    """Read the daemon's log until its first tier run has finished."""
    assert daemon.stdout is not None
    while True:
        line = await asyncio.wait_for(daemon.stdout.readline(), 20)
        assert line, "the daemon stopped"
        if json.loads(line)["event"] == "poll_finished":
            return


class TestLostConnection:
    async def test_a_dropped_connection_is_one_line(self, pg_database: PgDatabase) -> None:
        """The server ending the store's connection (a restart): the next write fails with a
        StoreError of one line, not a traceback."""
        store = await Store.open(pg_store_config(pg_database), sinks=())
        try:
            with pg_database.server.connect(pg_database.name) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'drgreen-poller' AND datname = %s",
                    (pg_database.name,),
                )
            with pytest.raises(StoreError) as failed:
                await store.ensure_holders(["main"], NOW)
            assert str(failed.value).startswith("writing the state database failed: ")
            assert "\n" not in str(failed.value)
        finally:
            await store.close()


class TestPrivileges:
    async def test_a_user_who_cannot_create_tables_is_told_so(
        self, pg_database: PgDatabase
    ) -> None:
        """A role without CREATE on the database's schema (PostgreSQL 15's default for any
        role but the owner) cannot set the state up: one line, with PostgreSQL's reason."""
        role = f"plain_{pg_database.name}"
        with pg_database.server.connect(pg_database.name) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'plain-pw'")
        url = pg_database.server.url(pg_database.name, user=role)
        try:
            with pytest.raises(StoreError) as refused:
                await Store.open(StoreConfig(url, Secret("plain-pw", "test")), sinks=())
            assert str(refused.value).startswith(f"cannot use the state database {url}: ")
            assert "permission denied for schema public" in str(refused.value)
            assert "\n" not in str(refused.value)
        finally:
            with pg_database.server.connect(pg_database.name) as admin:
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")
