"""The delivery floor's sender: the least a signed, durable, logged sender does per event, in steps.

Run as its own process by ``delivery_floor.py`` (``python bench/_floor.py STEP STATE URL SECRET
CONCURRENCY LOG``), set up as the daemon is (the collector frozen after start-up, output buffered).
``concurrency`` long-lived coroutines, as in the raw baseline, take claimed rows and send each;
the real ``Store`` claims and records, one transaction per turn (``synchronous = FULL``) in
SQLite's thread. The steps, each adding to the one before:

    posted    raw's work in this process: every row claimed and signed before the first POST,
              sent as raw sends (a control: what this process and its loop cost against raw)
    signed    each row signed as it is sent, through the real ``WebhookSink`` (its answer
              classified and its excerpt kept), and each attempt's record made, not written
    claimed   rows claimed a window at a time while sending (as the daemon claims)
    logged    and the canonical line per attempt, through the daemon's logging set-up, a turn's
              lines together after it (as the daemon writes them)
    recorded  and every turn records the ended attempts: the attempt log, the rows moved on

None of them has what the daemon adds beyond that: a task per attempt, the fairness between
sinks, retries, the gate of a shared database, metrics, the poller running beside. It measures
nothing itself (the receiver counts) and judges nothing.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from _delivery import raw_session

from drgreen_poller import logs
from drgreen_poller.clock import SystemClock
from drgreen_poller.config import DeliveryConfig, Secret
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.delivery import CLAIM_AHEAD
from drgreen_poller.sinks import EXCERPT_BYTES, WebhookSink
from drgreen_poller.store import AttemptRecord, DeliveryState, DueDelivery, Store

STEPS = ("posted", "signed", "claimed", "logged", "recorded")
IN_MEMORY = ("posted", "signed")  # every row claimed before the first POST
LOGGED = ("logged", "recorded")
SINK = "store"  # as ``_delivery.SINK``
CLOCK = SystemClock()
log = structlog.get_logger("drgreen_poller.delivery")


class Floor:
    """One step's sender: every due row of ``store`` delivered through ``sink``."""

    def __init__(self, step: str, store: Store, sink: WebhookSink, concurrency: int) -> None:
        self.step = step
        self.store = store
        self.sink = sink
        self.concurrency = concurrency
        self.window = CLAIM_AHEAD * concurrency
        self.rows: deque[DueDelivery] = deque()
        self.ended: list[AttemptRecord] = []
        self.lines: list[dict[str, Any]] = []  # the canonical lines of the attempts ended
        self.turn: asyncio.Task[None] | None = None
        self.drained = False  # a turn claimed nothing: nothing is left to claim
        # ``posted``: each row's body and headers, signed beforehand (as raw's), and a session
        # made as raw's is.
        self.signed: dict[int, tuple[bytes, dict[str, str]]] = {}
        self.session: aiohttp.ClientSession | None = None

    async def run(self, url: str) -> None:
        first = 10**9 if self.step in IN_MEMORY else self.window
        rows = (await self.store.settle([], CLOCK.now(), {SINK: first})).claimed
        self.rows.extend(rows)
        self.drained = self.step in IN_MEMORY
        if self.step == "posted":
            now = CLOCK.now()
            for row in rows:
                body = row.body.encode()
                self.signed[row.id] = (
                    body,
                    self.sink.headers(row.event_id, row.event_type, body, now),
                )
            self.session = raw_session(self.concurrency)
        try:
            await asyncio.gather(*(self._slot(url) for _ in range(self.concurrency)))
        finally:
            if self.session is not None:
                await self.session.close()
        while self.ended or self.lines:
            await self._start_turn()

    async def _slot(self, url: str) -> None:
        while self.rows or not self.drained:
            if not self.rows:
                await self._start_turn()
                continue
            row = self.rows.popleft()
            if len(self.rows) < self.window // 2 and not self.drained:
                self._start_turn()  # claim more before the rows run out, as the daemon does
            if self.session is not None:
                await self._post(self.session, url, row)
            else:
                await self._deliver(row)

    async def _post(self, session: aiohttp.ClientSession, url: str, row: DueDelivery) -> None:
        """As raw POSTs (``_delivery.run_raw``, whose loop writes the same lines out)."""
        body, headers = self.signed[row.id]
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
            await answer.content.read(EXCERPT_BYTES)
            if answer.status != 204:
                raise SystemExit(f"the receiver answered {answer.status}")

    async def _deliver(self, row: DueDelivery) -> None:
        started, t0 = CLOCK.now(), CLOCK.monotonic()
        outcome = await self.sink.deliver(row.event_id, row.event_type, row.body.encode(), started)
        duration_ms = round((CLOCK.monotonic() - t0) * 1000, 1)
        state = DeliveryState.DELIVERED if outcome.ok else DeliveryState.FAILED
        self.ended.append(
            AttemptRecord(
                row.id, row.attempts + 1, started, duration_ms, outcome.ok, outcome.status,
                outcome.error_class, outcome.excerpt, state, sink=SINK, event_id=row.event_id,
            )
        )  # fmt: skip
        if self.step in LOGGED:
            self.lines.append(
                {
                    "sink": SINK, "event_id": row.event_id, "delivery_id": row.id,
                    "attempt": row.attempts + 1, "duration_ms": duration_ms,
                    "outcome": "delivered" if outcome.ok else "failed", "status": outcome.status,
                }
            )  # fmt: skip

    def _start_turn(self) -> asyncio.Task[None]:
        if self.turn is None or self.turn.done():
            self.turn = asyncio.create_task(self._settle())
        return self.turn

    async def _settle(self) -> None:
        """One transaction: the ended attempts recorded (step ``recorded`` only), more claimed;
        then the ended attempts' lines (``logged`` and ``recorded``)."""
        ended, self.ended = (self.ended, []) if self.step == "recorded" else ([], [])
        lines, self.lines = self.lines, []
        room = 0 if self.drained else self.window - len(self.rows)
        settled = await self.store.settle(ended, CLOCK.now(), {SINK: room} if room > 0 else {})
        self.rows.extend(settled.claimed)
        if room > 0 and not settled.claimed:
            self.drained = True
        for fields in lines:
            log.info("delivery_attempt_finished", **fields)


async def deliver(step: str, state: Path, url: str, secret: str, concurrency: int) -> None:
    """Every due row of ``state`` delivered to ``url`` by the floor's sender at ``step``."""
    delivery = DeliveryConfig(concurrency=concurrency)
    sink_config = WebhookSinkConfig(SINK, url=url, secrets=(Secret(secret, "bench"),))
    sink = WebhookSink(sink_config, delivery)
    store = await Store.open(state, sinks=())
    try:
        await Floor(step, store, sink, concurrency).run(url)
    finally:
        await sink.close()
        await store.close()


def main(argv: list[str]) -> int:
    step, state, url, secret_file, concurrency, log = argv
    if step not in STEPS:
        print(f"step: one of {', '.join(STEPS)}", file=sys.stderr)
        return 2
    secret = Path(secret_file).read_text().strip()
    with Path(log).open("w") as out:  # buffered, as the daemon's output under systemd
        logs.configure("info", "json", stream=out)
        gc.collect()  # as the daemon does after its start-up (``commands.cmd_run``)
        gc.freeze()
        asyncio.run(deliver(step, Path(state), url, secret, int(concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
