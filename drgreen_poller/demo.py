"""``drgreen-poller demo``: a scripted tour of the signed client against an in-process sandbox.

Owns the story and its printing only: a customer signs up and passes KYC, orders, and the order
goes through approval, payment, shipping and delivery, each step read back through signed API
calls; then the failure handling and the politeness budget are shown. Everything runs on
127.0.0.1 in this process and ends by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TextIO

import aiohttp
from aiohttp import web

from drgreen_poller.api import ApiClient, ApiSettings
from drgreen_poller.clock import Clock, SystemClock
from drgreen_poller.errors import UpstreamError
from drgreen_poller.models import Order
from drgreen_poller.sandbox import HolderInfo, SandboxState, create_app, seed_demo

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


@asynccontextmanager
async def serve_sandbox(state: SandboxState) -> AsyncIterator[str]:
    """Serve ``state`` on 127.0.0.1 (a free port); yields the Dr Green base URL."""
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        await runner.cleanup()


class Tour:
    """The demo's script, printing as it goes."""

    def __init__(self, state: SandboxState, holder: HolderInfo, api: ApiClient, out: TextIO):
        self.state, self.holder, self.api, self.out = state, holder, api, out

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def order_line(self, order_id: str) -> str:
        """The order as one signed list page shows it (all three status fields)."""
        async for page in self.api.order_pages(take=10):
            for order in page.items:
                if order.id == order_id:
                    return _triple(order)
            break
        return "not on the first page"

    async def signup(self) -> str:
        self.say("1. A customer signs up through the store (POST /dapp/clients).")
        client_id = await self.api.create_client(NEW_CUSTOMER)
        client = await self.api.client(client_id)
        self.say(
            f"   client {client_id}: KYC verified={client.is_kyc_verified}, "
            f"approval={client.admin_approval}"
        )
        dropped = "medicalRecord" not in client.raw
        self.say(f"   client detail read; medical record dropped at the API boundary: {dropped}")
        self.say("2. The customer completes KYC and Dr Green's admin approves them.")
        self.state.verify_client_kyc(client_id)
        self.state.approve_client(client_id)
        async for page in self.api.client_pages(take=10):
            mine = next(c for c in page.items if c.id == client_id)
            self.say(
                f"   list sweep: isKYCVerified={mine.is_kyc_verified}, "
                f"adminApproval={mine.admin_approval}, isActive={mine.is_active}"
            )
            break
        return client_id

    async def order(self, client_id: str) -> str:
        self.say("3. They fill a cart and order (POST /dapp/carts, POST /dapp/orders).")
        strains = [s async for page in self.api.strain_pages("GBR") for s in page.items]
        self.say(f"   GBR catalogue: {', '.join(s.name or s.id for s in strains)}")
        cart_id = self.state.client(client_id).cart_id
        await self.api.add_to_cart(cart_id, [(strains[0].id, 10), (strains[1].id, 2.5)])
        order = await self.api.create_order(client_id)
        self.say(f"   order {order.id}: {_triple(order)}")
        steps: list[tuple[str, Callable[[str], object]]] = [
            ("Dr Green approves it", self.state.approve_order),
            ("the customer pays", self.state.pay_order),
            ("it ships", self.state.ship_order),
            ("it is delivered", self.state.deliver_order),
        ]
        before = await self.api.commissions_summary()
        self.say("4. Dr Green moves it along; each step read back with one signed list page:")
        for label, step in steps:
            step(order.id)
            self.say(f"   {label + ':':22} {await self.order_line(order.id)}")
        after = await self.api.commissions_summary()
        self.say(f"   commission total (USD): {before.total_usd} -> {after.total_usd}")
        return order.id

    async def failures(self) -> None:
        self.say("6. Failures are classified, never guessed at:")
        cases: list[tuple[str, dict[str, object]]] = [
            ("429 with Retry-After", {"kind": "rate_limit", "retry_after": 2}),
            ("502 HTML page", {"kind": "server_error", "status": 502, "body": "html"}),
            ("truncated JSON", {"kind": "truncated"}),
        ]
        for label, spec in cases:
            self.state.add_fault({**spec, "count": 1})
            await self._expect_failure(label, self.api.orders_summary)
        self.state.revoke_holder_key(self.holder.name)
        await self._expect_failure("revoked key", self.api.orders_summary)

    async def _expect_failure(self, label: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except UpstreamError as exc:
            hint = getattr(exc, "retry_after_s", None)
            extra = f", retry after {hint:g} s" if hint is not None else ""
            self.say(f"   {label + ':':22} {type(exc).__name__}{extra}")
        else:
            self.say(f"   {label + ':':22} unexpectedly succeeded")


def _triple(order: Order) -> str:
    return (
        f"adminApproval={order.admin_approval} paymentStatus={order.payment_status} "
        f"orderStatus={order.order_status}"
    )


async def politeness(base_url: str, holder: HolderInfo, clock: Clock, out: TextIO) -> None:
    """Six calls on a fresh 1 request/s, burst 3 budget: the last leaves 3 s after the first."""
    async with aiohttp.ClientSession() as session:
        api = ApiClient(session, ApiSettings(base_url), holder.credentials, clock)
        started = clock.monotonic()
        for _ in range(6):
            await api.orders_summary()
        elapsed = clock.monotonic() - started
    out.write(f"5. Politeness: 6 calls at 1 request/s (burst 3) took {elapsed:.1f} s.\n")


async def run_demo(out: TextIO, clock: Clock | None = None) -> None:
    """Run the whole tour (about ten seconds) and print it to ``out``."""
    clock = clock or SystemClock()
    state = SandboxState(clock)
    holder = seed_demo(state)
    async with serve_sandbox(state) as base_url, aiohttp.ClientSession() as session:
        out.write(f"Dr Green sandbox on {base_url}, holder {holder.name!r}\n\n")
        fast = ApiSettings(base_url, timeout_s=5, requests_per_second=20, burst=5)
        tour = Tour(state, holder, ApiClient(session, fast, holder.credentials, clock), out)
        client_id = await tour.signup()
        await tour.order(client_id)
        await politeness(base_url, holder, clock, out)
        await tour.failures()
        counts = state.request_counts(holder.name)
        out.write(
            f"\n{counts['total']} signed requests reached the sandbox, each checked by its "
            "copy of Dr Green's signature guard.\n"
        )
