"""The sandbox's strain, commission and dashboard endpoints."""

from __future__ import annotations

import pytest

from drgreen_poller.sandbox import HolderInfo, LocalSandbox


class TestStrains:
    async def test_list_per_country(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Only strains active and available at the country are listed, with that location."""
        state = box.state
        both = state.catalogue.create("Both", locations={"GBR": 300, "ZAF": 100})
        state.catalogue.create("Africa", locations={"ZAF": 50})
        closed = state.catalogue.create("Closed", locations={"GBR": 10})
        state.catalogue.set_location(closed.id, "GBR", {"isAvailable": False})
        retired = state.catalogue.create("Retired", locations={"GBR": 10})
        state.catalogue.update(retired.id, {"isActive": False})
        state.catalogue.remove(state.catalogue.create("Gone", locations={"GBR": 1}).id)
        answer = await box.caller(holder).get("/dapp/strains", ("countryCode", "GBR"))
        strains = answer.json()["data"]["strains"]
        assert [s["id"] for s in strains] == [both.id]
        assert strains[0]["strainLocations"] == [
            {"isActive": True, "isAvailable": True, "stockQuantity": 300}
        ]
        assert strains[0]["stockQuantity"] == 400
        assert strains[0]["imageUrl"].startswith("https://prod-profiles-backend.s3.amazonaws.com/")

    @pytest.mark.parametrize("code", ["GB", "gbr", "GBRX"])
    async def test_country_code_must_be_alpha3(
        self, box: LocalSandbox, holder: HolderInfo, code: str
    ) -> None:
        """A country code that is not three uppercase letters is a 400."""
        answer = await box.caller(holder).get("/dapp/strains", ("countryCode", code))
        assert answer.status == 400
        assert answer.json()["message"] == "countryCode must be a valid ISO31661 Alpha3 code"

    async def test_search_levels_and_popularity_order(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """search, thcLevels and ``order=popularity`` narrow and sort the list."""
        state = box.state
        calm = state.catalogue.create(
            "Calm", locations={"GBR": 1}, fields={"thc": 12, "popularity": 9}
        )
        strong = state.catalogue.create(
            "Strong", locations={"GBR": 1}, fields={"thc": 25, "popularity": 3, "flavour": "Citrus"}
        )
        caller = box.caller(holder)

        async def names(*pairs: tuple[str, str]) -> list[str]:
            answer = await caller.get("/dapp/strains", ("countryCode", "GBR"), *pairs)
            return [s["name"] for s in answer.json()["data"]["strains"]]

        assert await names(("search", "citrus")) == [strong.name]
        assert await names(("thcLevels", '["Low"]')) == [calm.name]
        assert await names(("order", "popularity"), ("orderBy", "desc")) == ["Calm", "Strong"]
        assert await names(("feelings", '["Relaxed"]')) == []

    async def test_detail_per_country(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """With a country, detail's top-level flags and stock are that location's."""
        strain = box.state.catalogue.create("Kush", locations={"GBR": 300, "ZAF": 5})
        box.state.catalogue.set_location(strain.id, "ZAF", {"isAvailable": False})
        caller = box.caller(holder)
        here = (await caller.get(f"/dapp/strains/{strain.id}", ("countryCode", "ZAF"))).json()[
            "data"
        ]
        assert (here["stockQuantity"], here["isAvailable"]) == (5, False)
        assert here["strainLocations"][0]["location"]["countryCode"] == "ZAF"
        anywhere = (await caller.get(f"/dapp/strains/{strain.id}", strainId=strain.id)).json()[
            "data"
        ]
        assert (anywhere["stockQuantity"], anywhere["isAvailable"]) == (305, True)
        assert anywhere["strainId"] == "K"

    async def test_unknown_strain_is_500(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """An unknown strain is the snapshot's 500 ``strain not found``."""
        answer = await box.caller(holder).get("/dapp/strains/nope", strainId="nope")
        assert (answer.status, answer.json()["message"]) == (500, "strain not found")


class TestCommissions:
    async def test_paying_an_order_accrues_commission(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A paid order adds a PENDING commission of its agentProfit, in USD and ETH."""
        state = box.state
        strain = state.catalogue.create(
            "Kush", retail_price=10, wholesale_price=6, locations={"GBR": 9}
        )
        order = state.orders.create(holder, items={strain.id: 3.125}, admin_approval="VERIFIED")
        state.lifecycle.pay(order.id)
        state.commissions.accrue(holder, 3.5)
        state.commissions.pay(state.commissions.accrue(holder, 1.25).id)
        state.commissions.set_eth_rate(0.0003)
        answer = await box.caller(holder).get("/dapp/commissions/summary")
        assert answer.json()["data"] == {
            "commissionSummary": {
                "PENDING": {"amountInDollar": 16, "amountInEth": 0.0048},
                "PAID": {"amountInDollar": 1.25, "amountInEth": 0.000375},
                "totalInDollar": 17.25,
            }
        }

    async def test_list_and_filter(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The list shows each commission with its order; ``paymentStatus`` filters it."""
        state = box.state
        order = state.orders.create(holder, admin_approval="VERIFIED", payment_status="PAID")
        state.lifecycle.deliver(order.id)
        commission = state.commissions.of_order(order.id)
        assert commission is not None
        state.commissions.pay(commission.id)
        state.commissions.accrue(holder, 2)
        caller = box.caller(holder)
        paid = (await caller.get("/dapp/commissions", ("paymentStatus", "PAID"))).json()["data"]
        item = paid["commissions"][0]
        assert (item["id"], item["isPayable"], item["order"]["orderStatus"]) == (
            commission.id,
            True,
            "DELIVERED",
        )
        assert item["order"]["orderLogs"][0]["activity"] == "Delivered"
        assert paid["pageMetaDto"]["itemCount"] == 1

    async def test_dashboard(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The dashboard counts clients, orders and products and sums profits."""
        state = box.state
        strain = state.catalogue.create(
            "Kush", retail_price=10, wholesale_price=6, locations={"GBR": 9}
        )
        state.orders.create(
            holder, items={strain.id: 1}, admin_approval="VERIFIED", payment_status="PAID"
        )
        state.orders.create(holder, items={strain.id: 2}, admin_approval="REJECTED")
        data = (await box.caller(holder).get("/dapp/dashboard/summary")).json()["data"]
        assert data == {
            "clientCount": 1,
            "orderCount": 2,
            "productCount": 1,
            "estimateProfit": 4,
            "totalProfit": 4,
            "profitRecieved": 0,
        }


class TestStrainFilters:
    async def test_helps_with_planets_and_bad_levels(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """helpsWith and planetNames match terms; an unknown THC level is a 400."""
        planet = [{"planetDetailId": 1, "planetDetail": {"name": "Mars", "planetNo": 1}}]
        sleepy = box.state.catalogue.create(
            "Sleepy",
            locations={"GBR": 1},
            fields={"helpsWith": "Insomnia, Pain", "planets": planet},
        )
        box.state.catalogue.create("Other", locations={"GBR": 1})
        caller = box.caller(holder)
        helps = await caller.get("/dapp/strains", ("helpsWith", '["insomnia"]'))
        assert [s["id"] for s in helps.json()["data"]["strains"]] == [sleepy.id]
        planets = await caller.get("/dapp/strains", ("planetNames", '["Mars"]'))
        assert [s["id"] for s in planets.json()["data"]["strains"]] == [sleepy.id]
        bad = await caller.get("/dapp/strains", ("thcLevels", '["Extreme"]'))
        assert (
            bad.json()["message"]
            == "thcLevels must be one of the following values: None, Low, Mid, High"
        )
