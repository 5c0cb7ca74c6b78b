"""Monitoring cost: one ``/metrics`` scrape, one ``/healthz`` and one ``status`` on a big state.

A state of D delivered deliveries (retained, as within ``[delivery] retention``) and O owed ones
(pending, with 2 % delivering and 2 % failed) over two sinks is written with SQL into a database
the real ``Store`` created (so at the schema this checkout migrates to). Against it: the store's
``undelivered()`` (the backlog read every scrape makes), ``GET /metrics`` and ``GET /healthz``
from the daemon's own ``build_app`` served on loopback and fetched over HTTP, and the report of
``drgreen-poller status`` (``status_report``, in process). Medians of N calls, and the slowest.
While one of these reads runs it holds the state connection the poller and the delivery loop
share, so its milliseconds are milliseconds they wait. Beside them, the price of migration 6's
index on writes: a delivery's life in plain SQL (written pending, claimed, delivered; batches of
200, one transaction each, the daemon's pragmas) on copies of the same state with the index and
with it dropped, alternating.

    .venv/bin/python bench/monitoring_cost.py [--profile quick|full] [--no-append]
        quick: 200,000 delivered with 1,000 and with 100,000 owed, 20 calls each (status: 3);
        full: 1,000,000 delivered with 1,000 and with 100,000 owed, 50 calls each (status: 5)
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _common import CLOCK, CpuShare, main_with_profile, median, report, table
from aiohttp import web

from drgreen_poller import logs
from drgreen_poller.admin import status_report
from drgreen_poller.config import Config, load_config
from drgreen_poller.monitoring import HealthInputs, Metrics, build_app
from drgreen_poller.sandbox import SandboxState
from drgreen_poller.settings import timings
from drgreen_poller.store import MIGRATIONS, SinkRoute, Store

SECTION = "Monitoring cost"
INTRO = (
    "`bench/monitoring_cost.py`: what the reads behind monitoring cost on a big state: D "
    "delivered deliveries retained and O owed (pending, 2 % delivering, 2 % failed) over two "
    "sinks, written with SQL into a database the real store created. Timed: `undelivered()` "
    "(the backlog read of every scrape), `GET /metrics` and `GET /healthz` over HTTP from the "
    "daemon's own `build_app` on loopback, and `status_report` (the `status` command's reads, in "
    "process). Medians and the slowest call, in milliseconds. Each read holds the state "
    "connection the poller and the delivery loop share while it runs."
)
# (delivered, owed) states, calls per read, calls of status, deliveries per write run.
PROFILES = {
    "quick": ([(200_000, 1_000), (200_000, 100_000)], 20, 3, 10_000),
    "full": ([(1_000_000, 1_000), (1_000_000, 100_000)], 50, 5, 50_000),
}
WRITE_RUNS = 3  # of each, alternating, after one of each unmeasured (cold caches)
BATCH = 200
OWED_INDEX = "deliveries_owed"  # migration 6
SINKS = ("store", "audit")
DAY_S = 86_400.0
CONFIG = """
[daemon]
state_path = "state.db"
http_listen = ""

[api]
base_url = "http://127.0.0.1:9/api/v1"

[[holders]]
name = "shop"
api_key_file = "shop.api_key"
secret_key_file = "shop.secret_key"
strain_countries = []

[[sinks]]
name = "store"
kind = "file"
path = "store.jsonl"
events = ["*"]

[[sinks]]
name = "audit"
kind = "file"
path = "audit.jsonl"
events = ["*"]
"""

# One event per two deliveries (one per sink); the oldest rows first, the owed ones last. Times
# are ISO text as the store writes them: delivered spread over 30 days, owed over the last hour.
_FILL_SQL = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :events)
INSERT INTO events (id, type, holder, resource_key, sequence, observed_at, body)
SELECT 'evt_bench_' || i, 'order.created', 'shop', 'order:' || (i / 6), i % 6,
    strftime('%Y-%m-%dT%H:%M:%fZ', :start + i * :step, 'unixepoch'), '{}'
FROM n;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :rows)
INSERT INTO deliveries (event_id, sink, state, resource_key, sequence, attempts,
    next_attempt_at, created_at, updated_at)
SELECT 'evt_bench_' || (i / 2), CASE i % 2 WHEN 0 THEN 'store' ELSE 'audit' END,
    CASE WHEN i < :delivered THEN 'delivered'
         WHEN i % 50 = 7 THEN 'delivering' WHEN i % 50 = 9 THEN 'failed' ELSE 'pending' END,
    'shop/order:' || (i / 12), (i / 2) % 6, 1, :start + i * :step / 2,
    strftime('%Y-%m-%dT%H:%M:%fZ', :start + (i / 2) * :step, 'unixepoch'),
    strftime('%Y-%m-%dT%H:%M:%fZ', :start + (i / 2) * :step, 'unixepoch')
FROM n;
"""


def fill(path: Path, delivered: int, owed: int, now_s: float) -> None:
    """Write the deliveries (and their events) into the migrated database at ``path``."""
    rows = delivered + owed
    start = now_s - 30 * DAY_S
    step = (30 * DAY_S - 3600) / (rows / 2)  # the last owed row is an hour old
    params: dict[str, float] = {"events": rows // 2, "rows": rows, "delivered": delivered}
    params |= {"start": start, "step": step}
    with closing(sqlite3.connect(path)) as db, db:
        for statement in filter(str.strip, _FILL_SQL.split(";")):
            db.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement})


def lifecycle(path: Path, count: int) -> float:
    """Seconds to write ``count`` deliveries pending, claim them and mark them delivered."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = FULL")  # as the daemon's connection
        began = CLOCK.monotonic()
        for first in range(0, count, BATCH):
            db.execute("BEGIN IMMEDIATE")
            cursor = db.executemany(
                "INSERT INTO deliveries (event_id, sink, state, resource_key, sequence,"
                " next_attempt_at, created_at, updated_at) VALUES (?, 'store', 'pending', ?, 1,"
                " 0, '2026-11-30T00:00:00.000Z', '2026-11-30T00:00:00.000Z')",
                [(f"evt_new_{i}", f"shop/new:{i}") for i in range(first, first + BATCH)],
            )
            db.execute("COMMIT")
            last = int(db.execute("SELECT MAX(id) FROM deliveries").fetchone()[0])
            chosen = (last - cursor.rowcount + 1, last)
            for state in ("delivering", "delivered"):
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "UPDATE deliveries SET state = ? WHERE id BETWEEN ? AND ?", (state, *chosen)
                )
                db.execute("COMMIT")
        return CLOCK.monotonic() - began
    finally:
        db.close()


def write_price(state: Path, count: int) -> list[str]:
    """Microseconds per delivery's life with and without the index, alternating runs."""
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for run in range(WRITE_RUNS + 1):
        for indexed in (False, True):
            copy = state.with_name(f"write-{run}-{indexed}.db")
            shutil.copy(state, copy)
            if not indexed:
                with closing(sqlite3.connect(copy)) as db:
                    db.execute(f"DROP INDEX IF EXISTS {OWED_INDEX}")
            took = lifecycle(copy, count)
            if run:
                seconds[indexed].append(took)
            copy.unlink()
    bare, priced = (median(seconds[k]) * 1e6 / count for k in (False, True))
    return [f"{count:,}", f"{bare:.1f}", f"{priced:.1f}", f"{priced / bare:.2f}"]


@dataclass
class Timed:
    """Milliseconds per call of one read."""

    name: str
    ms: list[float]

    def cells(self) -> list[str]:
        return [self.name, f"{median(self.ms):.1f}", f"{max(self.ms):.1f}", str(len(self.ms))]


async def timed(name: str, calls: int, read: Callable[[], Awaitable[object]]) -> Timed:
    ms = []
    for _ in range(calls):
        began = CLOCK.monotonic()
        await read()
        ms.append((CLOCK.monotonic() - began) * 1000)
    return Timed(name, ms)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def http_reads(store: Store, config: Config, calls: int) -> list[Timed]:
    """``/metrics`` and ``/healthz`` from the daemon's app, over HTTP on loopback."""
    started = CLOCK.now().timestamp()
    judged = HealthInputs(
        [h.name for h in config.holders], timings(config), started, [s.name for s in config.sinks]
    )
    runner, base = await serve(build_app(store, Metrics(), lambda: judged, CLOCK))
    try:
        async with aiohttp.ClientSession() as session:

            async def get(route: str) -> None:
                async with session.get(base + route) as response:
                    await response.read()

            await get("/metrics")  # the first scrape builds the registry's series
            return [
                await timed("GET /metrics", calls, lambda: get("/metrics")),
                await timed("GET /healthz", calls, lambda: get("/healthz")),
            ]
    finally:
        await runner.cleanup()


async def prepare(workdir: Path, delivered: int, owed: int) -> Config:
    """A configuration (one holder, the two sinks) and its state filled with the deliveries."""
    keys = SandboxState(CLOCK).create_holder("shop").credentials  # valid, never used
    (workdir / "shop.api_key").write_text(keys.api_key)
    (workdir / "shop.secret_key").write_text(keys.secret_key)
    (workdir / "config.toml").write_text(CONFIG)
    config = load_config(workdir / "config.toml")
    path = config.daemon.state_path
    await (await Store.open(path, sinks=())).close()  # created and migrated
    fill(path, delivered, owed, CLOCK.now().timestamp())
    return config


async def measure(config: Config, owed: int, calls: int, status_calls: int) -> list[Timed]:
    store = await Store.open(config.daemon.state_path, sinks=[SinkRoute(n, ("*",)) for n in SINKS])
    try:
        found = await store.undelivered()
        if sum(sum(b.counts.values()) for b in found.values()) != owed:
            raise SystemExit(f"the state holds {found}, not {owed:,} owed")
        results = [await timed("undelivered()", calls, store.undelivered)]
        results += await http_reads(store, config, calls)
    finally:
        await store.close()
    results.append(await timed("status report", status_calls, lambda: status_report(config)))
    return results


async def main(profile: str, append: bool) -> None:
    logs.configure("warning", "console", stream=sys.stderr)
    states, calls, status_calls, writes = PROFILES[profile]
    share = CpuShare()
    share.start()
    rows, prices = [], []
    for delivered, owed in states:
        with tempfile.TemporaryDirectory() as tmp:
            config = await prepare(Path(tmp), delivered, owed)
            for timing in await measure(config, owed, calls, status_calls):
                rows.append([f"{delivered:,}", f"{owed:,}", *timing.cells()])
                print("  " + " | ".join(rows[-1]), file=sys.stderr)
            price = write_price(config.daemon.state_path, writes)
            prices.append([f"{delivered:,}", f"{owed:,}", *price])
    headers = ["delivered", "owed", "read", "median ms", "slowest ms", "calls"]
    result = table(headers, rows, "rrlrrr")
    price_headers = [
        "delivered", "owed", "deliveries written", "µs each without the index", "with it",
        "ratio",
    ]  # fmt: skip
    result += "\n\n" + table(price_headers, prices, "rrrrrr")
    notes = [
        f"State schema version {len(MIGRATIONS)} (this checkout's migrations). {share.sentence()}"
    ]
    report(SECTION, INTRO, profile, result, notes, append)


if __name__ == "__main__":
    main_with_profile(__doc__, main)
