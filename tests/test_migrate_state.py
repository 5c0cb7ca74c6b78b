"""Tests of ``migrate-state``: a SQLite state copied into a real PostgreSQL (tests/pg.py) with
every id kept, the daemon continuing there without re-sending anything, and the refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.errors import StoreError
from drgreen_poller.events import Resource, iso_ms
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import Observation, SinkRoute, StateLock, Store
from drgreen_poller.store.copying import NOT_COPIED, PG_ONLY_COLUMNS, TABLES, copy_state
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.fakes import WebhookReceiver
from tests.waiting import eventually

CLI = (sys.executable, "-m", "drgreen_poller")
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
ALL = SinkRoute("all", ("*",))


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    environ = {**os.environ, **(env or {})}
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=PIPE, stderr=PIPE, env=environ
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once it is closed


def _order(n: int) -> Resource:
    return Resource("order", f"00000000-0000-4000-8000-{n:012d}")


async def _sqlite_state(path: Path, orders: int, clock: FakeClock, *, in_flight: int = 0) -> None:
    """A SQLite state with one event (and one delivery to sink ``all``) per order, the first
    ``in_flight`` deliveries claimed (``delivering``) by a daemon that then stopped."""
    store = await Store.open(path, sinks=[ALL], clock=clock)
    try:
        await store.ensure_holders(["main"], clock.now())
        changes = [
            Observation(_order(n), {"n": n}, None, changes=[Change("order.approved", {})])
            for n in range(orders)
        ]
        await store.commit_events("main", changes, now=clock.now())
        if in_flight:
            await store.settle([], clock.now(), {"all": in_flight})
    finally:
        await store.close()


def _pg_rows(db: PgDatabase, sql: str) -> list[tuple[Any, ...]]:
    with db.server.connect(db.name) as conn:
        return conn.execute(sql).fetchall()


def _lite_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


class TestTables:
    async def test_every_table_of_either_schema_is_decided(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """Each table of the SQLite and PostgreSQL schemas is copied with the same columns, or
        is one NOT_COPIED says why not (a column: PG_ONLY_COLUMNS): a table or column added to
        either schema fails here until it is decided."""
        await _sqlite_state(tmp_path / "state.db", 0, FakeClock(NOW))
        store = await Store.open(pg_store_config(pg_database), sinks=())
        await store.close()
        lite = {
            name: [c[1] for c in _lite_rows(tmp_path / "state.db", f"PRAGMA table_info({name})")]
            for (name,) in _lite_rows(
                tmp_path / "state.db", "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        pg: dict[str, list[str]] = {}
        for table, column in _pg_rows(
            pg_database,
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        ):
            if (table, column) not in PG_ONLY_COLUMNS:
                pg.setdefault(table, []).append(column)
        for schema in (lite, pg):
            copied = {name: tuple(cols) for name, cols in schema.items() if name not in NOT_COPIED}
            assert copied == TABLES

    async def test_an_unknown_table_is_refused(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A state with a table this copy does not know is refused, naming it: never left
        behind silently."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 1, FakeClock(NOW))
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE extra (x)")
            conn.execute("ALTER TABLE holders ADD COLUMN note TEXT")
        with pytest.raises(StoreError, match=r"cannot copy \(extra, holders.note\)"):
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))


class TestCopy:
    async def test_rows_ids_and_bodies_are_the_same(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """Every row of every table arrives with the same values: ids, sequences, bodies
        byte for byte, times as written."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 5, FakeClock(NOW))
        report = copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert report.rows["events"] == report.rows["deliveries"] == 5
        for table, columns in TABLES.items():
            select = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}"  # noqa: S608 - the schema's own names
            assert [tuple(r) for r in _pg_rows(pg_database, select)] == _lite_rows(path, select)

    async def test_a_delivery_in_flight_arrives_pending(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A row ``delivering`` when the daemon stopped arrives ``pending`` (updated at the
        copy's time), its id, attempts and due time kept, as a restart would make it."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 2, FakeClock(NOW), in_flight=1)
        [[claimed]] = _lite_rows(path, "SELECT id FROM deliveries WHERE state = 'delivering'")
        later = NOW + timedelta(minutes=5)
        before = _lite_rows(path, "SELECT id, attempts, next_attempt_at FROM deliveries")
        report = copy_state(path, pg_store_config(pg_database), iso_ms(later))
        assert report.requeued_in_flight == 1
        rows = _pg_rows(
            pg_database, "SELECT id, state, updated_at, attempts, next_attempt_at FROM deliveries"
        )
        states = {r[0]: (r[1], r[2]) for r in rows}
        assert states[claimed] == ("pending", iso_ms(later))
        assert sorted((r[0], r[3], r[4]) for r in rows) == sorted(before)

    async def test_new_ids_follow_every_id_sqlite_gave(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """PostgreSQL's next event and delivery ids come after every id SQLite handed out,
        also a pruned row's, and the next sequence is above the copied ones."""
        path, clock = tmp_path / "state.db", FakeClock(NOW)
        await _sqlite_state(path, 3, clock)
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM deliveries WHERE id = 3")
        report = copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert report.next_ids == {"events": 4, "deliveries": 4}
        clock.advance(1)
        store = await Store.open(pg_store_config(pg_database), sinks=[ALL], clock=clock)
        try:
            change = Observation(_order(0), {"n": 0}, None, changes=[Change("order.paid", {})])
            [event] = (await store.commit_events("main", [change], now=clock.now())).events
            [row] = await store.deliveries(limit=1)
        finally:
            await store.close()
        [[copied_sequence]] = _lite_rows(path, "SELECT MAX(sequence) FROM events")
        assert event["sequence"] > copied_sequence
        assert (row.id, row.event_id) == (4, event["id"])
        assert _pg_rows(pg_database, "SELECT MAX(seq) FROM events") == [(4,)]

    async def test_a_failing_copy_writes_nothing(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A row PostgreSQL refuses (a delivery of an event that is gone, in a state edited by
        hand) fails the copy in one line, and the database is left as it was: not even the
        schema."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 2, FakeClock(NOW))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE deliveries SET event_id = 'evt_gone' WHERE id = 2")
        with pytest.raises(StoreError) as failed:
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        message = str(failed.value)
        assert message.startswith(f"copying into {pg_database.url} failed, nothing was written: ")
        assert "foreign key" in message
        assert "\n" not in message
        assert _pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    async def test_a_database_opened_without_a_state_is_taken(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A database a daemon opened but wrote no state into (only its lineage row) takes the
        copy: the SQLite state's lineage, under the higher of the two sequence floors."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 1, FakeClock(NOW))
        opened = await Store.open(
            pg_store_config(pg_database), sinks=(), clock=FakeClock(NOW + timedelta(days=1))
        )
        await opened.close()
        copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        [[lineage]] = _lite_rows(path, "SELECT lineage FROM lineage")
        assert _pg_rows(pg_database, "SELECT lineage, sequence_floor FROM lineage") == [
            (lineage, opened.lineage.sequence_floor)
        ]

    async def test_a_damaged_file_fails_the_copy_in_one_line(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A SQLite file damaged past its schema (its second half overwritten) fails the copy
        where it cannot be read, in one line naming it, and nothing is written."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 300, FakeClock(NOW))
        size = path.stat().st_size
        with path.open("r+b") as damaged:
            damaged.seek(size // 2)
            damaged.write(b"\xff" * (size - size // 2))
        with pytest.raises(StoreError) as failed:
            copy_state(path, pg_store_config(pg_database), iso_ms(NOW))
        assert str(failed.value) == (
            f"reading the state database {path} failed, nothing was written to"
            f" {pg_database.url}: database disk image is malformed"
        )
        assert _pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    @pytest.mark.timeout(30)
    async def test_a_writer_holding_the_file_past_the_busy_timeout(
        self, tmp_path: Path, pg_database: PgDatabase
    ) -> None:
        """A command holding SQLite's write lock longer than the busy timeout (5 s): one line
        naming the file, nothing copied."""
        path = tmp_path / "state.db"
        await _sqlite_state(path, 1, FakeClock(NOW))
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=f"^cannot read the state database {path}: "):
                await asyncio.to_thread(copy_state, path, pg_store_config(pg_database), iso_ms(NOW))
        finally:
            writer.close()
        assert _pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]


# --- the command, against the sandbox and the real daemon --------------------------------------


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon and the commands run in subprocesses (conftest's ``box``)."""
    return SystemClock()


def _configs(
    tmp_path: Path, box: LocalSandbox, shop: HolderInfo, extra: str, db: PgDatabase
) -> tuple[str, str]:
    """The SQLite configuration, and the same with ``[store]`` naming ``db`` (as the operator
    edits it after the copy)."""
    (tmp_path / "pg.password").write_text(db.password + "\n")
    sqlite_config = write_config(tmp_path, box.base_url, shop, extra=extra)
    pg_config = tmp_path / "config-pg.toml"
    store = f'\n[store]\nurl = "{db.url}"\npassword_file = "pg.password"\n'
    pg_config.write_text(sqlite_config.read_text() + store)
    return str(sqlite_config), str(pg_config)


async def _listings(config: str) -> list[str]:
    """What ``events list`` and ``deliveries list`` show of the state, as JSON lines."""
    shown = []
    for command in (
        ("events", "list", "--json", "--limit", "1000"),
        ("deliveries", "list", "--json", "--attempts", "--limit", "1000"),
    ):
        code, out, err = await _run("-c", config, *command)
        assert code == 0, err
        shown.append(out)
    return shown


async def _start(config: str) -> asyncio.subprocess.Process:
    """The daemon on ``config``, once shop's orders have been swept past the first sync (an
    order made later is announced)."""
    daemon = await asyncio.create_subprocess_exec(
        *CLI, "-c", config, "--log-format", "json", "run", stdout=PIPE, stderr=PIPE
    )
    assert daemon.stdout is not None
    while True:
        line = await asyncio.wait_for(daemon.stdout.readline(), 30)
        assert line, "the daemon stopped"
        entry = json.loads(line)
        seen = (entry["event"], entry.get("tier"), entry.get("holder"), entry.get("first_sync"))
        if seen == ("poll_finished", "active_orders", "shop", False):
            return daemon


async def _stop(daemon: asyncio.subprocess.Process) -> None:
    daemon.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(daemon.communicate(), 30)
    assert daemon.returncode == 0, stderr.decode()[-2000:]


def _delivery(path: Path, sink: str, event_type: str) -> tuple[str, int]:
    """State and attempts of ``sink``'s delivery of the one event of ``event_type``."""
    rows = _lite_rows(
        path,
        "SELECT d.state, d.attempts FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
        " WHERE d.sink = ? AND e.type = ?",
        (sink, event_type),
    )
    return rows[0] if rows else ("none", 0)


class TestCommand:
    @pytest.mark.timeout(240)
    async def test_the_daemon_continues_on_postgresql_sending_nothing_twice(
        self,
        tmp_path: Path,
        box: LocalSandbox,
        shop: HolderInfo,
        pg_database: PgDatabase,
        webhook_receiver: tuple[WebhookReceiver, str],
    ) -> None:
        """A state the daemon made on SQLite (delivered, failed and retrying deliveries, a
        refused holder, an event not yet sent) is copied; the listings show the same rows, and
        the daemon on PostgreSQL delivers what was owed under its ids, re-emits nothing, and
        numbers the next transition after the copied ones."""
        receiver, url = webhook_receiver
        (tmp_path / "store.whsec").write_text(generate_webhook_secret())
        other = box.state.create_holder("other")
        box.state.revoke_holder_key("other")
        (tmp_path / "other.api_key").write_text(other.credentials.api_key)
        (tmp_path / "other.secret_key").write_text(other.credentials.secret_key)
        extra = (
            f'unauthorized_retry = "1h"\n[delivery]\nretry_schedule = ["0s", "4s"]\n'
            f'[[sinks]]\nname = "store"\nkind = "webhook"\nurl = "{url}"\n'
            'secret_file = "store.whsec"\nevents = ["order.*"]\n'
            f'[[sinks]]\nname = "down"\nkind = "webhook"\n'
            f'url = "http://127.0.0.1:{_closed_port()}/hook"\nsecret_file = "store.whsec"\n'
            'events = ["order.*"]\n'
            '[[holders]]\nname = "other"\napi_key_file = "other.api_key"\n'
            'secret_key_file = "other.secret_key"\n'
        )
        lite, pg = _configs(tmp_path, box, shop, extra, pg_database)
        state = tmp_path / "state.db"
        lifecycle = box.state.lifecycle
        daemon = await _start(lite)
        try:
            order = box.state.orders.create("shop")
            lifecycle.approve(order.id)
            await eventually(
                lambda: (
                    _delivery(state, "down", "order.approved")[0] == "failed"
                    and len(receiver.accepted()) == 2
                ),
                timeout_s=60,
            )
            receiver.fail_next = 1000
            lifecycle.pay(order.id)
            await eventually(lambda: _delivery(state, "store", "order.paid")[1] >= 1, timeout_s=30)
        finally:
            await _stop(daemon)
        assert _delivery(state, "store", "order.paid") == ("pending", 1)
        receiver.fail_next = 0
        lifecycle.ship(order.id)
        code, out, err = await _run("-c", lite, "poll-once")
        found = [json.loads(line)["type"] for line in out.splitlines()]
        assert [kind for kind in found if kind.startswith("order.")] == ["order.shipped"], err
        before = await _listings(lite)
        before_events = _lite_rows(state, "SELECT seq, id, body FROM events ORDER BY seq")

        code, out, err = await _run("-c", lite, "migrate-state", "--to", pg_database.url,
                                    "--password-file", str(tmp_path / "pg.password"))  # fmt: skip
        assert code == 0, err
        assert f"copied {state} into {pg_database.url}, every id kept:" in out
        assert f"  events          {len(before_events):>10,}" in out
        assert await _listings(pg) == before
        assert _pg_rows(pg_database, "SELECT seq, id, body FROM events ORDER BY seq") == [
            tuple(row) for row in before_events
        ]

        daemon = await _start(pg)
        try:
            await eventually(lambda: len(receiver.accepted()) == 4, timeout_s=30)
            lifecycle.deliver(order.id)
            await eventually(lambda: len(receiver.accepted()) == 5, timeout_s=30)
        finally:
            await _stop(daemon)
        sent = [(d.id, d.event["type"], d.event["sequence"]) for d in receiver.accepted()]
        assert [kind for _, kind, _ in sent] == [
            "order.created", "order.approved", "order.paid", "order.shipped", "order.delivered",
        ]  # fmt: skip
        assert len({event_id for event_id, _, _ in sent}) == 5
        assert sent[-1][2] > sent[-2][2]
        copied_ids = [row[1] for row in before_events]
        after = _pg_rows(pg_database, "SELECT id, type FROM events ORDER BY seq")
        assert [row[0] for row in after[: len(copied_ids)]] == copied_ids
        new = [row[1] for row in after[len(copied_ids) :]]  # a commission may accrue too
        assert [kind for kind in new if kind != "commission.accrued"] == ["order.delivered"]
        listed = [json.loads(line) for line in before[1].splitlines()]
        owed = {d["event_id"]: d for d in listed if d["sink"] == "store"}
        paid, shipped = (owed[event_id] for event_id, _, _ in sent[2:4])
        assert [(d["state"], d["attempts"]) for d in (paid, shipped)] == [
            ("pending", 1),
            ("pending", 0),
        ]
        assert _pg_rows(
            pg_database,
            f"SELECT state FROM deliveries WHERE id IN ({paid['id']}, {shipped['id']})",  # noqa: S608 - ids the test read
        ) == [("delivered",), ("delivered",)]
        assert _pg_rows(
            pg_database, "SELECT state, attempts FROM deliveries WHERE sink = 'down' ORDER BY id"
        )[:2] == [("failed", 2), ("failed", 2)]


class TestRefusals:
    async def test_refused_while_a_daemon_runs_on_the_file(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """The daemon's lock held on the SQLite file: one line, exit 1, nothing copied."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        await _sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        with StateLock(tmp_path / "state.db"):
            code, _, err = await _run("-c", lite, "migrate-state", "--to", pg_database.url,
                                      "--password-env", "PGPASS_TEST")  # fmt: skip
        assert code == 2  # checked first: the password variable is not set
        with StateLock(tmp_path / "state.db"):
            code, _, err = await _run("-c", lite, "migrate-state", "--to", pg_database.url,
                                      "--password-env", "PGPASS_TEST",
                                      env={"PGPASS_TEST": pg_database.password})  # fmt: skip
        assert code == 1
        assert err.splitlines()[-1:] == [
            f"error: a drgreen-poller is running on {tmp_path / 'state.db'}: stop it first"
            " (migrate-state copies a stopped state, so that nothing changes under the copy)"
        ]
        assert _pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    async def test_refused_when_the_target_holds_a_state(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """A second copy into the same database is refused, saying how to start over; the
        configuration's ``[store]`` is the target when ``--to`` is not given."""
        _, pg = _configs(tmp_path, box, shop, "", pg_database)
        await _sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW), in_flight=1)
        code, out, err = await _run("-c", pg, "migrate-state")
        assert code == 0, err
        assert "  1 delivery(ies) in flight when the daemon stopped are pending again" in out
        assert "  start the daemon (systemctl restart drgreen-poller)" in out
        code, _, err = await _run("-c", pg, "migrate-state")
        assert code == 1
        assert err.splitlines()[-1:] == [
            f"error: {pg_database.url} already holds a drgreen-poller state (1 holders, 1"
            " entities, 1 events, 1 deliveries); migrate-state copies only into an empty"
            " database: to start over, drop and create the database (dropdb/createdb, or DROP"
            " SCHEMA public CASCADE; CREATE SCHEMA public)"
        ]
        assert _pg_rows(pg_database, "SELECT COUNT(*) FROM events") == [(1,)]

    @pytest.mark.parametrize(
        ("options", "code", "line"),
        [
            ((), 1, "error: there is no state database at {state} to migrate"),
            (("--to", "http://db/x"), 2, "error: --to: 'http://db/x' is not a postgresql:// URL"),
            (("--to", "postgresql://u@127.0.0.1:{closed}/db"), 1,
             "error: cannot connect to the state database postgresql://u@127.0.0.1:{closed}/db:"),
            (("--password-file", "{pw}"), 2,
             "error: --password-file and --password-env go with --to"),
            (("--to", "postgresql://u:pw@127.0.0.1/db", "--password-file", "{pw}"), 2,
             "error: --to: holds a password and file {pw} gives one: give one"),
            (("--to", "postgresql://u@127.0.0.1/db", "--password-file", "absent"), 2,
             "error: --password-file: no such file: absent"),
        ],
    )  # fmt: skip
    async def test_one_line_for_each_problem(
        self,
        tmp_path: Path,
        box: LocalSandbox,
        shop: HolderInfo,
        pg_database: PgDatabase,
        options: tuple[str, ...],
        code: int,
        line: str,
    ) -> None:
        """No state file, a URL that is not PostgreSQL's, a database that cannot be reached,
        password options that do not fit: one line, exit 1 (a failure) or 2 (usage)."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        if options:
            await _sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        closed = str(_closed_port())
        pw = str(tmp_path / "pg.password")
        given = [o.format(closed=closed, pw=pw) for o in options] or ["--to", pg_database.url]
        done, out, err = await _run("-c", lite, "migrate-state", *given)
        expected = line.format(state=tmp_path / "state.db", closed=closed, pw=pw)
        assert (done, out) == (code, "")
        shown = err.splitlines()[-1]
        assert shown.startswith(expected)

    async def test_a_password_in_the_url_warns_and_is_never_shown(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """A password written in ``--to`` works but warns (a command line is readable by other
        users); no message shows it."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        await _sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        server, name = pg_database.server, pg_database.name
        url = f"postgresql://postgres:{pg_database.password}@127.0.0.1:{server.port}/{name}"
        code, out, err = await _run("-c", lite, "migrate-state", "--to", url)
        assert code == 0, err
        assert "warning: --to: password written in the URL" in err
        assert f"postgres:***@127.0.0.1:{server.port}/{name}" in out
        assert pg_database.password not in out + err

    async def test_without_a_target(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """Neither ``--to`` nor ``[store]``: one line saying to give one, exit 2."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        code, _, err = await _run("-c", lite, "migrate-state")
        assert code == 2
        assert err.splitlines()[-1:] == [
            "error: migrate-state: give --to postgresql://USER@HOST:5432/DATABASE, or set [store]"
            " url in the configuration"
        ]
