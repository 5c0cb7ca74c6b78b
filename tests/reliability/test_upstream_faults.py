"""The upstream fault matrix (issue 7, point 11b), against the real CLI and a sandbox process.

One daemon serves the matrix: holder ``faults`` has a pool of untouched orders and clients, one
of each per case. Each case injects a fault through ``POST /_sandbox/faults``, makes a real
change while it bites and another once it has ended, and then checks: no false event (the
receiver got exactly those changes), no crash (the daemon still runs, no traceback in its
output), and recovery within one interval of the fault ending (the change made then arrives).
Pagination shifting and a revoked key get daemons of their own (other intervals, other keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.reliability.fault_world import PoolSize, Seen, World, open_world
from tests.reliability.harness import CLOCK, SCALE, wait_for
from tests.reliability.sandbox_process import Control, SandboxProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

INTERVAL_S = 0.5
API_TIMEOUT_S = 1.5
POOL = 40  # orders and clients of the faults holder, one of each per case
FAULTS, OVERRUN = "faults", "overrun"
PAGE_DELAY_S = 0.8  # while a sweep waits this long for its second page, the test shifts it


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def control(sandbox: SandboxProcess) -> AsyncIterator[Control]:
    """The sandbox's control API, on the module's event loop."""
    async with aiohttp.ClientSession() as session:
        yield Control(session, sandbox.control_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    control: Control, sandbox: SandboxProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """The matrix's daemon over the faults holder (and one for the overrun case)."""
    sizes = {FAULTS: PoolSize(POOL, POOL), OVERRUN: PoolSize(2)}
    directory = tmp_path_factory.mktemp("faults")
    async with open_world(
        control, sandbox, directory, sizes, interval_s=INTERVAL_S, api_timeout_s=API_TIMEOUT_S
    ) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Case:
    """One upstream fault: its spec, how many requests a unit of it takes, how long it bites."""

    spec: dict[str, Any]
    requests: int = 1  # requests spent per failed call (aiohttp resends a GET on a reset)
    effect_s: float = 0.0  # how long the last hit still bites (Retry-After, client timeout)


BODIES = ("json", "html", "text")
# The short form takes one body per status; the full one every pair.
SERVER_ERRORS = [
    (status, body) for i, status in enumerate((500, 502, 503)) for j, body in enumerate(BODIES)
    if SCALE.name == "full" or i == j
]  # fmt: skip
CASES = {
    "429-retry-after-seconds": Case({"kind": "rate_limit", "retry_after": 2}, effect_s=2),
    "429-retry-after-http-date": Case(
        {"kind": "rate_limit", "retry_after": 2, "retry_after_format": "http-date"}, effect_s=2
    ),
    **{
        f"{status}-{body}": Case({"kind": "server_error", "status": status, "body": body})
        for status, body in SERVER_ERRORS
    },
    "slow-past-the-timeout": Case({"kind": "slow", "delay_s": 3}, effect_s=API_TIMEOUT_S),
    "truncated-json": Case({"kind": "truncated", "keep_fraction": 0.6}),
    "malformed-json": Case({"kind": "malformed"}),
    "connection-reset": Case({"kind": "reset"}, requests=2),
}


async def _listing(control: Control, fault_id: int) -> dict[str, Any] | None:
    """The fault as the sandbox lists it, or None once it is spent."""
    faults: list[dict[str, Any]] = (await control.ok("GET", "/faults"))["faults"]
    return next((f for f in faults if f["id"] == fault_id), None)


async def _spent(control: Control, fault_id: int) -> None:
    """Wait until the fault has hit its last request."""

    async def gone() -> bool:
        return await _listing(control, fault_id) is None

    await wait_for(gone, 30, f"fault {fault_id} to be spent")


class TestUpstreamFaults:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("name", list(CASES))
    async def test_fault_then_recovery(self, world: World, name: str) -> None:
        """A faulty answer: no false event, no crash, the next real change delivered promptly."""
        case, pool = CASES[name], world.pools[FAULTS]
        order, client = pool.order(), pool.client()
        mark = len(world.receiver.arrivals)
        count = SCALE.fault_count * case.requests
        fault = await world.control.fault({**case.spec, "count": count, "holder": FAULTS})
        await world.control.ok("POST", f"/orders/{order}/approve")  # while the fault bites
        await _spent(world.control, fault)
        await CLOCK.sleep(case.effect_s)
        await world.control.ok("POST", f"/clients/{client}/verify-kyc")  # once it has ended
        want = {("order", order, "order.approved"), ("client", client, "client.kyc.verified")}
        await world.delivered(mark, want, "recovery after the fault ended")
        await world.settle(mark, want)

    @pytest.mark.timeout(60)
    async def test_an_order_vanishes(self, world: World) -> None:
        """An order gone from the lists and from detail: no event, asked for once, others go on."""
        pool = world.pools[FAULTS]
        gone, order, client = pool.order(), pool.order(), pool.client()
        mark, started = len(world.receiver.arrivals), CLOCK.monotonic()
        await world.control.ok("DELETE", f"/orders/{gone}")
        await world.control.ok("POST", f"/orders/{order}/approve")
        await world.control.ok("POST", f"/clients/{client}/verify-kyc")
        want = {("order", order, "order.approved"), ("client", client, "client.kyc.verified")}
        await world.delivered(mark, want, "the changes beside a vanished order")
        await world.settle(mark, want)
        log = await world.control.request_log(FAULTS)
        details = [e for e in log if e["t"] >= started and "{orderId}" in e["endpoint"]]
        assert len(details) <= 2, f"the vanished order was asked for {len(details)} times"

    @pytest.mark.timeout(60)
    async def test_a_429_holds_back_every_tier(self, world: World) -> None:
        """After a 429 with Retry-After no request of that holder goes out until it expires."""
        retry_after_s = 3
        spec = {"kind": "rate_limit", "retry_after": retry_after_s, "count": 1,
                "endpoint": "GET /dapp/orders", "holder": FAULTS}  # fmt: skip
        await _spent(world.control, await world.control.fault(spec))
        await CLOCK.sleep(retry_after_s + 2 * INTERVAL_S)
        log = await world.control.request_log(FAULTS)
        limited = max(e["t"] for e in log if e["status"] == 429)
        early = [e["endpoint"] for e in log if limited < e["t"] < limited + retry_after_s - 0.05]
        assert not early, f"{len(early)} requests during Retry-After: {sorted(set(early))}"
        world.assert_well()

    @pytest.mark.timeout(60)
    async def test_a_sweep_longer_than_the_interval(self, world: World) -> None:
        """A slow but successful sweep that outlasts the interval: the tier still runs after it."""
        pool = world.pools[OVERRUN]
        spec = {"kind": "slow", "delay_s": 2 * INTERVAL_S, "count": 1,
                "endpoint": "GET /dapp/orders", "holder": OVERRUN}  # fmt: skip
        mark = len(world.receiver.arrivals)
        await _spent(world.control, await world.control.fault(spec))
        await CLOCK.sleep(3 * INTERVAL_S)  # the slow answer has come
        order = pool.order()
        await world.control.ok("POST", f"/orders/{order}/approve")
        want = {("order", order, "order.approved")}
        await world.delivered(mark, want, "the change after a long sweep")
        await world.settle(mark, want)


class TestPagination:
    @pytest.mark.timeout(90)
    async def test_pages_shift_mid_sweep(
        self, control: Control, sandbox: SandboxProcess, tmp_path: Path
    ) -> None:
        """Orders inserted, then deleted, between two pages of a sweep: no false or lost event."""
        sizes = {"pages": PoolSize(SCALE.page_orders)}
        # Two list pages are slowed: the sweep must still fit in the interval.
        async with open_world(control, sandbox, tmp_path, sizes, interval_s=2.5) as world:
            await self._shift(world, inserted=True)
            await self._shift(world, inserted=False)

    async def _shift(self, world: World, *, inserted: bool) -> None:
        pool = world.pools["pages"]
        mark, started = len(world.receiver.arrivals), CLOCK.monotonic()
        spec = {"kind": "slow", "delay_s": PAGE_DELAY_S, "count": 2,
                "endpoint": "GET /dapp/orders", "holder": "pages"}  # fmt: skip
        fault = await world.control.fault(spec)

        async def second_page_waiting() -> bool:
            return await _listing(world.control, fault) is None  # its 2nd hit: page 2 waits

        await wait_for(second_page_waiting, 30, "a sweep's second page")
        want: Seen = set()
        if inserted:
            body = {"count": SCALE.shift_orders, "clientId": pool.buyer}
            made = (await world.control.ok("POST", "/holders/pages/orders", body))["ids"]
            pool.orders += made
            want = {("order", i, "order.created") for i in made}
        else:
            for order in pool.orders[-SCALE.shift_orders :]:
                await world.control.ok("DELETE", f"/orders/{order}")
            del pool.orders[-SCALE.shift_orders :]
        oldest = pool.order()  # on the last page: the sweep must reach it
        await world.control.ok("POST", f"/orders/{oldest}/approve")
        want.add(("order", oldest, "order.approved"))
        await world.delivered(mark, want, "recovery after the shifted sweep")
        await world.settle(mark, want)
        if not inserted:  # orders moved up past the page already read: asked for one by one
            log = await world.control.request_log("pages")
            assert any(e["t"] > started and "{orderId}" in e["endpoint"] for e in log)


class TestRevokedKey:
    @pytest.mark.timeout(90)
    async def test_revoked_then_restored(
        self, control: Control, sandbox: SandboxProcess, tmp_path: Path
    ) -> None:
        """A key refused then restored: one probe per retry, prompt recovery, nothing false."""
        retry_s = 1.0
        extra = f'unauthorized_retry = "{retry_s}s"'
        sizes = {"revoked": PoolSize(1, 1)}
        async with open_world(
            control, sandbox, tmp_path, sizes, interval_s=INTERVAL_S, schedule_extra=extra
        ) as world:
            pool = world.pools["revoked"]
            order, client = pool.order(), pool.client()
            mark = len(world.receiver.arrivals)
            await control.ok("POST", "/holders/revoked/revoke")
            refused = {("holder", "revoked", "poller.holder_unauthorized")}
            await world.delivered(mark, refused, "the refusal")
            refused_at = CLOCK.monotonic()
            await control.ok("POST", f"/orders/{order}/approve")  # while the key is refused
            await CLOCK.sleep(4 * retry_s)
            probes = [e for e in await control.request_log("revoked") if e["t"] > refused_at]
            assert len(probes) <= 5, f"{len(probes)} requests in 4 retry intervals"
            await control.ok("POST", "/holders/revoked/restore")
            await control.ok("POST", f"/clients/{client}/verify-kyc")
            want = refused | {
                ("holder", "revoked", "poller.holder_recovered"),
                ("order", order, "order.approved"),
                ("client", client, "client.kyc.verified"),
            }
            await wait_for(lambda: want <= world.got(mark), retry_s * 1.1 + world.recovery_s,
                           "recovery after the key was restored")  # fmt: skip
            await world.settle(mark, want)
