"""examples/node-receiver and examples/nextjs, run on Node and fed by the daemon's webhook sink.

npm installs each example's packages from the registry once per test session, into a temporary
directory. The Next.js route handler is type-checked with Next.js's default compiler settings
and, compiled, served on node:http as Next.js calls it (a web Request in, its Response out).
Without node or npm these tests are skipped; in CI (``CI=true``, whose .ci/run installs them)
they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drgreen_poller.changes import Change
from drgreen_poller.clock import SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import DeliveryWorker
from drgreen_poller.events import Resource, encode
from drgreen_poller.sinks import WebhookSink
from drgreen_poller.store import Observation, SinkRoute, Store
from drgreen_poller.webhook_signing import generate_webhook_secret
from tests.conftest import require_node
from tests.scenarios import EVERY_TYPE, HOLDER_TYPES, every_event

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NODE_RECEIVER = EXAMPLES / "node-receiver"
NEXTJS = EXAMPLES / "nextjs"
HARNESS = Path(__file__).with_name("next_route_harness.mjs")
SECRET = generate_webhook_secret()
CLOCK = SystemClock()
# What the Next.js example is checked and compiled with, pinned so that the check moves only
# when this line does.
NEXTJS_PACKAGES = {"typescript": "5.9.3", "@types/node": "20.19.25", "standardwebhooks": "1.1.1"}
# Next.js's default tsconfig.json (create-next-app), with the emit left to the test.
NEXTJS_COMPILER = {
    "target": "ES2017",
    "lib": ["dom", "dom.iterable", "esnext"],
    "strict": True,
    "noEmit": True,
    "esModuleInterop": True,
    "module": "esnext",
    "moduleResolution": "bundler",
    "resolveJsonModule": True,
    "isolatedModules": True,
    "skipLibCheck": False,
    "types": ["node"],
}
# What goes unchecked without node or npm.
WHAT = "each TypeScript receiver example"
NPM_TIMEOUT_S = 300
TSC_TIMEOUT_S = 120


def _npm() -> str:
    """npm's path; skipped (or failed in CI) without node or npm."""
    require_node(WHAT)
    npm = shutil.which("npm")
    if npm is not None:
        return npm
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"npm is not on PATH, so {WHAT} goes unchecked: .ci/run installs it")
    pytest.skip(f"npm is not on PATH: {WHAT} goes unchecked here (CI runs it)")


def _run(command: list[str], where: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own fixed commands
        command, cwd=where, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _npm_install(where: Path) -> None:
    done = _run([_npm(), "install", "--no-audit", "--no-fund"], where, NPM_TIMEOUT_S)
    if done.returncode != 0:
        pytest.fail(f"npm install in {where} failed:\n{done.stdout}{done.stderr}")


def _tsc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([str(project / "node_modules" / ".bin" / "tsc"), *args], project, TSC_TIMEOUT_S)


@pytest.fixture(scope="session")
def node_receiver_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/node-receiver with its packages installed (its package-lock.json)."""
    where = tmp_path_factory.mktemp("node-receiver")
    for name in ("package.json", "package-lock.json", "server.mjs"):
        shutil.copy(NODE_RECEIVER / name, where / name)
    _npm_install(where)
    return where


@pytest.fixture(scope="session")
def nextjs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding the Next.js example as an app holds it, its packages installed, and the
    route compiled to CommonJS in build/ to be served by the harness."""
    where = tmp_path_factory.mktemp("nextjs")
    shutil.copytree(NEXTJS / "app", where / "app")
    shutil.copytree(NEXTJS / "lib", where / "lib")
    manifest = {"private": True, "devDependencies": NEXTJS_PACKAGES}
    (where / "package.json").write_text(json.dumps(manifest))
    config = {"compilerOptions": NEXTJS_COMPILER, "include": ["app/**/*.ts", "lib/**/*.ts"]}
    (where / "tsconfig.json").write_text(json.dumps(config))
    _npm_install(where)
    route = "app/api/drgreen/route.ts"
    emit = ["--outDir", "build", "--module", "commonjs", "--moduleResolution", "node10"]
    done = _tsc(where, *emit, "--target", "es2022", "--lib", "es2022,dom", "--strict", route)
    assert done.returncode == 0, done.stdout + done.stderr
    return where


@dataclass
class NodeApp:
    """A receiver running in node, its URL, and (once stopped) the JSON lines it printed."""

    process: asyncio.subprocess.Process
    url: str

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM; the receiver finishes the work of what it answered, then exits 0."""
        self.process.terminate()
        out, err = await asyncio.wait_for(self.process.communicate(), 10)
        assert self.process.returncode == 0, err.decode()
        return [json.loads(line) for line in out.decode().splitlines()]


StartApp = Callable[[], Coroutine[Any, Any, NodeApp]]


@pytest.fixture(params=["node-receiver", "nextjs"])
async def start_app(request: pytest.FixtureRequest) -> AsyncIterator[StartApp]:
    """Factory: starts the example named by the parameter with the sink's secret, on a free
    loopback port; stops whatever is still running at the end."""
    if request.param == "node-receiver":
        where: Path = request.getfixturevalue("node_receiver_dir")
        command = [str(where / "server.mjs"), "--port", "0"]
    else:
        where = request.getfixturevalue("nextjs_dir")
        command = [str(HARNESS), str(where / "build" / "app" / "api" / "drgreen" / "route.js")]
    node = require_node(WHAT)
    started: list[asyncio.subprocess.Process] = []

    async def start() -> NodeApp:
        process = await asyncio.create_subprocess_exec(
            node, *command, cwd=where, stdout=PIPE, stderr=PIPE,
            env={**os.environ, "DRGREEN_WEBHOOK_SECRET": SECRET},
        )  # fmt: skip
        started.append(process)
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 10)
        assert first, "the receiver exited before listening"
        return NodeApp(process, json.loads(first)["url"])

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _sink(url: str, secret: str = SECRET) -> WebhookSink:
    config = WebhookSinkConfig(name="store", url=url, secrets=(Secret(secret, "test"),))
    return WebhookSink(config, DeliveryConfig())


def _order(order_id: str, *changes: Change) -> Observation:
    obj = {
        "id": order_id,
        "orderStatus": "PENDING",
        "adminApproval": "VERIFIED",
        "paymentStatus": "PAID",
        "totalAmount": 56,
        "client": {"id": "c-1", "firstName": "Zoë ✓"},  # raw UTF-8: verified as sent
    }
    return Observation(Resource("order", order_id), {}, None, obj=obj, changes=changes)


def _observations() -> list[Observation]:
    client = {"id": "c-1", "isKYCVerified": True, "adminApproval": "VERIFIED", "isActive": True}
    return [
        _order(
            "o-1",
            Change(
                "order.approved",
                {"adminApproval": "PENDING"},
                current={"adminApproval": "VERIFIED"},
            ),
            Change("order.paid", {"paymentStatus": "PENDING"}, current={"paymentStatus": "PAID"}),
        ),
        Observation(
            Resource("client", "c-1"),
            {},
            None,
            obj=client,
            changes=[Change("client.kyc.completed", {})],
        ),
        _order("o-2", Change("order.created", {})),
    ]


def _kinds(lines: list[dict[str, Any]], kind: str) -> list[tuple[str, str]]:
    return [(line["webhook_id"], line["type"]) for line in lines if line["event"] == kind]


async def _deliver_all(worker: DeliveryWorker) -> int:
    """Attempts until none is due: an order's second event is due once its first is delivered."""
    made = 0
    while attempts := await worker.run_once():
        made += attempts
    return made


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


class TestReceivers:
    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    async def test_verified_events_are_acted_on_once(
        self, start_app: StartApp, tmp_path: Path
    ) -> None:
        """Events the delivery worker sends are verified and acted on by type; replayed under
        the same webhook-ids they are acknowledged with 2xx and not acted on again."""
        app = await start_app()
        store = await Store.open(tmp_path / "state.db", sinks=[SinkRoute("store", ("*",))])
        sink = _sink(app.url)
        worker = DeliveryWorker(store, {"store": sink}, DeliveryConfig(), CLOCK, random.Random(1))
        try:
            committed = await store.commit_events("main", _observations(), now=CLOCK.now())
            assert await _deliver_all(worker) == 4
            assert await store.replay("store", ["*"], CLOCK.now() - timedelta(hours=1), CLOCK.now())
            assert await _deliver_all(worker) == 4
            rows = await store.deliveries(limit=100)
            statuses = [
                attempt["status"] for row in rows for attempt in await store.attempts(row.id)
            ]
        finally:
            await sink.close()
            await store.close()
        lines = await app.stop()
        sent = [(event["id"], event["type"]) for event in committed.events]
        assert [row.state for row in rows] == ["delivered"] * 8
        assert statuses == [204] * 8
        # Different resources are delivered concurrently: their order of arrival varies.
        assert sorted(_kinds(lines, "accepted")) == sorted(sent)
        assert sorted(_kinds(lines, "duplicate")) == sorted(sent)
        assert sorted(_kinds(lines, "processed")) == sorted(sent)
        actions = {line["type"]: line["action"] for line in lines if line["event"] == "processed"}
        assert actions["order.created"] == "ignored"
        assert all(actions[kind] != "ignored" for kind in ("order.approved", "order.paid"))
        assert actions["client.kyc.completed"] != "ignored"

    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    async def test_what_fails_verification_gets_400(self, start_app: StartApp) -> None:
        """A changed body, a re-serialised body, another secret, a timestamp more than five
        minutes old or no signature get 400 and no action; four minutes old is accepted."""
        app = await start_app()
        event: dict[str, Any] = {"id": "evt_1", "type": "order.paid", "holder": "main"}
        event |= {"resource": {"type": "order", "id": "o-1"}, "sequence": 5}
        event |= {"data": {"object": {"id": "o-1", "note": "Zoë ✓"}, "previous": {}}}
        body = encode(event).encode()
        sink, stranger = _sink(app.url), _sink(app.url, generate_webhook_secret())
        now = CLOCK.now()
        signed = sink.headers("evt_1", "order.paid", body, now)
        refused = [
            (body.replace(b'"sequence":5', b'"sequence":6'), signed),
            (json.dumps(json.loads(body)).encode(), signed),
            (body, stranger.headers("evt_1", "order.paid", body, now)),
            (body, sink.headers("evt_1", "order.paid", body, now - timedelta(minutes=6))),
            (body, {k: v for k, v in signed.items() if k != "webhook-signature"}),
        ]
        await sink.close()
        await stranger.close()
        statuses = [await _post(app.url, sent, headers) for sent, headers in refused]
        late = sink.headers("evt_1", "order.paid", body, now - timedelta(minutes=4))
        statuses.append(await _post(app.url, body, late))
        lines = await app.stop()
        assert statuses == [400, 400, 400, 400, 400, 204]
        assert [line["event"] for line in lines] == ["rejected"] * 5 + ["accepted", "processed"]

    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    async def test_an_older_event_arriving_late_is_dropped(self, start_app: StartApp) -> None:
        """An event whose sequence is not above its resource's last one is acknowledged, not
        acted on; the same sequence for another strain country is a different resource."""
        app = await start_app()
        sink = _sink(app.url)

        async def deliver(event_id: str, sequence: int, country: str) -> int:
            resource = {"type": "strain", "id": "s-1", "country": country}
            event: dict[str, Any] = {"id": event_id, "type": "strain.updated", "holder": "main"}
            event |= {"resource": resource, "sequence": sequence, "data": {}}
            body = encode(event).encode()
            outcome = await sink.deliver(event_id, "strain.updated", body, CLOCK.now())
            assert outcome.status is not None
            return outcome.status

        statuses = [
            await deliver("evt_new", 7, "GBR"),
            await deliver("evt_old", 6, "GBR"),
            await deliver("evt_zaf", 6, "ZAF"),
        ]
        await sink.close()
        lines = await app.stop()
        assert statuses == [204, 204, 204]
        assert _kinds(lines, "stale") == [("evt_old", "strain.updated")]
        assert [w for w, _ in _kinds(lines, "processed")] == ["evt_new", "evt_zaf"]


class TestNextjsTypes:
    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    def test_route_handler_type_checks(self, nextjs_dir: Path) -> None:
        """The route handler and the event types pass tsc --strict with Next.js's defaults."""
        done = _tsc(nextjs_dir, "-p", "tsconfig.json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout + done.stderr == ""

    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    async def test_the_daemons_events_have_these_types(
        self, nextjs_dir: Path, make_world: Callable[..., Any]
    ) -> None:
        """Every event type the poller emits, as stored and sent, is a DrGreenEvent: no field
        missing, none unknown, no value of another type."""
        events = await every_event(await make_world(first_sync="seed"))
        assert {e["type"] for e in events} == EVERY_TYPE | set(HOLDER_TYPES)
        sample = nextjs_dir / "lib" / "sample.ts"
        sample.write_text(
            'import type { DrGreenEvent } from "./drgreen-events";\n'
            f"export const events: DrGreenEvent[] = {json.dumps(events, ensure_ascii=False)};\n"
        )
        try:
            done = await asyncio.to_thread(_tsc, nextjs_dir, "-p", "tsconfig.json")
        finally:
            sample.unlink()
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout + done.stderr == ""

    @pytest.mark.timeout(NPM_TIMEOUT_S + TSC_TIMEOUT_S)
    def test_event_types_narrow_by_type(self, nextjs_dir: Path) -> None:
        """Within a case of event.type, data.previous has that type's field and no other's."""
        probe = nextjs_dir / "lib" / "probe.ts"
        probe.write_text(
            'import type { DrGreenEvent } from "./drgreen-events";\n'
            "export function moved(event: DrGreenEvent): string {\n"
            "  switch (event.type) {\n"
            '    case "order.paid":\n'
            "      return event.data.previous.paymentStatus;\n"
            '    case "order.approved":\n'
            "      return event.data.previous.paymentStatus;\n"
            "    default:\n"
            '      return "";\n'
            "  }\n"
            "}\n"
        )
        try:
            done = _tsc(nextjs_dir, "-p", "tsconfig.json")
        finally:
            probe.unlink()
        errors = [line for line in done.stdout.splitlines() if "error TS" in line]
        assert len(errors) == 1
        assert "probe.ts(7," in errors[0]
        assert "Property 'paymentStatus' does not exist" in errors[0]
