"""Test doubles that are real servers: a scripted Dr Green stand-in that records what it receives.

``ScriptedApi`` answers each request with the next scripted response (or a success envelope) and
records the request exactly as it arrived, so tests can check signatures with our own signing
code or with Node. It runs on 127.0.0.1 through aiohttp's ``TestServer``; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from drgreen_poller.canonical import rebuild_canonical
from drgreen_poller.clock import Clock
from drgreen_poller.request_signing import load_public_key, verify_api_signature
from drgreen_poller.scheduler import DUE_SLACK_S, Job, NextRuns, follow
from drgreen_poller.sinks import Outcome


@dataclass(frozen=True)
class Scripted:
    """One response to serve: status, body bytes and headers."""

    status: int = 200
    body: bytes = b'{"success":true,"statusCode":200,"message":"Success","data":{}}'
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server closes): for client timeouts

    @classmethod
    def data(cls, data: Any, status: int = 200) -> Scripted:
        """A success envelope around ``data``."""
        envelope = {"success": True, "statusCode": status, "message": "Success", "data": data}
        return cls(status, json.dumps(envelope).encode())


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    raw_query: str
    body: bytes
    headers: dict[str, str]

    def verifies(self, path_params: dict[str, str] | None = None) -> bool:
        """Whether the signature verifies over the canonical string the real guard would build."""
        body: Any = json.loads(self.body) if self.body else {}
        canonical = rebuild_canonical(
            self.method, raw_query=self.raw_query, path_params=path_params or {}, json_body=body
        )
        key = load_public_key(self.headers["x-auth-apikey"])
        return verify_api_signature(key, canonical, self.headers["x-auth-signature"])


class ScriptedApi:
    """An aiohttp app that serves scripted responses and records every request."""

    def __init__(self) -> None:
        self.script: deque[Scripted] = deque()
        self.received: list[Received] = []
        self._never = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def then(self, *responses: Scripted) -> ScriptedApi:
        """Queue responses, served in order; once they run out, a success envelope."""
        self.script.extend(responses)
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(
                method=request.method,
                path=request.path,
                raw_query=request.rel_url.raw_query_string,
                body=await request.read(),
                headers={k.lower(): v for k, v in request.headers.items()},
            )
        )
        response = self.script.popleft() if self.script else Scripted()
        if response.hang:
            await self._never.wait()
        return web.Response(status=response.status, body=response.body, headers=response.headers)


async def start(app: web.Application) -> TestServer:
    """Serve ``app`` on 127.0.0.1 on a free port."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@dataclass(frozen=True)
class Delivery:
    """One webhook request as the receiver got it."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class WebhookReceiver:
    """A store's webhook endpoint: records requests; can fail, answer slowly, or ask to wait.

    ``fail_next`` requests answer ``fail_status`` (with ``retry_after`` if set); ``hang_next``
    requests never answer (until the server closes), to exercise timeouts.
    """

    def __init__(self) -> None:
        self.received: list[Delivery] = []
        self.answers: list[int | None] = []
        self.fail_next = 0
        self.fail_status = 503
        self.retry_after: str | None = None
        self.hang_next = 0
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self._handle)
        self._never = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Delivery({k.lower(): v for k, v in request.headers.items()}, body))
        self.answers.append(None)
        index = len(self.answers) - 1
        if self.hang_next:
            self.hang_next -= 1
            await self._never.wait()
        if self.fail_next:
            self.fail_next -= 1
            self.answers[index] = self.fail_status
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.fail_status, text="try later", headers=headers)
        self.answers[index] = 204
        return web.Response(status=204)

    def accepted(self) -> list[Delivery]:
        """Requests answered 2xx, in arrival order."""
        return [d for d, status in zip(self.received, self.answers, strict=True) if status == 204]


class ClockScheduler:
    """The daemon's scheduler on an injected clock (a ``FakeClock``): fires ``job(holder, tier)``
    when the clock reaches each time, and follows the runner's ``plans`` as ``TierScheduler``
    does. Every decision stays the runner's; only the firing runs on the test's time.
    """

    def __init__(self, clock: Clock, job: Job, plans: asyncio.Queue[NextRuns]) -> None:
        self.clock = clock
        self._job = job
        self._plans = plans
        self._due: dict[tuple[str, str], float] = {}
        self._changed = asyncio.Event()
        self._paused = False
        self._tasks: list[asyncio.Task[None]] = []
        self._fired: set[asyncio.Future[object]] = set()

    def start(self, due: Mapping[tuple[str, str], float]) -> None:
        self.schedule_all(dict(due))
        self._tasks = [
            asyncio.create_task(self._fire_when_due()),
            asyncio.create_task(follow(self._plans, self)),
        ]

    def schedule(self, holder: str, tier: str, when: float) -> None:
        self._due[(holder, tier)] = when
        self._changed.set()

    def schedule_all(self, runs: NextRuns) -> None:
        for (holder, tier), when in runs.items():
            self.schedule(holder, tier, when)

    def unschedule(self, holder: str, tier: str) -> None:
        self._due.pop((holder, tier), None)
        self._changed.set()

    def next_run(self, holder: str, tier: str) -> float | None:
        return self._due.get((holder, tier))

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def pause(self) -> None:
        self._paused = True

    def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _fire_when_due(self) -> None:
        while True:
            self._changed.clear()
            now = self.clock.now().timestamp()
            for key, when in sorted(self._due.items(), key=lambda item: item[1]):
                if when <= now + DUE_SLACK_S and not self._paused:
                    del self._due[key]
                    fired: asyncio.Future[object] = asyncio.ensure_future(self._job(*key))
                    self._fired.add(fired)
                    fired.add_done_callback(self._fired.discard)
            upcoming = min(self._due.values(), default=None)
            waiters: list[asyncio.Task[object]] = [asyncio.create_task(self._changed.wait())]
            if upcoming is not None and not self._paused:
                # Half the slack early: FakeClock.now() keeps microseconds, its sleepers floats.
                delay = max(0.0, upcoming - now - DUE_SLACK_S / 2)
                waiters.append(asyncio.create_task(self.clock.sleep(delay)))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


class GatedSink:
    """A sink whose every delivery waits until the test lets one through (``release``); with
    ``gated`` false, every delivery goes through at once. Sinks given one ``journal`` list
    record there, in order, which of them began an attempt."""

    def __init__(self, name: str, *, gated: bool = True, journal: list[str] | None = None) -> None:
        self.name = name
        self.gated = gated
        self.journal = journal if journal is not None else []  # sink names, as attempts begin
        self.waiting = 0
        self.delivered = 0
        self.started: list[str] = []  # event ids, in the order their attempts began
        self._gate = asyncio.Semaphore(0)

    def release(self) -> None:
        self._gate.release()

    async def deliver(self, event_id: str, event_type: str, body: bytes, now: datetime) -> Outcome:
        self.started.append(event_id)
        self.journal.append(self.name)
        if self.gated:
            self.waiting += 1
            try:
                await self._gate.acquire()
            finally:
                self.waiting -= 1
        self.delivered += 1
        return Outcome(True, 204)

    async def sync(self) -> None:
        return None

    async def close(self) -> None:
        return None
