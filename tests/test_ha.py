"""Tests of several daemons on one PostgreSQL database: the instance id in the User-Agent, the
lease gate on requests, and real ``run`` processes sharing holders, one taking over the other's
when it is killed (``status`` and ``/metrics`` show it). The lease loop in process is
tests/sharing/, the long crash loop tests/reliability/test_ha.py."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from asyncio.subprocess import DEVNULL, PIPE
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller import USER_AGENT
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import SystemClock
from drgreen_poller.errors import LeaseLost
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.scheduler import Timing
from drgreen_poller.store import SinkRoute, Store
from drgreen_poller.store.leases import Fence
from drgreen_poller.tiers import TIERS, Tier
from tests.cli_run import CLI
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.ports import free_port
from tests.waiting import eventually

TTL = "2s"


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemons run in subprocesses against the sandbox (conftest's ``box``)."""
    return SystemClock()


def _client(box: LocalSandbox, holder: HolderInfo, session: aiohttp.ClientSession) -> ApiClient:
    settings = ApiSettings(box.base_url, 5.0, 100.0, 10)
    return ApiClient(session, settings, holder.credentials, SystemClock(), instance="vm-1-abc")


class TestUserAgent:
    async def test_requests_name_their_instance(
        self, box: LocalSandbox, shop: HolderInfo, session: aiohttp.ClientSession
    ) -> None:
        """A daemon sharing its database says which instance it is in each request's
        User-Agent, which the sandbox's request log keeps."""
        await _client(box, shop, session).orders_summary()
        [entry] = (await box.control("GET", "/requests")).json()["log"]
        assert entry["user_agent"] == f"{USER_AGENT} (instance vm-1-abc)"

    async def test_a_closed_gate_sends_nothing(
        self, box: LocalSandbox, shop: HolderInfo, session: aiohttp.ClientSession
    ) -> None:
        """A request whose gate refuses (the lease is not sure any more) never leaves."""
        api = _client(box, shop, session)

        def closed() -> None:
            raise LeaseLost("shop")

        api.gate = closed
        with pytest.raises(LeaseLost):
            await api.orders_summary()
        assert (await box.control("GET", "/requests")).json()["total"] == 0


def _configs(
    tmp_path: Path, box: LocalSandbox, holders: list[HolderInfo], db: PgDatabase
) -> list[tuple[str, str]]:
    """One configuration per daemon (its own /metrics port), both naming every holder."""
    (tmp_path / "pg.password").write_text(db.password + "\n")
    extra = f'[store]\nurl = "{db.url}"\npassword_file = "pg.password"\nlease_ttl = "{TTL}"\n'
    for other in holders[1:]:
        (tmp_path / f"{other.name}.api_key").write_text(other.credentials.api_key)
        (tmp_path / f"{other.name}.secret_key").write_text(other.credentials.secret_key)
        extra += (
            f'[[holders]]\nname = "{other.name}"\napi_key_file = "{other.name}.api_key"\n'
            f'secret_key_file = "{other.name}.secret_key"\nstrain_countries = ["GBR"]\n'
        )
    paths = []
    for n in range(2):
        directory = tmp_path / f"d{n}"
        directory.mkdir()
        for key in tmp_path.glob("*.*"):
            if key.is_file():
                (directory / key.name).write_text(key.read_text())
        listen = f"127.0.0.1:{free_port()}"
        path = write_config(directory, box.base_url, holders[0], http_listen=listen, extra=extra)
        paths.append((str(path), listen))
    return paths


async def _status(config: str) -> dict[str, Any]:
    """``status --json``; before the first daemon made the state, no instance."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "-c", config, "status", "--json", stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    if not out:
        assert "no drgreen-poller state" in err.decode(), err.decode()
        return {"instances": []}
    return dict(json.loads(out))


def _held(report: dict[str, Any]) -> dict[int, list[str]]:
    return {row["pid"]: row["holders"] for row in report["instances"] if row["alive"]}


async def _metric(listen: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://{listen}/metrics") as r:
        body = await r.text()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name))


class TestTwoDaemons:
    @pytest.mark.timeout(90)
    async def test_holders_are_shared_and_taken_over(
        self, tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
    ) -> None:
        """Two ``run`` processes share two holders, one each; when one is SIGKILLed the other
        takes its holder over within the lease's time to live, counts the takeover, and polls
        it under its own instance id; a stopped daemon leaves the registry."""
        second = box.state.create_holder("second")
        configs, listens = zip(*_configs(tmp_path, box, [shop, second], pg_database), strict=True)
        daemons = [
            await asyncio.create_subprocess_exec(*CLI, "-c", c, "run", stdout=DEVNULL, stderr=PIPE)
            for c in configs
        ]
        try:
            pids = [d.pid for d in daemons]

            async def shared() -> bool:
                held = _held(await _status(configs[0]))
                return sorted(map(len, held.values())) == [1, 1] and sorted(held) == sorted(pids)

            await eventually(shared, timeout_s=30, what="one holder each")
            process = await asyncio.create_subprocess_exec(
                *CLI, "-c", configs[0], "status", stdout=PIPE, stderr=DEVNULL
            )
            text = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
            assert "instances: 2" in text
            assert all(f"pid {pid}" in text for pid in pids)
            daemons[0].kill()
            await daemons[0].wait()

            async def taken() -> bool:
                return _held(await _status(configs[1])) == {pids[1]: ["second", "shop"]}

            await eventually(taken, timeout_s=30, what="the survivor holding both")
            assert await _metric(listens[1], "drgreen_poller_lease_takeovers_total") == 1
            [survivor] = (await _status(configs[1]))["instances"]
            await box.control("DELETE", "/requests")

            async def polled() -> bool:
                return {r["holder"] for r in await _log(box)} >= {"shop", "second"}

            await eventually(polled, timeout_s=10, what="both holders polled again")
            agents = {r["user_agent"] for r in await _log(box)}
            assert agents == {f"{USER_AGENT} (instance {survivor['id']})"}
        finally:
            for daemon in daemons:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
            for daemon in daemons:
                _, err = await asyncio.wait_for(daemon.communicate(), 20)
                assert "Traceback" not in err.decode()
        assert (await _status(configs[1]))["instances"] == []


async def _log(box: LocalSandbox) -> list[dict[str, Any]]:
    return list((await box.control("GET", "/requests")).json()["log"])


class TestLostLease:
    async def test_a_refused_commit_stops_the_holder_with_one_warning(
        self,
        box: LocalSandbox,
        shop: HolderInfo,
        session: aiohttp.ClientSession,
        pg_database: PgDatabase,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A run whose commit the fence refuses (another instance holds the lease) writes
        nothing, plans no next run, logs one ``lease_lost`` warning without a traceback and
        tells the service to stop polling the holder."""
        store = await Store.open(pg_store_config(pg_database), sinks=[SinkRoute("all", ("*",))])
        try:
            store.fence = Fence("me", {})  # holds no lease
            clock = SystemClock()
            api = _client(box, shop, session)
            poller = HolderPoller("shop", ["GBR"], api, store, clock, PollSettings())
            timing = Timing(interval_s=60, jitter=0, backoff_base_s=5, backoff_max_s=60)
            runner = TierRunner(
                {"shop": poller}, store, clock, dict.fromkeys(TIERS, timing), random.Random(1)
            )
            lost: list[str] = []
            runner.on_lease_lost = lost.append
            assert await runner.run("shop", Tier.ACTIVE_ORDERS) == {}
            assert lost == ["shop"]
            assert await store.events() == []
            assert await store.tier_runs("shop") == []
        finally:
            await store.close()
        logged = capsys.readouterr()
        assert "lease_lost" in logged.out + logged.err
        assert "Traceback" not in logged.out + logged.err
