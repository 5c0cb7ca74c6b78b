"""The sandbox's sales funnel and revenue-per-strain lists through the signed client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.harness import SignedCaller
from drgreen_poller.sandbox.world.model import Strain
from tests.conftest import data_of, error_of

NOT_AUTHORIZED = b'{"message":"User is not authorized","error":"Unauthorized","statusCode":401}'


@pytest.fixture
def strains(box: LocalSandbox) -> tuple[Strain, Strain]:
    """Two strains stocked in GBR: Kush at 10 a gram, Haze at 4."""
    catalogue = box.state.catalogue
    return (
        catalogue.create("Kush", retail_price=10, wholesale_price=6, locations={"GBR": 500}),
        catalogue.create("Haze", retail_price=4, wholesale_price=2, locations={"GBR": 500}),
    )


class TestSales:
    async def test_funnel_rows(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, clock: FakeClock
    ) -> None:
        """A lead per client, taken over by its first order; a sale per later order; CLOSED
        (updated at delivery) once delivered; the same ids on every read."""
        state = box.state
        jane = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        first = state.orders.create(holder, client_id=jane.id)
        clock.advance(60)
        state.orders.create(holder, client_id=jane.id)
        state.clients.create(holder)
        state.lifecycle.approve(first.id)
        clock.advance(60)
        state.lifecycle.deliver(first.id)
        data = await data_of(caller, "/dapp/sales")
        stages = [(s["stage"], s["orderId"]) for s in data["sales"]]
        assert stages[0] == ("CLOSED", first.id)
        assert sorted(s for s, _ in stages) == ["CLOSED", "LEADS", "ONGOING"]
        closed = data["sales"][0]
        assert (closed["createdAt"], closed["updatedAt"]) == (
            "2026-11-23T10:00:00.000Z", "2026-11-23T10:02:00.000Z",
        )  # fmt: skip
        assert list(closed) == [
            "id", "createdAt", "updatedAt", "stage", "description", "orderId", "client",
        ]  # fmt: skip
        assert closed["client"]["id"] == jane.id
        again = await data_of(caller, "/dapp/sales")
        assert [s["id"] for s in again["sales"]] == [s["id"] for s in data["sales"]]
        summary = await data_of(caller, "/dapp/sales/summary")
        assert summary["summary"] == {"ONGOING": 1, "LEADS": 1, "CLOSED": 1, "totalCount": 2}

    async def test_stage_search_and_order(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, clock: FakeClock
    ) -> None:
        """``stage`` and ``search`` with ``searchBy=clientName`` filter; ``orderBy=desc`` pages
        newest first."""
        state = box.state
        state.clients.create(holder)
        clock.advance(60)
        zed = state.clients.create(holder)
        zed.first_name = "Zed"
        leads = await data_of(caller, "/dapp/sales", ("stage", "LEADS"), ("orderBy", "desc"))
        assert leads["sales"][0]["client"]["id"] == zed.id
        found = await data_of(caller, "/dapp/sales", ("search", "zE"), ("searchBy", "clientName"))
        assert [s["client"]["firstName"] for s in found["sales"]] == ["Zed"]
        assert (await data_of(caller, "/dapp/sales", ("stage", "CLOSED")))["sales"] == []

    async def test_bad_query_is_400(self, caller: SignedCaller) -> None:
        """An unknown stage, or a search without searchBy, is a 400."""
        assert await error_of(caller, "/dapp/sales", ("stage", "WON")) == (
            400,
            "stage must be one of the following values: ONGOING, LEADS, CLOSED",
        )
        assert await error_of(caller, "/dapp/sales", ("search", "x")) == (
            400,
            "searchBy must be one of the following values: clientName, searchBy must be a string",
        )
        status, _ = await error_of(caller, "/dapp/sales", ("search", "x"), ("searchBy", "email"))
        assert status == 400


class TestRevenue:
    async def test_sales_per_strain(
        self,
        box: LocalSandbox,
        holder: HolderInfo,
        caller: SignedCaller,
        strains: tuple[Strain, Strain],
    ) -> None:
        """Paid, delivered orders' grams and sales per strain at today's price, best first;
        ``search`` matches strain names; open orders do not count."""
        kush, haze = strains
        state = box.state
        order = state.orders.create(holder, items={kush.id: 2.5, haze.id: 10})
        state.lifecycle.approve(order.id)
        state.lifecycle.pay(order.id)
        state.lifecycle.deliver(order.id)
        state.orders.create(holder, items={kush.id: 100})
        data = await data_of(caller, "/dapp/revenue")
        assert data["strains"] == [
            {"strainId": haze.id, "strainName": "Haze", "wholeSalePrice": 2, "retailPrice": 4,
             "totalQuantity": 10, "totalSales": 40, "totalRevenue": 40},
            {"strainId": kush.id, "strainName": "Kush", "wholeSalePrice": 6, "retailPrice": 10,
             "totalQuantity": 2, "totalSales": 25, "totalRevenue": 25},
        ]  # fmt: skip
        assert data["pageMetaDto"]["itemCount"] == 2
        found = await data_of(caller, "/dapp/revenue", ("search", "ku"))
        assert [s["strainName"] for s in found["strains"]] == ["Kush"]

    async def test_filters(
        self,
        box: LocalSandbox,
        holder: HolderInfo,
        caller: SignedCaller,
        strains: tuple[Strain, Strain],
    ) -> None:
        """Dates (both needed), clients and countries narrow the orders counted."""
        kush, _ = strains
        state = box.state
        order = state.orders.create(
            holder, items={kush.id: 1}, created_at=state.now() - timedelta(days=3)
        )
        state.lifecycle.approve(order.id)
        state.lifecycle.pay(order.id)
        state.lifecycle.deliver(order.id)
        path = "/dapp/revenue"
        today = (("startDate", "2026-11-23"), ("endDate", "2026-11-23"))
        assert (await data_of(caller, path, *today))["strains"] == []
        assert len((await data_of(caller, path, today[0]))["strains"]) == 1  # one date: ignored
        other = ("clientIds", '["00000000-0000-4000-8000-000000000000"]')
        assert (await data_of(caller, path, other))["strains"] == []
        assert (await data_of(caller, path, ("countryCodes", '["PRT"]')))["strains"] == []
        gbr = await data_of(caller, path, ("countryCodes", '["GBR"]'))
        assert gbr["strains"][0]["totalSales"] == 10

    async def test_bad_query_is_400(self, caller: SignedCaller) -> None:
        """A date that does not parse, or a list that is not JSON, is a 400."""
        assert await error_of(caller, "/dapp/revenue", ("endDate", ""), ("clientIds", "x")) == (
            400,
            "endDate must be a valid date. ex: YYYY-MM-DD or MM-DD-YYYY, "
            "clientIds must be a JSON array of strings",
        )

    @pytest.mark.parametrize("path", ["/dapp/revenue", "/dapp/sales"])
    async def test_guarded(self, box: LocalSandbox, caller: SignedCaller, path: str) -> None:
        """Both lists run behind the API-key guard."""
        assert (await box.raw("GET", path)).body == NOT_AUTHORIZED
        wrong = await caller.call("GET", path, signed_payload="nope")
        assert (wrong.status, wrong.body) == (401, NOT_AUTHORIZED)
