"""The sandbox's control API: settings, its JSON errors, reset, reading entities back, and the
NFT's commission managers."""

from __future__ import annotations

from typing import Any

import pytest

from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.conftest import control_json

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


class TestSettingsAndErrors:
    async def test_settings(self, box: LocalSandbox) -> None:
        """Settings default to the source snapshot and reject unknown values."""
        assert await control_json(box, "GET", "/settings") == {
            "payment_vocabulary": "source",
            "order_detail_admin_approval": False,
            "unknown_order": "null",
            "error_shape": "source",
        }
        bad = await box.control("PATCH", "/settings", {"unknown_order": "410"})
        assert bad.json() == {"error": "unknown_order must be one of: null, 404 (got '410')"}
        typo = await box.control("PATCH", "/settings", {"error_style": "docs"})
        assert typo.status == 400
        assert "unknown setting 'error_style'" in typo.json()["error"]

    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "error"),
        [
            ("GET", f"/orders/{UNKNOWN_ID}", None, 404, f"unknown order '{UNKNOWN_ID}'"),
            ("POST", "/holders/nobody/orders", {}, 404, "unknown holder 'nobody'"),
            ("GET", "/clients/nope", None, 404, "unknown client 'nope'"),
            ("POST", "/commissions/nope/pay", None, 404, "unknown commission 'nope'"),
            ("POST", "/holders/h1/orders", {"count": "9"}, 400, "count must be an integer"),
            (
                "POST",
                "/holders/h1/orders",
                {"colour": 1},
                400,
                "an order: unknown field(s) 'colour'",
            ),
            ("PUT", "/eth-rate", {"ethPerUsd": 0}, 400, "ethPerUsd must be greater than 0"),
            ("POST", "/strains", {"name": "x", "locations": 5}, 400, "locations must be an array"),
            (
                "POST",
                "/holders/h1/orders",
                {"count": 2, "createdAt": "9999-12-31T23:59:59Z", "spacing_s": 60},
                500,
                "internal error: OverflowError",
            ),
            ("GET", "/nothing", None, 404, "no control route GET /_sandbox/nothing"),
            ("DELETE", "/settings", None, 405, "DELETE is not allowed on /_sandbox/settings"),
        ],
    )
    async def test_errors_are_json(
        self,
        box: LocalSandbox,
        holder: HolderInfo,
        method: str,
        path: str,
        body: Any,
        status: int,
        error: str,
    ) -> None:
        """Every control error is ``{"error": ...}`` with a specific message and status."""
        answer = await box.control(method, path, body)
        assert answer.status == status
        assert error in answer.json()["error"]

    async def test_invalid_json_body(self, box: LocalSandbox) -> None:
        """A body that is not a JSON object is a 400."""
        async with box.session.post(box.origin + "/_sandbox/holders", data=b"[1") as response:
            assert response.status == 400
            assert "not valid JSON" in (await response.json())["error"]
        listed = await box.control("POST", "/holders", ["h"])
        assert listed.json() == {"error": "the request body must be a JSON object"}

    async def test_reset_keeps_settings(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Reset empties the world, faults and counts but keeps the settings."""
        box.state.orders.create(holder)
        box.state.update_settings({"error_shape": "docs"})
        box.state.traffic.add_fault({"kind": "slow"})
        reset = await control_json(box, "POST", "/reset")
        assert reset["settings"]["error_shape"] == "docs"
        assert box.state.holders == {}
        assert box.state.tables.orders == {}
        assert box.state.traffic.faults.active() == []


class TestReadRoutes:
    async def test_listings(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Every entity can be read back through the control API."""
        strain = box.state.catalogue.create("Kush")
        order = box.state.lifecycle.pay(box.state.orders.create(holder).id)
        commission = box.state.commissions.of_order(order.id)
        assert commission is not None
        assert (await control_json(box, "GET", "/holders/h1"))["orders"] == 1
        assert (await control_json(box, "GET", "/eth-rate"))["ethPerUsd"] > 0
        assert [s["id"] for s in (await control_json(box, "GET", "/strains"))["strains"]] == [
            strain.id
        ]
        assert (await control_json(box, "GET", f"/strains/{strain.id}"))["name"] == "Kush"
        assert len((await control_json(box, "GET", "/holders/h1/clients"))["clients"]) == 1
        assert len((await control_json(box, "GET", "/holders/h1/orders"))["orders"]) == 1
        listed = await control_json(box, "GET", "/holders/h1/commissions")
        assert listed["commissions"][0]["orderId"] == order.id
        one = await control_json(box, "GET", f"/commissions/{commission.id}")
        assert one["amountInDollar"] == order.agent_profit

    async def test_order_items_and_actions(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Items may be a mapping; bad items and unknown actions are 400s."""
        strain = box.state.catalogue.create("Kush", retail_price=4)
        made = await control_json(box, "POST", "/holders/h1/orders", {"items": {strain.id: 2}}, 201)
        assert made["totalAmount"] == 8
        bad = await box.control("POST", "/holders/h1/orders", {"items": []})
        assert "items must be a non-empty array" in bad.json()["error"]
        unknown = await box.control("POST", f"/orders/{made['id']}/teleport")
        assert "unknown order action 'teleport'" in unknown.json()["error"]
        forced = await control_json(
            box, "POST", f"/orders/{made['id']}/payment-status", {"paymentStatus": "ON_HOLD"}
        )
        assert forced["paymentStatus"] == "ON_HOLD"
        assert (await box.control("DELETE", "/faults/abc")).status == 400


class TestManagers:
    async def test_add_list_and_dissociate(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Managers are added with a profit share, listed, and dissociated."""
        made = await control_json(
            box,
            "POST",
            "/holders/h1/managers",
            {"fullName": "Ana Lima", "commissionPercent": 10},
            201,
        )
        assert (made["fullName"], made["commissionPercent"], made["associated"]) == (
            "Ana Lima", 10, True,
        )  # fmt: skip
        assert made["username"] == "ana.lima.1"
        listed = await control_json(box, "GET", "/holders/h1/managers")
        assert [m["id"] for m in listed["managers"]] == [made["id"]]
        gone = await control_json(box, "POST", f"/managers/{made['id']}/dissociate")
        assert gone["associated"] is False

    async def test_bad_managers_are_refused(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """An empty name, a share outside 0-100, shares over 100 in all, an unknown field or an
        unknown manager are refused with a message."""
        cases = [
            ({"fullName": " ", "commissionPercent": 1}, "fullName must not be empty"),
            ({"fullName": "A", "commissionPercent": 101}, "between 0 and 100"),
            ({"fullName": "A", "commissionPercent": 1, "x": 1}, "unknown field(s) 'x'"),
        ]
        for body, text in cases:
            answer = await box.control("POST", "/holders/h1/managers", body)
            assert answer.status == 400
            assert text in answer.json()["error"]
        await control_json(
            box, "POST", "/holders/h1/managers", {"fullName": "A", "commissionPercent": 60}, 201
        )
        over = await box.control(
            "POST", "/holders/h1/managers", {"fullName": "B", "commissionPercent": 41}
        )
        assert "more than 100 percent" in over.json()["error"]
        missing = await box.control("POST", f"/managers/{UNKNOWN_ID}/dissociate")
        assert missing.status == 404
