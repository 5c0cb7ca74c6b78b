"""The sandbox's dashboard routes through the signed client: chart data, status breakdowns,
analytics, sales and revenue summaries, commission managers, and the guard in front of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.harness import SignedCaller
from drgreen_poller.sandbox.world.model import Strain
from drgreen_poller.sandbox.world.reports import Window
from tests.conftest import data_of, error_of

START = datetime(2026, 11, 23, 10, tzinfo=UTC)  # the fake clock's start, a Monday
NOT_AUTHORIZED = b'{"message":"User is not authorized","error":"Unauthorized","statusCode":401}'
DATES = (("startDate", "2026-11-01"), ("endDate", "2026-11-30"))
MISSING_DATES = (
    "startdate must be a valid date. ex: YYYY-MM-DD or MM-DD-YYYY, startDate should not be "
    "empty, endDate must be a valid date. ex: YYYY-MM-DD or MM-DD-YYYY, endDate should not be "
    "empty"
)


@pytest.fixture
def strain(box: LocalSandbox) -> Strain:
    """A strain stocked in GBR, 10 a gram (6 wholesale)."""
    return box.state.catalogue.create(
        "Kush", retail_price=10, wholesale_price=6, locations={"GBR": 500, "PRT": 500}
    )


class TestWindow:
    @pytest.mark.parametrize(
        ("days", "scale"), [(0, "DAY"), (30, "DAY"), (31, "WEEK"), (90, "WEEK"), (91, "MONTH"),
                            (730, "MONTH"), (731, "YEAR")],
    )  # fmt: skip
    def test_scale_follows_the_length(self, days: int, scale: str) -> None:
        """The chart scale is picked from the window's length in days, as the backend does."""
        assert Window.of(START, START + timedelta(days=days)).scale == scale

    def test_end_day_is_included_up_to_the_next_midnight(self) -> None:
        """The window runs from the start date's midnight to the midnight after the end date."""
        window = Window.of(START, START)
        assert window.holds(START.replace(hour=0))
        assert window.holds(START + timedelta(hours=14))
        assert not window.holds(START + timedelta(days=1, seconds=1))
        assert not window.holds(START - timedelta(hours=11))


class TestOrderCharts:
    async def test_orders_per_day(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """Orders created per day, named by weekday, only the days that have some."""
        state = box.state
        for days in (0, 0, 2, 40):
            state.orders.create(holder, created_at=START + timedelta(days=days))
        assert await data_of(caller, "/dapp/orders/chart-data", *DATES) == [
            {"name": "Monday", "value": 2, "date": "2026-11-23T00:00:00.000Z"},
            {"name": "Wednesday", "value": 1, "date": "2026-11-25T00:00:00.000Z"},
        ]

    async def test_weeks_months_and_years(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """Longer windows bucket by ISO week (``WEEK n``), by month and by year."""
        for days in (0, 10, 400):
            box.state.orders.create(holder, created_at=START + timedelta(days=days))
        path = "/dapp/orders/chart-data"
        weeks = await data_of(caller, path, ("startDate", "2026-11-01"), ("endDate", "2026-12-31"))
        assert weeks == [
            {"name": "WEEK 1", "value": 1, "date": "2026-11-23T00:00:00.000Z"},
            {"name": "WEEK 2", "value": 1, "date": "2026-11-30T00:00:00.000Z"},
        ]
        months = await data_of(caller, path, ("startDate", "2026-01-01"), ("endDate", "2027-12-31"))
        assert [(m["name"], m["value"]) for m in months] == [
            ("November", 1), ("December", 1), ("December", 1),
        ]  # fmt: skip
        years = await data_of(caller, path, ("startDate", "2025-01-01"), ("endDate", "2028-01-01"))
        assert [(y["name"], y["value"]) for y in years] == [(2026, 2), (2027, 1)]

    async def test_client_filter_and_breakdown(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """``clientIds`` keeps the given clients' orders; the breakdown is percent per
        approval, rounded to two places."""
        state = box.state
        orders = [state.orders.create(holder) for _ in range(3)]
        state.lifecycle.approve(orders[0].id)
        other = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        state.orders.create(holder, client_id=other.id)
        wanted = ("clientIds", f'["{orders[0].client_id}"]')
        chart = await data_of(caller, "/dapp/orders/chart-data", *DATES, wanted)
        assert chart == [{"name": "Monday", "value": 3, "date": "2026-11-23T00:00:00.000Z"}]
        shares = await data_of(caller, "/dapp/orders/status-breakdown", *DATES, wanted)
        assert shares == [{"name": "Pending", "value": 66.67}, {"name": "Verified", "value": 33.33}]

    async def test_missing_dates_are_400(self, caller: SignedCaller) -> None:
        """Both routes need startDate and endDate, with the DTO's own messages."""
        for path in ("/dapp/orders/chart-data", "/dapp/orders/status-breakdown"):
            assert await error_of(caller, path) == (400, MISSING_DATES)

    async def test_bad_client_ids_are_400(self, caller: SignedCaller) -> None:
        """``clientIds`` must be a JSON array of strings; a bad date is named."""
        status, text = await error_of(
            caller, "/dapp/orders/status-breakdown", ("startDate", "soon"), DATES[1],
            ("clientIds", "abc"),
        )  # fmt: skip
        assert status == 400
        assert text == (
            "startdate must be a valid date. ex: YYYY-MM-DD or MM-DD-YYYY, "
            "clientIds must be a JSON array of strings"
        )


class TestClientCharts:
    async def test_clients_per_day_by_country(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """New clients per day; ``countryCodes`` keeps clients shipping there."""
        state = box.state
        state.clients.create(holder, created_at=START)
        state.clients.create(holder, country_code="PRT", created_at=START + timedelta(days=1))
        state.clients.create(holder, created_at=START + timedelta(days=40))
        both = await data_of(caller, "/dapp/clients/chart-data", *DATES)
        assert [(p["name"], p["value"]) for p in both] == [("Monday", 1), ("Tuesday", 1)]
        prt = await data_of(caller, "/dapp/clients/chart-data", *DATES, ("countryCodes", '["PRT"]'))
        assert prt == [{"name": "Tuesday", "value": 1, "date": "2026-11-24T00:00:00.000Z"}]

    async def test_breakdown_by_approval(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """Percent of the window's clients per adminApproval; absent approvals are left out."""
        state = box.state
        state.clients.create(holder, admin_approval="VERIFIED")
        state.clients.create(holder, admin_approval="REJECTED")
        state.clients.create(holder, admin_approval="REJECTED")
        shares = await data_of(caller, "/dapp/clients/status-breakdown", *DATES)
        assert shares == [
            {"name": "Verified", "value": 33.33},
            {"name": "Rejected", "value": 66.67},
        ]

    async def test_bad_input_is_400(self, caller: SignedCaller) -> None:
        """Missing dates or a country list that is not JSON are 400s."""
        assert await error_of(caller, "/dapp/clients/status-breakdown") == (400, MISSING_DATES)
        status, text = await error_of(
            caller, "/dapp/clients/chart-data", *DATES, ("countryCodes", "GBR")
        )
        assert (status, text) == (400, "countryCodes must be a JSON array of strings")


class TestAnalytics:
    async def test_clients_orders_and_profit(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """``filterBy`` Client and Order count new rows; Profit sums the orders' agentProfit."""
        state = box.state
        state.orders.create(holder, items={strain.id: 3})
        state.orders.create(holder, items={strain.id: 2}, created_at=START + timedelta(days=1))
        path = "/dapp/dashboard/analytics"
        clients = await data_of(caller, path, *DATES, ("filterBy", "Client"))
        assert clients == [{"name": "Monday", "value": 1, "date": "2026-11-23T00:00:00.000Z"}]
        orders = await data_of(caller, path, *DATES, ("filterBy", "Order"))
        assert [p["value"] for p in orders] == [1, 1]
        profit = await data_of(caller, path, *DATES, ("filterBy", "Profit"))
        assert [(p["name"], p["value"]) for p in profit] == [("Monday", 12), ("Tuesday", 8)]

    async def test_bad_filter_and_dates_are_400(self, caller: SignedCaller) -> None:
        """filterBy is a required enum and the dates must be ISO 8601 strings."""
        path = "/dapp/dashboard/analytics"
        assert await error_of(caller, path, *DATES, ("filterBy", "Sales")) == (
            400,
            "filterBy must be one of the following values: Client, Order, Profit",
        )
        status, text = await error_of(caller, path, ("startDate", "May"))
        assert status == 400
        assert text.startswith(
            "startDate must be a valid ISO 8601 date string, "
            "endDate must be a valid ISO 8601 date string, endDate should not be empty, "
            "filterBy must be one of the following values: Client, Order, Profit, "
            "filterBy should not be empty, filterBy must be a string"
        )


class TestSalesAndRevenue:
    async def test_summaries_follow_the_orders(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """Revenue counts paid orders (and paid, delivered ones) at today's retail price; the
        sales funnel has a lead per client without orders and a sale per order."""
        state = box.state
        delivered = state.orders.create(holder, items={strain.id: 3})
        state.lifecycle.approve(delivered.id)
        state.lifecycle.pay(delivered.id)
        state.lifecycle.deliver(delivered.id)
        paid = state.orders.create(holder, items={strain.id: 2.5})
        state.lifecycle.pay(paid.id)
        state.orders.create(holder, items={strain.id: 7})
        state.clients.create(holder)
        state.catalogue.update(strain.id, {"retailPrice": 11})
        revenue = await data_of(caller, "/dapp/revenue/summary")
        assert revenue == {"summary": {"totalSales": 60, "totalProfit": 33}}  # 60.5 rounds even
        sales = await data_of(caller, "/dapp/sales/summary")
        assert sales == {
            "summary": {"ONGOING": 2, "LEADS": 1, "CLOSED": 1, "totalCount": 2},
            "count": 2,
        }

    async def test_revenue_chart(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """The revenue chart sums paid, delivered orders per bucket, filtered by client and
        country."""
        state = box.state
        order = state.orders.create(holder, items={strain.id: 3})
        state.lifecycle.approve(order.id)
        state.lifecycle.pay(order.id)
        state.lifecycle.deliver(order.id)
        state.orders.create(holder, items={strain.id: 5})
        path = "/dapp/revenue/chart-data"
        chart = await data_of(caller, path, *DATES, ("clientIds", f'["{order.client_id}"]'))
        assert chart == [{"name": "Monday", "value": 30, "date": "2026-11-23T00:00:00.000Z"}]
        assert await data_of(caller, path, *DATES, ("countryCodes", '["PRT"]')) == []
        assert await data_of(caller, path, *DATES, ("countryCodes", '["GBR"]')) == chart

    async def test_revenue_chart_needs_dates(self, caller: SignedCaller) -> None:
        """The revenue chart's dates are required and its token list must be JSON."""
        assert await error_of(caller, "/dapp/revenue/chart-data") == (400, MISSING_DATES)
        status, text = await error_of(caller, "/dapp/revenue/chart-data", *DATES, ("tokenIds", "1"))
        assert (status, text) == (400, "tokenIds must be a JSON array of strings")


def paid_order(box: LocalSandbox, holder: HolderInfo, strain: Strain, grams: float) -> None:
    """Create an order and pay it (4 of profit a gram)."""
    order = box.state.orders.create(holder, items={strain.id: grams})
    box.state.lifecycle.pay(order.id)


class TestManagers:
    async def test_summary_without_managers(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """With no managers every count is 0 and the holder keeps the profit; totalSales still
        counts the paid orders."""
        paid_order(box, holder, strain, 3)
        summary = await data_of(caller, "/dapp/commissions/managers/summary")
        assert summary == {
            "summary": {
                "totalAgents": 0, "activeAgents": 0, "inActiveAgents": 0, "totalSales": 30,
                "totalCommission": 0, "totalPaidCommission": 0, "totalPendingCommission": 0,
            }
        }  # fmt: skip
        assert [c.amount_in_dollar for c in box.state.commissions.of(holder)] == [12]

    async def test_managers_share_the_profit(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """A paid order's profit is shared by percent; a dissociated manager counts as
        inactive, keeps what it earned and takes no share of later payments."""
        state = box.state
        ana = state.managers.add(holder, "Ana Lima", 10)
        ben = state.managers.add(holder, "Ben Okoro", 25)
        paid_order(box, holder, strain, 10)  # 40 of profit: 4 to Ana, 10 to Ben, 26 to the holder
        state.managers.dissociate(ben.id)
        paid_order(box, holder, strain, 5)  # 20: 2 to Ana, 18 to the holder
        state.commissions.pay(state.commissions.of(holder)[0].id)
        path = "/dapp/commissions/managers/summary"
        every = (await data_of(caller, path))["summary"]
        assert (every["totalAgents"], every["activeAgents"], every["inActiveAgents"]) == (2, 1, 1)
        assert (every["totalPaidCommission"], every["totalPendingCommission"]) == (4, 12)
        assert every["totalSales"] == 150
        active = (await data_of(caller, path, ("agentStatus", "Active")))["summary"]
        assert (active["totalAgents"], active["totalCommission"]) == (1, 6)
        inactive = (await data_of(caller, path, ("agentStatus", "InActive")))["summary"]
        assert (inactive["totalAgents"], inactive["totalCommission"]) == (1, 10)
        listed = await data_of(caller, "/dapp/commissions/managers", ("orderBy", "desc"))
        totals = [
            (m["fullName"], m["totalPaidCommission"], m["totalPendingCommission"])
            for m in listed["managers"]
        ]
        assert totals == [("Ben Okoro", 0, 10), ("Ana Lima", 4, 2)]
        assert list(listed["managers"][0]) == [
            "id", "fullName", "username", "email", "phoneCode", "phoneNumber", "isActive",
            "createdAt", "updatedAt", "walletAddress", "commissionPercent",
            "totalPendingCommission", "totalPaidCommission",
        ]  # fmt: skip
        assert ana.id in {m["id"] for m in listed["managers"]}

    async def test_list_filters_and_counts(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, strain: Strain
    ) -> None:
        """agentStatus and search filter the list; a manager without commissions is counted
        in itemCount but not listed, as the backend's join does."""
        state = box.state
        state.managers.add(holder, "Ana Lima", 10)
        paid_order(box, holder, strain, 1)
        state.managers.add(holder, "Cy New", 5)
        state.managers.dissociate(state.managers.add(holder, "Di Gone", 5).id)  # earned nothing
        path = "/dapp/commissions/managers"
        data = await data_of(caller, path, ("agentStatus", "Active"))
        assert [m["fullName"] for m in data["managers"]] == ["Ana Lima"]
        assert data["pageMetaDto"]["itemCount"] == 2
        assert (await data_of(caller, path, ("search", "LIMA")))["pageMetaDto"]["itemCount"] == 1
        inactive = await data_of(caller, path, ("agentStatus", "InActive"))
        assert inactive["managers"] == []

    async def test_list_bad_input(self, caller: SignedCaller) -> None:
        """agentStatus and take are validated; the empty list pages like every list."""
        data = await data_of(caller, "/dapp/commissions/managers", ("take", "5"))
        assert data == {
            "managers": [],
            "pageMetaDto": {
                "page": 1, "take": "5", "itemCount": 0, "pageCount": 0,
                "hasPreviousPage": False, "hasNextPage": False,
            },
        }  # fmt: skip
        status, text = await error_of(
            caller, "/dapp/commissions/managers", ("take", "0"), ("agentStatus", "Gone")
        )
        assert (status, text) == (
            400,
            "take must not be less than 1, "
            "agentStatus must be one of the following values: Active, InActive",
        )

    async def test_summary_ignores_unknown_status(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller
    ) -> None:
        """The summary's agentStatus is a bare query parameter: an unknown value counts all."""
        box.state.managers.add(holder, "Ana Lima", 10)
        path = "/dapp/commissions/managers/summary"
        summary = (await data_of(caller, path, ("agentStatus", "Whatever")))["summary"]
        assert summary["totalAgents"] == 1


NEW_GETS = (
    "/dapp/orders/chart-data", "/dapp/orders/status-breakdown", "/dapp/clients/chart-data",
    "/dapp/clients/status-breakdown", "/dapp/dashboard/analytics", "/dapp/revenue/summary",
    "/dapp/revenue/chart-data", "/dapp/sales/summary", "/dapp/commissions/managers/summary",
    "/dapp/commissions/managers", "/dapp/client/00000000-0000-4000-8000-000000000000/orders",
    "/dapp/client/00000000-0000-4000-8000-000000000000/transactions",
)  # fmt: skip


class TestGuard:
    @pytest.mark.parametrize("path", NEW_GETS)
    async def test_unsigned_get_is_401(self, box: LocalSandbox, path: str) -> None:
        """Every new route runs behind the API-key guard: no headers, the guard's 401."""
        answer = await box.raw("GET", path)
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    @pytest.mark.parametrize("path", NEW_GETS)
    async def test_wrongly_signed_get_is_401(self, caller: SignedCaller, path: str) -> None:
        """A signature over another payload gets the same 401."""
        answer = await caller.call("GET", path, signed_payload='{"other":1}')
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)

    async def test_patch_signed_over_another_body_is_401(
        self, box: LocalSandbox, holder: HolderInfo, caller: SignedCaller, clock: FakeClock
    ) -> None:
        """A PATCH whose signature covers a different body is refused and changes nothing."""
        client = box.state.clients.create(holder)
        path = f"/dapp/clients/{client.id}"
        answer = await caller.call("PATCH", path, body={"firstName": "Eve"}, signed_payload="{}")
        assert (answer.status, answer.body) == (401, NOT_AUTHORIZED)
        assert client.first_name != "Eve"
        unsigned = await box.raw("PATCH", path, data=b'{"firstName":"Eve"}')
        assert unsigned.status == 401
