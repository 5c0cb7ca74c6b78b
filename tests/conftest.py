"""Shared fixtures: real loopback servers, an aiohttp session, and API client factories."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import Clock, FakeClock, SystemClock
from drgreen_poller.config import Secret, StoreConfig
from drgreen_poller.poller import HolderPoller, PollSettings
from drgreen_poller.ratelimit import TokenBucket
from drgreen_poller.request_signing import ApiCredentials, generate_credentials
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.sandbox.harness import SignedCaller
from drgreen_poller.store import SinkRoute, Store
from drgreen_poller.store_client import StoreClient
from tests.contract_check import CHECKED, SHOWN, contract_breaks, hand_made
from tests.delivery_bench import Bench, open_bench
from tests.fakes import ScriptedApi, WebhookReceiver, start
from tests.pg import PASSWORD, PgServer, find_bin

ClientFactory = Callable[..., StoreClient]


def require_node(what: str) -> str:
    """Node's path. Without node, CI (``CI=true``) fails the test, for ``.ci/run`` installs it;
    elsewhere the test is skipped, saying ``what`` goes unchecked."""
    node = shutil.which("node")
    if node is not None:
        return node
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"node is not on PATH, so {what} goes unchecked: .ci/run installs it")
    pytest.skip(f"node is not on PATH: {what} goes unchecked here (CI runs it)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture(autouse=True)
def _events_match_the_contract(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test with a ``tmp_path``: the events the code wrote there match the schemas
    (``tests/contract_check.py``); a mismatch fails the test, naming type and field."""
    checked = "tmp_path" in request.fixturenames and not hand_made(request.node.path)
    root = request.getfixturevalue("tmp_path") if checked else None
    yield
    if root is None:
        return
    _count, found = contract_breaks(root)
    if found:
        more = f"\n... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        pytest.fail("events break the contract (schemas/):\n" + "\n".join(found[:SHOWN]) + more)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many events the contract check saw, so a run shows it was not idle."""
    if CHECKED:
        terminalreporter.write_line(
            f"event contract: {CHECKED.total()} events of {len(CHECKED)} types checked "
            "against schemas/"
        )


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


# The sandbox tests' world: ``state`` on ``clock``, served on loopback as ``box``, with one
# ``holder``. A module needing real time overrides ``clock`` (a ``SystemClock``); one needing
# another world overrides ``state``.


@pytest.fixture
def clock() -> Clock:
    """The sandbox's clock: a fake one, moved on by the test."""
    return FakeClock()


@pytest.fixture
def state(clock: Clock) -> SandboxState:
    """An empty sandbox world on ``clock``."""
    return SandboxState(clock)


@pytest.fixture
async def box(state: SandboxState) -> AsyncIterator[LocalSandbox]:
    """The world served on loopback."""
    async with LocalSandbox(state) as running:
        yield running


@pytest.fixture
def holder(state: SandboxState) -> HolderInfo:
    """A holder with a key pair and a primary NFT."""
    return state.create_holder("h1")


@pytest.fixture
def caller(box: LocalSandbox, holder: HolderInfo) -> SignedCaller:
    """The holder's signed client."""
    return box.caller(holder)


async def data_of(caller: SignedCaller, path: str, *pairs: tuple[str, str]) -> Any:
    """The envelope's ``data`` of a signed GET that must succeed."""
    answer = await caller.get(path, *pairs)
    assert answer.status == 200, answer.body
    return answer.json()["data"]


async def error_of(caller: SignedCaller, path: str, *pairs: tuple[str, str]) -> tuple[int, str]:
    """Status and message of a signed GET that must fail."""
    answer = await caller.get(path, *pairs)
    return answer.status, answer.json()["message"]


async def control_json(
    box: LocalSandbox, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    """The JSON of a control-API call that must answer ``status``."""
    answer = await box.control(method, path, body)
    assert answer.status == status, answer.body
    return answer.json()


@pytest.fixture
def shop(state: SandboxState) -> HolderInfo:
    """The store the CLI and daemon tests configure: holder ``shop``, with one order."""
    holder = state.create_holder("shop")
    state.orders.create("shop")
    return holder


@pytest.fixture(scope="session")
def credentials() -> ApiCredentials:
    """One key pair for the session (key generation is the slow part of signing tests)."""
    return generate_credentials()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedApi, str]]:
    """A scripted Dr Green stand-in and its base URL."""
    api = ScriptedApi()
    server = await start(api.app)
    try:
        yield api, str(server.make_url("/api/v1"))
    finally:
        await server.close()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A verifying webhook receiver on loopback and its URL."""
    hook = WebhookReceiver()
    server = await start(hook.app)
    try:
        yield hook, str(server.make_url("/drgreen/events"))
    finally:
        await server.close()


@pytest.fixture
def make_client(
    session: aiohttp.ClientSession, credentials: ApiCredentials
) -> Callable[..., ApiClient]:
    """Build an ``ApiClient`` for a base URL; generous budget unless the test sets one."""

    def build(
        base_url: str,
        *,
        creds: ApiCredentials | None = None,
        clock: Clock | None = None,
        timeout_s: float = 5.0,
        rate: float = 1000.0,
        burst: int = 1000,
        holder: str = "test",
    ) -> StoreClient:
        settings = ApiSettings(
            base_url=base_url, timeout_s=timeout_s, requests_per_second=rate, burst=burst
        )
        return StoreClient(
            session, settings, creds or credentials, clock or SystemClock(), holder=holder
        )

    return build


def write_config(
    directory: Path,
    base_url: str,
    holder: HolderInfo,
    *,
    first_sync: str = "seed",
    interval: str = "0.2s",
    http_listen: str = "",
    extra: str = "",
) -> Path:
    """A config file for the daemon against a sandbox holder, with tiny intervals."""
    (directory / "shop.api_key").write_text(holder.credentials.api_key)
    (directory / "shop.secret_key").write_text(holder.credentials.secret_key)
    path = directory / "config.toml"
    path.write_text(
        f"""
[daemon]
state_path = "state.db"
http_listen = "{http_listen}"
first_sync = "{first_sync}"

[api]
base_url = "{base_url}"
requests_per_second = 200
burst = 20

[[holders]]
name = "{holder.name}"
api_key_file = "shop.api_key"
secret_key_file = "shop.secret_key"
strain_countries = ["GBR"]

[schedule]
active_orders = "{interval}"
stale_orders = "{interval}"
pending_kyc = "{interval}"
commissions = "{interval}"
strains = "{interval}"
jitter = 0
{extra}
"""
    )
    return path


# The poller tests' world: tier runs of holder ``shop`` against a sandbox, over a real SQLite file.


@dataclass
class World:
    """A sandbox, a holder in it, and a poller for that holder over a real SQLite file."""

    box: LocalSandbox
    holder: HolderInfo
    clock: FakeClock
    store: Store
    poller: HolderPoller
    api: StoreClient

    @property
    def state(self) -> SandboxState:
        return self.box.state

    async def poll(self, tier: str) -> list[str]:
        """Run one tier; the types of the events it committed."""
        result = await self.poller.poll_tier(tier, next_due_at=0)
        return [e["type"] for e in result.events]

    async def types(self, pattern: str = "*") -> list[str]:
        return [e["type"] for e in await self.store.events(patterns=[pattern], limit=0)]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build ``World``s; everything is closed at the end of the test."""
    closers: list[Any] = []

    async def build(
        first_sync: str = "seed",
        countries: tuple[str, ...] = ("GBR",),
        terminal: frozenset[str] = frozenset({"DELIVERED", "CANCELLED"}),
    ) -> World:
        clock = FakeClock()
        box = LocalSandbox(SandboxState(clock))
        await box.__aenter__()
        closers.append(box)
        holder = box.state.create_holder("shop")
        store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("all", ("*",))])
        closers.append(store)
        session = aiohttp.ClientSession()
        closers.append(session)
        settings = ApiSettings(box.base_url, timeout_s=5, requests_per_second=1.0, burst=3)
        # These tests count requests; a bottomless bucket keeps them from waiting for tokens.
        bucket = TokenBucket(rate=1.0, burst=10**9, clock=clock)
        api = StoreClient(
            session, settings, holder.credentials, clock, bucket=bucket, holder="shop"
        )
        poll_settings = PollSettings(first_sync=first_sync, order_terminal_statuses=terminal)
        poller = HolderPoller("shop", countries, api, store, clock, poll_settings)
        return World(box, holder, clock, store, poller, api)

    yield build
    for closer in reversed(closers):
        if isinstance(closer, LocalSandbox):
            await closer.__aexit__(None, None, None)
        else:
            await closer.close()


# --- PostgreSQL: one server per session (tests/pg.py), one database per test -----------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | None]:
    """The session's PostgreSQL server, started on first use and stopped at the end (also when
    tests failed); None when the server programs are not installed."""
    bin_dir = find_bin()
    if bin_dir is None:
        yield None
        return
    server = PgServer.start(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class PgDatabase:
    """A test's own PostgreSQL database: its URL (no password in it) and the password."""

    server: PgServer
    name: str
    url: str
    password: str = PASSWORD


@pytest.fixture
def pg_database(pg_server: PgServer | None) -> Iterator[PgDatabase]:
    """A new, empty database for this test alone, dropped afterwards. Without PostgreSQL the
    test is skipped, saying so; in CI (``CI=true``, where ``.ci/run`` installs it) it fails."""
    if pg_server is None:
        where = "/usr/lib/postgresql/*/bin/initdb"
        if in_ci():
            pytest.fail(f"PostgreSQL is not installed ({where} missing): .ci/run installs it")
        pytest.skip(f"PostgreSQL is not installed ({where} missing): its tests run in CI")
    name = pg_server.new_database()
    try:
        yield PgDatabase(pg_server, name, pg_server.url(name))
    finally:
        pg_server.drop_database(name)


def pg_store_config(database: PgDatabase) -> StoreConfig:
    """The ``[store]`` a configuration naming ``database`` would load (password given apart)."""
    return StoreConfig(database.url, Secret(database.password, "file pg.password"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_state(request: pytest.FixtureRequest, tmp_path: Path) -> Path | StoreConfig:
    """Where a store test's state is, once per backend: a SQLite file in the test's directory,
    and a PostgreSQL database of its own (``pg_database``): one contract, both engines."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return pg_store_config(request.getfixturevalue("pg_database"))


# The delivery tests' bench (tests/delivery_bench.py): one webhook sink, a fake clock.


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    """A delivery worker over a real store in front of a verifying receiver; closed after."""
    async with open_bench(tmp_path) as opened:
        yield opened
