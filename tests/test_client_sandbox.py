"""The API client against the sandbox over loopback HTTP: every endpoint, auth, faults, budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drgreen_poller.canonical import canonical_query
from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.demo import NEW_CUSTOMER
from drgreen_poller.errors import (
    UpstreamClientBug,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamTransient,
    UpstreamUnauthorized,
)
from drgreen_poller.request_signing import ApiCredentials, generate_credentials
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState, seed_demo
from drgreen_poller.store_client import StoreClient
from tests.conftest import ClientFactory

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def clock() -> SystemClock:
    """Real time: the daemon and its subprocesses run on it (conftest's ``box`` serves it)."""
    return SystemClock()


@pytest.fixture
def demo(box: LocalSandbox) -> HolderInfo:
    return seed_demo(box.state)


@pytest.fixture
def api(box: LocalSandbox, demo: HolderInfo, make_client: ClientFactory) -> StoreClient:
    return make_client(box.base_url, creds=demo.credentials)


async def _all(pages: Any) -> list[Any]:
    return [item async for page in pages for item in page.items]


class TestOrders:
    async def test_list_sweep_newest_first_with_all_statuses(
        self, box: LocalSandbox, demo: HolderInfo, api: StoreClient
    ) -> None:
        """A paged sweep returns every order once, newest first, with all three status fields."""
        box.state.orders.create_many(demo.name, 230, spacing_s=1)
        orders = await _all(api.order_pages(take=100))
        assert len(orders) == len({o.id for o in orders}) == len(box.state.orders.of(demo.name))
        created = [o.created_at for o in orders]
        assert created == sorted(created, reverse=True)
        assert all(o.admin_approval and o.payment_status and o.order_status for o in orders)

    async def test_filters(self, box: LocalSandbox, demo: HolderInfo, api: StoreClient) -> None:
        """Status, approval and client filters reach the sandbox and are applied."""
        rejected = await _all(api.order_pages(admin_approval="REJECTED"))
        assert rejected
        assert all(o.admin_approval == "REJECTED" for o in rejected)
        delivered = await _all(api.order_pages(status="DELIVERED"))
        assert delivered
        assert all(o.order_status == "DELIVERED" for o in delivered)
        some = box.state.orders.of(demo.name)[0]
        mine = await _all(api.order_pages(client_ids=[some.client_id]))
        assert some.id in {o.id for o in mine}

    async def test_recent_summary_and_detail(
        self, box: LocalSandbox, demo: HolderInfo, api: StoreClient
    ) -> None:
        """recent carries updatedAt but no adminApproval; summary counts; detail has lines."""
        recent = await api.recent_orders(take=3)
        assert len(recent.items) == 3
        assert recent.items[0].updated_at
        assert recent.items[0].admin_approval is None
        summary = await api.orders_summary()
        assert summary.total == len(box.state.orders.of(demo.name))
        detail = await api.order(recent.items[0].id)
        assert detail.raw["orderLines"]
        assert detail.admin_approval is None

    @pytest.mark.parametrize("unknown_order", ["null", "404"])
    async def test_unknown_order_is_not_found(
        self, box: LocalSandbox, api: StoreClient, unknown_order: str
    ) -> None:
        """An unknown order is not-found whether the server answers null or 404."""
        box.state.update_settings({"unknown_order": unknown_order})
        with pytest.raises(UpstreamNotFound):
            await api.order(UNKNOWN_ID)

    async def test_bad_id_is_a_client_bug(self, api: StoreClient) -> None:
        """A malformed id is a 400 client bug with the validation message."""
        with pytest.raises(UpstreamClientBug, match="orderId must be a UUID"):
            await api.order("not-a-uuid")


class TestCreateFlow:
    async def test_signup_kyc_cart_order(self, box: LocalSandbox, api: StoreClient) -> None:
        """POST client → cart → KYC → POST order works; ordering too early is refused, and why."""
        client_id = await api.create_client(NEW_CUSTOMER)
        strain = box.state.catalogue.listed()[0]
        cart = box.state.clients.get(client_id).cart_id
        await api.add_to_cart(cart, [(strain.id, 2)])
        with pytest.raises(UpstreamClientBug, match="Client is not active") as inactive:
            await api.create_order(client_id)
        box.state.clients.activate(client_id)
        with pytest.raises(UpstreamClientBug, match="not KYC verified") as unverified:
            await api.create_order(client_id)
        assert (inactive.value.status, unverified.value.status) == (400, 409)
        box.state.clients.verify_kyc(client_id)
        box.state.clients.approve(client_id)
        order = await api.create_order(client_id)
        assert (order.order_status, order.admin_approval, order.payment_status) == ("PENDING",) * 3


class TestClients:
    async def test_sweep_summary_and_detail_without_medical_record(
        self, box: LocalSandbox, demo: HolderInfo, api: StoreClient
    ) -> None:
        """Client sweeps and summary work; detail arrives without its medical record."""
        clients = await _all(api.client_pages(take=2))
        assert len(clients) == len(box.state.clients.of(demo.name))
        assert (await api.clients_summary()).total == len(clients)
        pending = await _all(api.client_pages(is_verified=False))
        assert pending
        assert all(c.is_kyc_verified is False for c in pending)
        detail = await api.client(clients[0].id)
        assert "medicalRecord" not in detail.raw
        assert detail.raw.get("shippings")

    async def test_unknown_client_500_is_not_found(self, api: StoreClient) -> None:
        """Dr Green's 500 "Client not found" is read as not-found."""
        with pytest.raises(UpstreamNotFound, match="Client not found"):
            await api.client(UNKNOWN_ID)


class TestCommissionsAndStrains:
    async def test_commissions(self, box: LocalSandbox, demo: HolderInfo, api: StoreClient) -> None:
        """Accrued commission shows in the USD summary and the list."""
        before = await api.commissions_summary()
        box.state.commissions.accrue(demo.name, 12.5)
        after = await api.commissions_summary()
        assert after.total_usd == pytest.approx((before.total_usd or 0) + 12.5)
        rows = await _all(api.commission_pages())
        assert any(r.amount_usd == 12.5 for r in rows)

    async def test_strains_per_country(self, box: LocalSandbox, api: StoreClient) -> None:
        """Each country lists what is on sale there; detail gives that country's stock."""
        gbr = await _all(api.strain_pages("GBR"))
        zaf = await _all(api.strain_pages("ZAF"))
        assert {s.name for s in gbr} != {s.name for s in zaf}
        detail = await api.strain(gbr[0].id, "GBR")
        assert detail.stock_quantity == gbr[0].stock_quantity
        with pytest.raises(UpstreamNotFound):
            await api.strain(UNKNOWN_ID)
        with pytest.raises(UpstreamClientBug, match="Alpha3"):
            await _all(api.strain_pages("GB"))

    async def test_health(self, api: StoreClient) -> None:
        """The public health check answers."""
        assert await api.health()


class TestDocumentedVariants:
    async def test_docs_vocabulary_and_error_shape(
        self, box: LocalSandbox, demo: HolderInfo, api: StoreClient
    ) -> None:
        """With the docs' payment words and error bodies, the client reads both."""
        box.state.update_settings({"payment_vocabulary": "docs", "error_shape": "docs"})
        order = box.state.orders.of(demo.name)[0]
        box.state.orders.patch(order.id, {"adminApproval": "VERIFIED", "paymentStatus": "PENDING"})
        box.state.lifecycle.pay(order.id)
        orders = await _all(api.order_pages())
        assert next(o for o in orders if o.id == order.id).payment_status == "COMPLETED"
        with pytest.raises(UpstreamClientBug, match="orderId must be a UUID"):
            await api.order("nope")


class TestAuthentication:
    async def test_unknown_key(
        self, box: LocalSandbox, demo: HolderInfo, make_client: ClientFactory
    ) -> None:
        """A key pair Dr Green never issued gets 401."""
        stranger = make_client(box.base_url, creds=generate_credentials())
        with pytest.raises(UpstreamUnauthorized, match="User is not authorized"):
            await stranger.orders_summary()

    async def test_wrong_signature(
        self, box: LocalSandbox, demo: HolderInfo, make_client: ClientFactory
    ) -> None:
        """A real API key with someone else's secret key (a wrong signature) gets 401."""
        mixed = ApiCredentials(demo.credentials.api_key, generate_credentials().secret_key)
        with pytest.raises(UpstreamUnauthorized) as info:
            await make_client(box.base_url, creds=mixed).orders_summary()
        assert info.value.status == 401

    async def test_tampered_query(self, box: LocalSandbox, demo: HolderInfo) -> None:
        """A query changed after signing gets 401 with NestJS's default body."""
        signed = canonical_query([("orderBy", "desc"), ("take", "10")])
        tampered = canonical_query([("orderBy", "desc"), ("take", "11")])
        caller = box.caller(demo)
        answer = await box.raw(
            "GET", f"/dapp/orders?{tampered}", headers=caller.headers_for(signed)
        )
        assert answer.status == 401
        assert answer.json() == {
            "message": "User is not authorized",
            "error": "Unauthorized",
            "statusCode": 401,
        }
        honest = await box.raw("GET", f"/dapp/orders?{signed}", headers=caller.headers_for(signed))
        assert honest.status == 200

    async def test_revoked_key(self, box: LocalSandbox, demo: HolderInfo, api: StoreClient) -> None:
        """A key deleted on Dr Green's side gets 401."""
        box.state.revoke_holder_key(demo.name)
        with pytest.raises(UpstreamUnauthorized):
            await api.orders_summary()


class TestFaults:
    @pytest.mark.parametrize(
        ("spec", "kind", "retry_after"),
        [
            ({"kind": "rate_limit", "retry_after": 7}, UpstreamRateLimited, 7.0),
            ({"kind": "rate_limit", "retry_after": None}, UpstreamRateLimited, None),
            (
                {"kind": "rate_limit", "retry_after": 30, "retry_after_format": "http-date"},
                UpstreamRateLimited,
                30.0,
            ),
            ({"kind": "server_error", "status": 500, "body": "json"}, UpstreamTransient, None),
            ({"kind": "server_error", "status": 502, "body": "html"}, UpstreamTransient, None),
            (
                {"kind": "server_error", "status": 503, "body": "text", "retry_after": 9},
                UpstreamTransient,
                9.0,
            ),
            ({"kind": "server_error", "status": 504, "body": "html"}, UpstreamTransient, None),
            ({"kind": "malformed"}, UpstreamMalformed, None),
            ({"kind": "truncated"}, UpstreamMalformed, None),
        ],
    )
    async def test_each_fault_is_classified(
        self,
        box: LocalSandbox,
        api: StoreClient,
        spec: dict[str, Any],
        kind: type[UpstreamTransient],
        retry_after: float | None,
    ) -> None:
        """Every injected fault becomes the transient error it should, hint included."""
        box.state.traffic.add_fault({**spec, "count": 1})
        with pytest.raises(kind) as info:
            await api.orders_summary()
        assert isinstance(info.value, UpstreamTransient)
        if retry_after is None:
            assert info.value.retry_after_s is None
        else:
            assert info.value.retry_after_s == pytest.approx(retry_after, abs=1.5)
        assert (await api.orders_summary()).total is not None  # the fault was spent

    async def test_slow_response_times_out(
        self, box: LocalSandbox, demo: HolderInfo, make_client: ClientFactory
    ) -> None:
        """A response slower than the client's timeout is an UpstreamTimeout."""
        box.state.traffic.add_fault({"kind": "slow", "delay_s": 2, "count": 1})
        quick = make_client(box.base_url, creds=demo.credentials, timeout_s=0.2)
        with pytest.raises(UpstreamTimeout):
            await quick.orders_summary()


class TestPoliteness:
    async def test_burst_of_fifty_at_one_per_second(
        self, demo_state: tuple[SandboxState, HolderInfo, FakeClock], make_client: ClientFactory
    ) -> None:
        """50 concurrent calls reach the sandbox 3 at once, then exactly one per second."""
        state, holder, clock = demo_state
        async with LocalSandbox(state) as sandbox:
            api = make_client(
                sandbox.base_url, creds=holder.credentials, clock=clock, rate=1.0, burst=3
            )
            tasks = [asyncio.create_task(api.orders_summary()) for _ in range(50)]
            await _settle(clock, api, tasks)
            while not all(t.done() for t in tasks):
                clock.advance(0.5)
                await _settle(clock, api, tasks)
            for task in tasks:
                task.result()
        counts = state.traffic.request_counts(holder.name)
        assert counts["by_endpoint"] == {"GET /dapp/orders/summary": 50}
        arrivals = sorted(entry["t"] for entry in counts["log"])
        assert arrivals == [0.0, 0.0, 0.0] + [float(s) for s in range(1, 48)]


@pytest.fixture
def demo_state() -> tuple[SandboxState, HolderInfo, FakeClock]:
    """A sandbox world on a fake clock shared with the client under test."""
    clock = FakeClock()
    state = SandboxState(clock)
    return state, seed_demo(state), clock


async def _settle(clock: FakeClock, api: StoreClient, tasks: list[asyncio.Task[Any]]) -> None:
    """Wait (in real time) until no request is in flight and the rest wait on the fake clock."""
    for _ in range(2000):
        done = sum(t.done() for t in tasks)
        in_flight = api.requests_sent - done
        if in_flight == 0 and (done == len(tasks) or clock.sleepers):
            return
        await asyncio.wait([t for t in tasks if not t.done()], timeout=0.005)
    raise AssertionError("requests never settled")
