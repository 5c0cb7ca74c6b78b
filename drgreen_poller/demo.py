"""``drgreen-poller demo``: sandbox + daemon + webhook receiver in one process, a scripted story.

Owns the story and its printing only: in a temporary directory, a Dr Green sandbox, the real
daemon (configured like a user would) and a receiver that verifies every signature; customers
and orders move through their lifecycles, Dr Green hiccups, the receiver fails once, and each
event is printed as it arrives, then a summary. The daemon's log lines are printed by the same
printer, as lines of the story (``DaemonLines``). Everything runs on 127.0.0.1 and ends by itself.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from drgreen_poller.api import ApiSettings
from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.config import Config, parse_config
from drgreen_poller.daemon import Controls, run_daemon
from drgreen_poller.listener import ListenerState, build_listener
from drgreen_poller.sandbox import HolderInfo, SandboxState, create_app, seed_demo
from drgreen_poller.store_client import StoreClient
from drgreen_poller.webhook_signing import generate_webhook_secret

NEW_CUSTOMER = {
    "firstName": "Zoë",
    "lastName": "Adebayo",
    "email": "zoe.adebayo@example.com",
    "phoneCode": "+44",
    "phoneCountryCode": "GB",
    "contactNumber": "7700900456",
    "shipping": {
        "address1": "12 Canal Street",
        "city": "Manchester",
        "state": "Greater Manchester",
        "country": "United Kingdom",
        "countryCode": "GBR",
        "postalCode": "M1 3HE",
    },
    "medicalRecord": {
        "dob": "1988-04-02",
        "gender": "Female",
        "medicalConditions": ["anxiety"],
        "medicinesTreatments": [],
        "medicalHistory0": False,
        "medicalHistory13": "never",
        "medicalHistory14": ["never"],
    },
}
# How long one step may take to show up (polls every second, retries after one).
STEP_TIMEOUT_S = 20.0
# Daemon log lines the story leaves out: the demo's state is new by design.
EXPECTED_LINES = frozenset({"state_created"})
# Fields every JSON log line has; the story shows the rest.
_LINE_FIELDS = ("event", "level", "timestamp")


class DaemonLines:
    """The daemon's log stream, told as lines of the story (one printer: no interleaving).

    structlog writes each JSON line in pieces; a line goes out whole once it is complete, as
    ``  daemon  warning poll_failed  tier=strains error=...`` (or as the JSON itself, ``raw``).

    Args:
        out: the story's stream.
        raw: print the JSON lines as they are (``--log-format json``).
    """

    def __init__(self, out: TextIO, *, raw: bool = False) -> None:
        self._out, self._raw = out, raw
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if shown := self._told(line):
                self._out.write(shown + "\n")
                self._out.flush()
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return False  # the lines are JSON for ``_told`` to read, whatever ``out`` is

    def _told(self, line: str) -> str:
        try:
            fields = json.loads(line)
        except ValueError:
            return f"  daemon  {line}" if line.strip() else ""
        if fields.get("event") in EXPECTED_LINES:
            return ""
        if self._raw:
            return line
        rest = " ".join(
            f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
            for key, value in fields.items()
            if key not in _LINE_FIELDS
        )
        return f"  daemon  {fields.get('level')} {fields.get('event')}  {rest}".rstrip()


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def demo_config(
    directory: Path, base_url: str, holder: HolderInfo, hook: str, secret: str
) -> Config:
    """The daemon's configuration, as a user would write it, with demo-sized intervals."""
    document: dict[str, Any] = {
        "daemon": {"state_path": "state.db", "http_listen": ""},
        "api": {"base_url": base_url, "requests_per_second": 5, "burst": 5},
        "holders": [
            {
                "name": holder.name,
                "api_key": holder.credentials.api_key,
                "secret_key": holder.credentials.secret_key,
                "strain_countries": ["GBR"],
            }
        ],
        "schedule": {
            "active_orders": "1s",
            "stale_orders": "2s",
            "pending_kyc": "1s",
            "commissions": "1s",
            "strains": "1s",
            "jitter": 0,
            "backoff_base": "1s",
        },
        "delivery": {"retry_schedule": ["0s", "1s", "2s", "4s"]},
        "sinks": [
            {
                "name": "store",
                "kind": "webhook",
                "url": f"{hook}/drgreen/events",
                "secret": secret,
                "events": ["order.*", "client.*", "commission.*", "strain.*"],
            },
            {"name": "audit", "kind": "file", "path": "events.jsonl", "events": ["*"]},
        ],
    }
    return parse_config(document, base_dir=directory, environ={})


class Story:
    """The scripted changes, each waiting until its events have reached the receiver."""

    def __init__(
        self,
        state: SandboxState,
        api: StoreClient,
        received: ListenerState,
        arrived: list[str],
        out: TextIO,
    ) -> None:
        self.state, self.api, self.received = state, api, received
        self.arrived, self.out = arrived, out

    def hiccup(self) -> None:
        """Two 503s from Dr Green, and the receiver refuses the next request once."""
        self.state.traffic.add_fault({"kind": "server_error", "status": 503, "count": 2})
        self.received.fail_first = self.received.requests + 1

    def hiccup_over(self) -> bool:
        """Both 503s were served and the receiver has refused its request."""
        return (
            not self.state.traffic.faults.active()
            and self.received.requests >= self.received.fail_first
        )

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def step(
        self,
        title: str,
        action: Callable[[], Any],
        *expected: str,
        until: Callable[[], bool] = lambda: True,
    ) -> None:
        """Do ``action``, then wait until every ``expected`` event type has been received (and
        ``until`` holds), so that each step's lines come under its own title."""
        self.say(f"\n{title}")
        start = len(self.arrived)
        result = action()
        if asyncio.iscoroutine(result):
            await result
        clock = SystemClock()
        deadline = clock.monotonic() + STEP_TIMEOUT_S
        while not (_contains(self.arrived[start:], expected) and until()):
            if clock.monotonic() > deadline:
                self.say(f"  (still waiting for {', '.join(expected)}; moving on)")
                return
            await clock.sleep(0.05)

    async def play(self) -> None:
        """The whole story: a customer and their order, then trouble, then the end of it."""
        order_id = await self.customer_orders()
        await self.trouble_then_delivery(order_id)

    async def customer_orders(self) -> str:
        """A customer signs up, passes KYC, orders and pays; returns the order's id."""
        client_id = ""

        async def sign_up() -> None:
            nonlocal client_id
            client_id = await self.api.create_client(NEW_CUSTOMER)

        await self.step(
            "A customer signs up in the store (POST /dapp/clients):", sign_up, "client.created"
        )
        await self.step(
            "They pass the KYC check, then Dr Green's admin approves them:",
            lambda: (
                self.state.clients.verify_kyc(client_id),
                self.state.clients.approve(client_id),
            ),
            "client.kyc.verified",
            "client.kyc.approved",
            "client.kyc.completed",
        )
        order_id = ""

        async def order() -> None:
            nonlocal order_id
            strain = self.state.catalogue.listed()[0]
            await self.api.add_to_cart(self.state.clients.get(client_id).cart_id, [(strain.id, 10)])
            order_id = (await self.api.create_order(client_id)).id

        await self.step(
            "They order 10 g (POST /dapp/carts, POST /dapp/orders):", order, "order.created"
        )
        await self.step(
            "Dr Green approves it and the customer pays:",
            lambda: (self.state.lifecycle.approve(order_id), self.state.lifecycle.pay(order_id)),
            "order.approved",
            "order.paid",
            "commission.accrued",
        )
        return order_id

    async def trouble_then_delivery(self, order_id: str) -> None:
        """Dr Green and the receiver hiccup while another order is rejected; then delivery."""
        rejected = next(
            o
            for o in self.state.orders.of("demo")
            if o.admin_approval == "PENDING" and o.id != order_id
        )

        def reject() -> None:
            self.hiccup()
            self.state.lifecycle.reject(rejected.id, "prescription missing")

        await self.step(
            "Dr Green rejects another order, but its API hiccups (two 503s) and the store's"
            " receiver fails once; both are retried:",
            reject,
            "order.rejected",
            until=self.hiccup_over,
        )
        strain = self.state.catalogue.listed()[1]
        await self.step(
            "The order is delivered (nobody saw it shipped), and a strain's price changes:",
            lambda: (
                self.state.lifecycle.deliver(order_id),
                self.state.catalogue.update(strain.id, {"retailPrice": 9.5}),
            ),
            "order.shipped",
            "order.delivered",
            "strain.updated",
        )


def _contains(arrived: list[str], expected: tuple[str, ...]) -> bool:
    return all(kind in arrived for kind in expected)


async def run_demo(out: TextIO, clock: Clock | None = None) -> None:
    """Run the whole story (about fifteen seconds) and print it to ``out``."""
    clock = clock or SystemClock()
    state = SandboxState(clock)
    holder = seed_demo(state)
    secret = generate_webhook_secret()
    arrived: list[str] = []

    def heard(line: str) -> None:
        out.write(f"  webhook {line}\n")
        out.flush()
        if line.startswith("ok "):
            arrived.append(line.split()[2])

    received = ListenerState([secret], fail_first=0)
    with tempfile.TemporaryDirectory(prefix="drgreen-demo-") as tmp:
        async with (
            serve(create_app(state)) as sandbox,
            serve(build_listener(received, clock, heard)) as hook,
            aiohttp.ClientSession() as session,
        ):
            config = demo_config(Path(tmp), f"{sandbox}/api/v1", holder, hook, secret)
            out.write(
                f"Dr Green sandbox on {sandbox}/api/v1 (holder {holder.name!r}), "
                f"receiver on {hook}, state in {tmp}\n"
            )
            out.write(
                "The daemon polls every second; the existing orders and customers are "
                "taken as they are (first_sync = seed).\n"
            )
            controls = Controls()
            daemon = asyncio.create_task(run_daemon(config, clock, controls))
            try:
                api = StoreClient(
                    session, ApiSettings(f"{sandbox}/api/v1"), holder.credentials, clock
                )
                story = Story(state, api, received, arrived, out)
                await clock.sleep(1.5)  # the first sync
                await story.play()
            finally:  # also on Ctrl-C: the daemon stops as under SIGTERM and closes its session
                controls.request_stop()
                await daemon
            lines = (Path(tmp) / "events.jsonl").read_text().splitlines()
        counts = state.traffic.request_counts(holder.name)
        out.write(
            f"\nSummary: {len(arrived)} events delivered to the webhook, every signature "
            f"verified, {received.requests - len(arrived)} attempt(s) refused or failed and "
            f"retried; {len(lines)} events in the audit file; {counts['total']} signed requests "
            "to Dr Green, each checked by the sandbox's copy of its signature guard.\n"
        )
