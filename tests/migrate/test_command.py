"""Tests of the ``migrate-state`` command against the sandbox and the real daemon: the daemon
continuing on PostgreSQL sending nothing twice, and the refusals (a running daemon, a target
holding a state, bad options, a password in the URL, no target), each in one line."""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.store import StateLock
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.cli_run import CLI, run_cli
from tests.conftest import PgDatabase, write_config
from tests.fakes import WebhookReceiver
from tests.migrate.rig import NOW, lite_rows, pg_rows, sqlite_state
from tests.ports import free_port
from tests.waiting import eventually


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
        code, out, err = await run_cli("-c", config, *command, timeout_s=60)
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
    rows = lite_rows(
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
            f'url = "http://127.0.0.1:{free_port()}/hook"\nsecret_file = "store.whsec"\n'
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
        code, out, err = await run_cli("-c", lite, "poll-once", timeout_s=60)
        found = [json.loads(line)["type"] for line in out.splitlines()]
        assert [kind for kind in found if kind.startswith("order.")] == ["order.shipped"], err
        before = await _listings(lite)
        before_events = lite_rows(state, "SELECT seq, id, body FROM events ORDER BY seq")

        code, out, err = await run_cli("-c", lite, "migrate-state", "--to", pg_database.url,
                                       "--password-file", str(tmp_path / "pg.password"),
                                       timeout_s=60)  # fmt: skip
        assert code == 0, err
        assert f"copied {state} into {pg_database.url}, every id kept:" in out
        assert f"  events          {len(before_events):>10,}" in out
        assert await _listings(pg) == before
        assert pg_rows(pg_database, "SELECT seq, id, body FROM events ORDER BY seq") == [
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
        after = pg_rows(pg_database, "SELECT id, type FROM events ORDER BY seq")
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
        assert pg_rows(
            pg_database,
            f"SELECT state FROM deliveries WHERE id IN ({paid['id']}, {shipped['id']})",  # noqa: S608 - ids the test read
        ) == [("delivered",), ("delivered",)]
        assert pg_rows(
            pg_database, "SELECT state, attempts FROM deliveries WHERE sink = 'down' ORDER BY id"
        )[:2] == [("failed", 2), ("failed", 2)]


class TestRefusals:
    async def test_refused_while_a_daemon_runs_on_the_file(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """The daemon's lock held on the SQLite file: one line, exit 1, nothing copied."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        await sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        with StateLock(tmp_path / "state.db"):
            code, _, err = await run_cli("-c", lite, "migrate-state", "--to", pg_database.url,
                                         "--password-env", "PGPASS_TEST", timeout_s=60)  # fmt: skip
        assert code == 2  # checked first: the password variable is not set
        with StateLock(tmp_path / "state.db"):
            code, _, err = await run_cli("-c", lite, "migrate-state", "--to", pg_database.url,
                                         "--password-env", "PGPASS_TEST",
                                         env={"PGPASS_TEST": pg_database.password},
                                         timeout_s=60)  # fmt: skip
        assert code == 1
        assert err.splitlines()[-1:] == [
            f"error: a drgreen-poller is running on {tmp_path / 'state.db'}: stop it first"
            " (migrate-state copies a stopped state, so that nothing changes under the copy)"
        ]
        assert pg_rows(pg_database, "SELECT to_regclass('events')") == [(None,)]

    async def test_refused_when_the_target_holds_a_state(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """A second copy into the same database is refused, saying how to start over; the
        configuration's ``[store]`` is the target when ``--to`` is not given."""
        _, pg = _configs(tmp_path, box, shop, "", pg_database)
        await sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW), in_flight=1)
        code, out, err = await run_cli("-c", pg, "migrate-state", timeout_s=60)
        assert code == 0, err
        assert "  1 delivery(ies) in flight when the daemon stopped are pending again" in out
        assert "  start the daemon (systemctl restart drgreen-poller)" in out
        code, _, err = await run_cli("-c", pg, "migrate-state", timeout_s=60)
        assert code == 1
        assert err.splitlines()[-1:] == [
            f"error: {pg_database.url} already holds a drgreen-poller state (1 holders, 1"
            " entities, 1 events, 1 deliveries); migrate-state copies only into an empty"
            " database: to start over, drop and create the database (dropdb/createdb, or DROP"
            " SCHEMA public CASCADE; CREATE SCHEMA public)"
        ]
        assert pg_rows(pg_database, "SELECT COUNT(*) FROM events") == [(1,)]

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
            await sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        closed = str(free_port())
        pw = str(tmp_path / "pg.password")
        given = [o.format(closed=closed, pw=pw) for o in options] or ["--to", pg_database.url]
        done, out, err = await run_cli("-c", lite, "migrate-state", *given, timeout_s=60)
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
        await sqlite_state(tmp_path / "state.db", 1, FakeClock(NOW))
        server, name = pg_database.server, pg_database.name
        url = f"postgresql://postgres:{pg_database.password}@127.0.0.1:{server.port}/{name}"
        code, out, err = await run_cli("-c", lite, "migrate-state", "--to", url, timeout_s=60)
        assert code == 0, err
        assert "warning: --to: password written in the URL" in err
        assert f"postgres:***@127.0.0.1:{server.port}/{name}" in out
        assert pg_database.password not in out + err

    async def test_without_a_target(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """Neither ``--to`` nor ``[store]``: one line saying to give one, exit 2."""
        lite, _ = _configs(tmp_path, box, shop, "", pg_database)
        code, _, err = await run_cli("-c", lite, "migrate-state", timeout_s=60)
        assert code == 2
        assert err.splitlines()[-1:] == [
            "error: migrate-state: give --to postgresql://USER@HOST:5432/DATABASE, or set [store]"
            " url in the configuration"
        ]
