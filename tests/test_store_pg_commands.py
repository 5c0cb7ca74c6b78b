"""Tests of the commands and the daemon on a PostgreSQL state (tests/pg.py): ``check-config
--online`` reaching the database or saying what is wrong, ``backup`` pointing to pg_dump,
poll-once, status, events and deliveries on it, and ``run`` delivering a story."""

from __future__ import annotations

import asyncio
import json
import signal
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.webhook_signing import generate_webhook_secret, verify_webhook
from tests.cli_run import CLI, run_cli
from tests.conftest import PgDatabase, write_config
from tests.fakes import WebhookReceiver
from tests.ports import free_port
from tests.waiting import eventually


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
        code, out, err = await run_cli("-c", config, "check-config", "--online", timeout_s=30)
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
            "port": pg_database.url.replace(f":{pg_database.server.port}/", f":{free_port()}/"),
            "database": pg_database.server.url("elsewhere"),
        }[change]
        _replace_in(config, pg_database.url, url)
        code, out, err = await run_cli("-c", str(config), "check-config", "--online", timeout_s=30)
        assert code == 1
        [line] = [line for line in out.splitlines() if line.startswith("store:")]
        assert line.startswith(f"store: FAILED: cannot connect to the state database {url}: ")
        assert reason in line
        assert "Traceback" not in err
        code, _, err = await run_cli("-c", str(config), "run", timeout_s=30)
        assert code == 1
        assert err.strip().splitlines()[-1].startswith("error: cannot connect to the state")

    async def test_backup_points_to_pg_dump(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """``backup`` and ``restore`` of a PostgreSQL state say to use its own tools: exit 2."""
        config = _config(tmp_path, box, shop, pg_database)
        code, _, err = await run_cli(
            "-c", config, "backup", str(tmp_path / "copy.db"), timeout_s=30
        )
        assert code == 2
        assert err.splitlines()[-1] == (
            f"error: backup: the state is in PostgreSQL ({pg_database.url}); use pg_dump on "
            "that database instead"
        )
        code, _, err = await run_cli(
            "-c", config, "restore", str(tmp_path / "copy.db"), timeout_s=30
        )
        assert code == 2
        assert "use pg_restore" in err

    @pytest.mark.timeout(90)
    async def test_poll_once_status_events_deliveries(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """poll-once, status, events list and the delivery commands work on PostgreSQL."""
        sink = '[[sinks]]\nname = "audit"\nkind = "file"\npath = "audit.jsonl"\nevents = ["*"]\n'
        config = _config(tmp_path, box, shop, pg_database, sink)
        code, _, err = await run_cli("-c", config, "status", timeout_s=30)
        assert code == 1
        assert "there is no drgreen-poller state in" in err
        code, out, err = await run_cli("-c", config, "poll-once", timeout_s=30)
        assert (code, out) == (0, ""), err
        order = box.state.orders.create("shop")
        code, out, _ = await run_cli("-c", config, "poll-once", timeout_s=30)
        [event] = [json.loads(line) for line in out.splitlines()]
        assert (event["type"], event["resource"]["id"]) == ("order.created", order.id)
        code, out, _ = await run_cli("-c", config, "status", "--json", timeout_s=30)
        report = json.loads(out)
        assert report["state_path"] == pg_database.url
        assert report["deliveries"] == {"audit": {"pending": 1}}
        code, out, _ = await run_cli(
            "-c", config, "events", "list", "--type", "order.*", "--json", timeout_s=30
        )
        assert [json.loads(line)["id"] for line in out.splitlines()] == [event["id"]]
        code, out, _ = await run_cli("-c", config, "deliveries", "list", "--json", timeout_s=30)
        [row] = [json.loads(line) for line in out.splitlines()]
        assert (row["event_id"], row["state"]) == (event["id"], "pending")
        code, out, _ = await run_cli(
            "-c", config, "deliveries", "retry", str(row["id"]), timeout_s=30
        )
        assert code == 0, out
        code, out, _ = await run_cli("-c", config, "deliveries", "replay", "--since", "1h",
                                     "--sink", "audit", timeout_s=30)  # fmt: skip
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
            code, _, err = await run_cli("-c", config, "poll-once", timeout_s=30)
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
        code, out, _ = await run_cli(
            "-c", config, "events", "list", "--type", "order.*", "--json", timeout_s=30
        )
        assert [json.loads(line)["id"] for line in out.splitlines()] == [d.id for d in delivered]


async def _until_polled(daemon: asyncio.subprocess.Process) -> None:
    """Read the daemon's log until its first tier run has finished."""
    assert daemon.stdout is not None
    while True:
        line = await asyncio.wait_for(daemon.stdout.readline(), 20)
        assert line, "the daemon stopped"
        if json.loads(line)["event"] == "poll_finished":
            return
