"""Detection latency: an upstream change → its event at a loopback webhook, p50/p99, N orders.

The sandbox (its own process) holds one holder with N active orders; the bench pays orders at
random moments through the control API. First the daemon (its own process, a webhook sink to a
receiver in this process) runs at the ``active_orders`` interval; latency is the time from the
payment to ``order.paid`` reaching the receiver. Then the baseline, the docs' per-order loop
(``GET /dapp/orders/{id}`` for every active order in turn, the real ``ApiClient`` under the same
token bucket), faces payments made the same way; its latency is the time from the payment to
the loop's response showing it. Time is scaled: intervals and the request budget (1 request/s)
are multiplied by the scale; latencies are printed as measured and divided by the scale.

quick (``make bench``, about 70 s): N = 1,000, time × 0.05 (the 60 s interval
runs in 3 s, a pass of the docs' loop in 50 s), 40 payments a side. full: time × 0.1, 100
payments a side. The daemon's payments are spread over 5 of its intervals; the baseline's over
half a pass of its loop, on orders at random places in its order (so how far the loop has to go
is just as random: its latencies spread over a whole pass all the same), and each side ends once
every payment is seen.

    .venv/bin/python bench/detection_latency.py [--profile quick|full] [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _common import CpuShare, append_run, machine, profile_arguments, run_record
from aiohttp import web
from scale import BIN, start_sandbox

from drgreen_poller import logs
from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import SystemClock
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.webhook_signing import generate_webhook_secret

CLOCK = SystemClock()
INTERVAL_S = 60.0  # active_orders at its default
BUDGET_RPS = 1.0  # the politeness budget, per holder
# profile → (N active orders, time scale (0.1: ten times faster), payments per side)
PROFILES = {"quick": (1000, 0.05, 40), "full": (1000, 0.1, 100)}
# Payments to the daemon's side are spread over this many active_orders intervals.
DAEMON_SPAN_INTERVALS = 5
INTRO = (
    "`bench/detection_latency.py`: one holder with N = 1,000 active orders, paid at random "
    "moments through the sandbox's control API; latency from the payment to `order.paid` at a "
    "loopback webhook, against the docs' per-order loop (GET /dapp/orders/{id} for each active "
    "order in turn, the real ApiClient under the same token bucket) from the payment to the "
    "loop's response showing it."
)


@dataclass(slots=True)
class Side:
    """Payment times and detection times of one side, by order id (monotonic seconds)."""

    paid: dict[str, float]
    seen: dict[str, float]

    def latencies(self) -> list[float]:
        return sorted(self.seen[i] - t for i, t in self.paid.items() if i in self.seen)


def percentile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


async def create_holder(control: str, orders: int) -> tuple[dict[str, Any], list[str]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{control}/holders", json={"name": "bench"}) as r:
            keys = await r.json()
        async with http.post(f"{control}/holders/bench/orders", json={"count": orders}) as r:
            ids: list[str] = (await r.json())["ids"]
    return keys, ids


async def pay_at_random(control: str, chosen: list[str], span_s: float, side: Side) -> None:
    """Pay the ``chosen`` orders at uniformly random moments over ``span_s``, noting when."""
    moments = sorted(random.uniform(0, span_s) for _ in chosen)
    start = CLOCK.monotonic()
    async with aiohttp.ClientSession() as http:
        for order_id, at in zip(chosen, moments, strict=True):
            await CLOCK.sleep(start + at - CLOCK.monotonic())
            async with http.post(f"{control}/orders/{order_id}/pay", json={}) as r:
                assert r.status == 200, await r.text()
            side.paid[order_id] = CLOCK.monotonic()


async def receiver(side: Side) -> web.AppRunner:
    async def receive(request: web.Request) -> web.Response:
        event = await request.json()
        if event["type"] == "order.paid":
            side.seen.setdefault(event["resource"]["id"], CLOCK.monotonic())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def write_config(
    directory: Path, base_url: str, keys: dict[str, Any], port: int, scale: float
) -> Path:
    (directory / "k.api").write_text(keys["api_key"])
    (directory / "k.secret").write_text(keys["secret_key"])
    (directory / "store.whsec").write_text(generate_webhook_secret())
    text = (
        f'[daemon]\nstate_path = "state.db"\nhttp_listen = ""\nlog_format = "json"\n\n'
        f'[api]\nbase_url = "{base_url}"\nrequests_per_second = {BUDGET_RPS / scale:g}\n\n'
        f'[schedule]\nactive_orders = "{INTERVAL_S * scale:g}s"\n\n'
        '[[holders]]\nname = "bench"\napi_key_file = "k.api"\nsecret_key_file = "k.secret"\n\n'
        f'[[sinks]]\nname = "bench"\nkind = "webhook"\nurl = "http://127.0.0.1:{port}/events"\n'
        'secret_file = "store.whsec"\nevents = ["order.*"]\n'
    )
    (directory / "config.toml").write_text(text)
    return directory / "config.toml"


async def wait_first_sync(daemon: asyncio.subprocess.Process) -> None:
    assert daemon.stdout is not None
    while line := await daemon.stdout.readline():
        record = json.loads(line) if line.startswith(b"{") else {}
        if record.get("event") == "poll_finished" and record.get("tier") == "active_orders":
            return
    raise SystemExit("the daemon stopped before its first sweep")


async def daemon_side(
    box: dict[str, Any], keys: dict[str, Any], ids: list[str], scale: float, payments: int
) -> Side:
    side = Side({}, {})
    runner = await receiver(side)
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory(prefix="drgreen-latency-") as tmp:
        config = write_config(Path(tmp), box["base_url"], keys, port, scale)
        daemon = await asyncio.create_subprocess_exec(
            str(BIN), "-c", str(config), "run",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
        try:
            await wait_first_sync(daemon)
            assert daemon.stdout is not None
            drain = asyncio.create_task(daemon.stdout.read())
            span_s = DAEMON_SPAN_INTERVALS * INTERVAL_S * scale
            await pay_at_random(box["control_url"], ids[:payments], span_s, side)
            await settle(side, 2 * INTERVAL_S * scale + 10)
            drain.cancel()
        finally:
            daemon.terminate()
            await daemon.wait()
            await runner.cleanup()
    return side


async def settle(side: Side, limit_s: float) -> None:
    """Wait until every payment was seen, or ``limit_s``."""
    deadline = CLOCK.monotonic() + limit_s
    while (
        len(side.seen.keys() & side.paid.keys()) < len(side.paid) and CLOCK.monotonic() < deadline
    ):
        await CLOCK.sleep(0.05)


async def docs_loop(api: ApiClient, ids: list[str], side: Side, stop: asyncio.Event) -> None:
    """The docs' pattern: fetch every active order in turn, forever, at the holder's budget."""
    while not stop.is_set():
        for order_id in ids:
            order = await api.order(order_id)
            if order.payment_status != "PENDING" and order_id in side.paid:
                side.seen.setdefault(order_id, CLOCK.monotonic())
            if stop.is_set():
                return


async def baseline_side(
    box: dict[str, Any], keys: dict[str, Any], ids: list[str], scale: float, payments: int
) -> Side:
    side, stop = Side({}, {}), asyncio.Event()
    pass_s = len(ids) * scale / BUDGET_RPS  # one pass over every order at the budget
    settings = ApiSettings(box["base_url"], requests_per_second=BUDGET_RPS / scale)
    credentials = ApiCredentials(keys["api_key"], keys["secret_key"])
    async with aiohttp.ClientSession() as session:
        api = ApiClient(session, settings, credentials, CLOCK, holder="bench")
        loop = asyncio.create_task(docs_loop(api, ids, side, stop))
        # Orders at random places in the loop's order (not the last ones it reaches, which over
        # half a pass would be found late every time), none of those the daemon's side paid.
        chosen = random.sample(ids[payments:], payments)
        await pay_at_random(box["control_url"], chosen, pass_s / 2, side)
        await settle(side, pass_s + 10)
        stop.set()
        await loop
    return side


def row(name: str, side: Side, scale: float) -> str:
    values = side.latencies()
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return (
        f"| {name} | {len(values)}/{len(side.paid)} | {p50:.2f} s | {p99:.2f} s "
        f"| {p50 / scale:.1f} s | {p99 / scale:.1f} s |"
    )


async def main(args: argparse.Namespace) -> None:
    orders, scale, payments = PROFILES[args.profile]
    logs.configure("warning", "console", stream=sys.stderr)
    print(f"machine: {machine()}", flush=True)
    print(f"N = {orders} active orders, time × {scale:g}, {payments} payments a side", flush=True)
    share = CpuShare()
    share.start()
    sandbox, box = await start_sandbox()
    try:
        keys, ids = await create_holder(box["control_url"], orders)
        random.shuffle(ids)  # which orders change: random, distinct per side
        ours = await daemon_side(box, keys, ids, scale, payments)
        docs = await baseline_side(box, keys, ids, scale, payments)
    finally:
        sandbox.terminate()
        await sandbox.wait()
    text = "\n".join([
        "| side | detected | p50 (scaled) | p99 (scaled) | p50 at real time | p99 at real time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        row(f"drgreen-poller, active_orders {INTERVAL_S:g} s", ours, scale),
        row(f"docs' per-order loop, {BUDGET_RPS:g} req/s", docs, scale),
    ])  # fmt: skip
    print(text)
    if not args.no_append:
        target = (
            f"Target: p99 ≤ interval × 1.1 + sweep time ({INTERVAL_S * 1.1:g} s + the sweep). "
            f"Time scaled by {scale:g}: every interval and the budget ({BUDGET_RPS:g} request/s "
            f"per holder) run {1 / scale:g}× faster; the last two columns divide by {scale:g}."
        )
        notes = [target, share.sentence()]
        append_run("Detection latency", INTRO, run_record(args.profile, text, notes))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    profile_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
