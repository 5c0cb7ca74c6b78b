"""Tests of several daemons on one PostgreSQL database: the instance id in the User-Agent, the
lease gate on requests, and real ``run`` processes sharing holders, one taking over the other's
when it is killed (``status`` and ``/metrics`` show it). The long crash loop is
tests/reliability/test_ha.py."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller import USER_AGENT
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.changes import Change
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.config import load_config
from drgreen_poller.errors import LeaseLost
from drgreen_poller.events import Resource
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.runner import TierRunner
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.scheduler import Timing
from drgreen_poller.service import Service, apply_config, build_service, open_runtime
from drgreen_poller.sharing import EXPIRY_MARGIN_S, HolderSharing, next_round_in
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.store.leases import Fence, Instance
from drgreen_poller.tiers import TIERS, Tier
from tests.cli_run import CLI
from tests.conftest import PgDatabase, pg_store_config, write_config
from tests.fakes import ClockScheduler
from tests.ports import free_port
from tests.waiting import eventually, until_sleeping

TTL = "2s"
LONG_TTL_S = 30.0  # its lease rounds come every 10 s, unless an expiry comes sooner
DEAD_TTL_S = 3.0  # the lease a dead instance left
LATE_S = 0.05  # how late after the expiry the round may come
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
_ORDER = Resource("order", "6f1c2a9e-8d3b-4c55-9a61-2f7e0b1d4c10")


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


@pytest.fixture
async def shared_service(
    tmp_path: Path, box: LocalSandbox, shop: HolderInfo, pg_database: PgDatabase
) -> AsyncIterator[tuple[Service, HolderSharing, FakeClock]]:
    """A daemon's parts on a shared PostgreSQL database, on a fake clock (nothing started)."""
    (tmp_path / "pg.password").write_text(pg_database.password + "\n")
    extra = (
        f'[store]\nurl = "{pg_database.url}"\npassword_file = "pg.password"\nlease_ttl = "{TTL}"\n'
    )
    config = load_config(write_config(tmp_path, box.base_url, shop, extra=extra), {})
    clock = FakeClock()
    async with open_runtime(config, clock, shared=True) as runtime:
        assert runtime.instance is not None
        assert isinstance(runtime.store.fence, Fence)
        service = build_service(runtime, make_scheduler=functools.partial(ClockScheduler, clock))
        assert runtime.pollers == {}  # none before a lease is taken
        sharing = HolderSharing(service, runtime.instance, runtime.store.fence, 2.0)
        yield service, sharing, clock


class TestNextRound:
    @pytest.mark.parametrize(
        ("next_expiry_s", "expected_s"),
        [(None, 10.0), (25.0, 10.0), (4.0, 4.0 + EXPIRY_MARGIN_S), (0.0, EXPIRY_MARGIN_S)],
    )
    def test_the_next_round_follows_the_next_expiry(
        self, next_expiry_s: float | None, expected_s: float
    ) -> None:
        """The loop waits a third of the TTL, or until just after another instance's lease or
        heartbeat expires when that comes sooner."""
        assert next_round_in(30.0, next_expiry_s) == pytest.approx(expected_s)


class TestSharingService:
    async def test_a_round_starts_the_holders_taken(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A round's leases become the runner's holders, scheduled, and their requests pass
        the gate until the renewal is too old to be sure of."""
        service, sharing, clock = shared_service
        done = await sharing.round()
        assert list(done.held) == ["shop"]
        assert list(service.runner.pollers) == ["shop"]
        assert service.scheduler.next_run("shop", Tier.ACTIVE_ORDERS) is not None
        sharing.gate("shop")  # sure of the lease: the request may leave
        clock.advance(2.0)
        with pytest.raises(LeaseLost):
            sharing.gate("shop")

    async def test_a_lost_lease_stops_the_holder_and_counts(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A refusal stops polling the holder at once (unscheduled) and is counted."""
        service, sharing, _ = shared_service
        await sharing.round()
        service.runner.on_lease_lost("shop")
        assert service.runner.pollers == {}
        assert service.scheduler.next_run("shop", Tier.ACTIVE_ORDERS) is None
        assert service.metrics.fencing_refusals._value.get() == 1
        with pytest.raises(LeaseLost):
            sharing.gate("shop")
        assert list((await sharing.round()).held) == ["shop"]  # still its: taken up again
        assert list(service.runner.pollers) == ["shop"]

    async def test_a_reload_removing_a_holder_hands_its_lease_back(
        self, shared_service: tuple[Service, HolderSharing, FakeClock]
    ) -> None:
        """A holder a reload removes stops, and its lease is free for another instance at once;
        one it adds waits for the next round."""
        service, sharing, _ = shared_service
        await sharing.round()
        renamed = replace(service.config.holders[0], name="other")
        await apply_config(service, replace(service.config, holders=(renamed,)))
        assert service.runner.pollers == {}
        rows = await service.runtime.store.instances(2.0)
        assert [row.holders for row in rows] == [()]
        assert list((await sharing.round()).held) == ["other"]

    @pytest.mark.timeout(20)
    async def test_a_dead_instances_lease_is_taken_at_its_expiry(
        self, shared_service: tuple[Service, HolderSharing, FakeClock], pg_database: PgDatabase
    ) -> None:
        """After a round that saw another instance's lease expire soon, the loop's next round
        comes right after that expiry (a few ms), not a third of the time to live later, and
        takes the holder over: a dead instance's holders move within the TTL of its death."""
        service, _, clock = shared_service
        runtime = service.runtime
        assert runtime.instance is not None
        assert isinstance(runtime.store.fence, Fence)
        sharing = HolderSharing(service, runtime.instance, runtime.store.fence, LONG_TTL_S)
        dead = await Store.open(pg_store_config(pg_database), sinks=[])
        try:
            await dead.share_holders(Instance("dead", "host", 1), ["shop"], DEAD_TTL_S, NOW)
            assert (await sharing.round()).held == {}  # the dead one's lease has not expired yet
            assert sharing.next_round_s <= DEAD_TTL_S + EXPIRY_MARGIN_S
            looping = asyncio.create_task(sharing.run())
            await until_sleeping(clock, looping)

            async def expired() -> bool:  # the database's clock is real: wait for it to pass
                rows = await dead._fetch("SELECT expires_at < clock_timestamp() FROM leases")
                return bool(rows[0][0])

            await eventually(expired, what="the dead instance's lease expired", task=looping)
            clock.advance(DEAD_TTL_S + LATE_S)  # far short of the usual round (LONG_TTL_S / 3)
            await eventually(lambda: "shop" in service.runner.pollers, task=looping)
            assert service.metrics.lease_takeovers._value.get() == 1
            looping.cancel()
            await asyncio.gather(looping, return_exceptions=True)
        finally:
            await dead.close()

    async def test_a_gone_instances_deliveries_wake_the_worker(
        self,
        shared_service: tuple[Service, HolderSharing, FakeClock],
        pg_database: PgDatabase,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Rows in flight on an instance gone silent are returned at a round, which says so
        in one warning and wakes the delivery worker."""
        service, sharing, _ = shared_service
        store = service.runtime.store
        await sharing.round()  # the lease of "shop": its commit passes the fence
        store.sinks = (SinkRoute("all", ("*",)),)
        change = Observation(_ORDER, {}, None, changes=[Change("order.approved", {})])
        await store.commit_events("shop", [change], now=NOW)
        await store.register_instance(Instance("gone", "host", 1))
        store.instance = "gone"
        assert len((await store.settle([], NOW, {"all": 5})).claimed) == 1
        store.instance = sharing.instance.id
        with pg_database.server.connect(pg_database.name) as conn:
            conn.execute("UPDATE instances SET heartbeat_at = heartbeat_at - interval '1 hour'"
                         " WHERE id = 'gone'")  # fmt: skip
        assert (await sharing.round()).reclaimed == 1
        assert "deliveries_reclaimed" in capsys.readouterr().out
        assert (await store.settle([], NOW, {"all": 5})).claimed  # pending again
