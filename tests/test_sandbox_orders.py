"""The sandbox's order endpoints: envelope, pagination, filters, detail variants and checkout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.world.model import iso

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def make_orders(box: LocalSandbox, holder: HolderInfo, clock: FakeClock, count: int) -> list[str]:
    """``count`` orders one minute apart, oldest first."""
    ids = []
    for _ in range(count):
        ids.append(box.state.orders.create(holder).id)
        clock.advance(60)
    return ids


class TestEnvelopeAndPagination:
    async def test_default_page_is_ascending_with_numeric_meta(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Without a query: oldest first, take 10, and page/take as the numbers 1 and 10."""
        ids = make_orders(box, holder, clock, 12)
        answer = (await box.caller(holder).get("/dapp/orders")).json()
        assert set(answer) == {"success", "statusCode", "message", "data"}
        assert (answer["statusCode"], answer["message"]) == (200, "Success")
        assert [o["id"] for o in answer["data"]["orders"]] == ids[:10]
        assert answer["data"]["pageMetaDto"] == {
            "page": 1,
            "take": 10,
            "itemCount": 12,
            "pageCount": 2,
            "hasPreviousPage": False,
            "hasNextPage": True,
        }

    async def test_supplied_page_and_take_are_echoed_as_strings(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """page/take come back as the raw query strings; orderBy=desc gives newest first."""
        ids = make_orders(box, holder, clock, 5)
        answer = await box.caller(holder).get(
            "/dapp/orders", ("orderBy", "desc"), ("take", "2"), ("page", "2")
        )
        data = answer.json()["data"]
        assert [o["id"] for o in data["orders"]] == [ids[2], ids[1]]
        assert data["pageMetaDto"] == {
            "page": "2",
            "take": "2",
            "itemCount": 5,
            "pageCount": 3,
            "hasPreviousPage": True,
            "hasNextPage": True,
        }

    async def test_page_past_the_end_is_empty(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """A page beyond the last is empty with hasNextPage false."""
        make_orders(box, holder, clock, 3)
        answer = await box.caller(holder).get("/dapp/orders", ("take", "2"), ("page", "9"))
        data = answer.json()["data"]
        assert data["orders"] == []
        assert (data["pageMetaDto"]["pageCount"], data["pageMetaDto"]["hasNextPage"]) == (2, False)

    async def test_empty_list_has_zero_pages(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """With no items, pageCount is 0 and both flags are false."""
        data = (await box.caller(holder).get("/dapp/orders")).json()["data"]
        meta = data["pageMetaDto"]
        assert (meta["itemCount"], meta["pageCount"]) == (0, 0)
        assert (meta["hasPreviousPage"], meta["hasNextPage"]) == (False, False)

    @pytest.mark.parametrize(
        ("pairs", "message"),
        [
            ([("take", "0")], "take must not be less than 1"),
            ([("page", "1.5")], "page must be an integer number"),
            (
                [("take", "abc")],
                "take must not be less than 1, take must be an integer number",
            ),
            ([("orderBy", "DESC")], "orderBy must be one of the following values: asc, desc"),
            (
                [("status", "SENT")],
                "status must be one of the following values: PENDING, PROCESSING, SHIPPED, "
                "DELIVERED, CANCELLED",
            ),
            ([("clientIds", "not-json")], "clientIds must be a JSON array of strings"),
            ([("startDate", "yesterday")], "startDate must be a valid ISO 8601 date string"),
        ],
    )
    async def test_invalid_query_is_400(
        self, box: LocalSandbox, holder: HolderInfo, pairs: list[tuple[str, str]], message: str
    ) -> None:
        """Invalid parameters get 400 in the interceptor shape with class-validator messages."""
        answer = await box.caller(holder).get("/dapp/orders", *pairs)
        assert answer.status == 400
        body = answer.json()
        assert body["message"] == message
        assert (body["success"], body["errorCode"], body["error"]) == (False, 400, "Bad Request")
        assert body["urlMethod"] == "GET"
        assert body["url"].startswith("/api/v1/dapp/orders?")

    async def test_take_accepts_js_numbers(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``take=1e1`` is 10 to JavaScript's Number(), and echoed raw."""
        answer = await box.caller(holder).get("/dapp/orders", ("take", "1e1"))
        assert answer.json()["data"]["pageMetaDto"]["take"] == "1e1"


class TestOrderList:
    async def test_list_item_shape(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """List items carry all three status fields and no updatedAt."""
        order = box.state.orders.create(holder)
        item = (await box.caller(holder).get("/dapp/orders")).json()["data"]["orders"][0]
        assert list(item) == [
            "id", "invoiceNumber", "orderStatus", "adminApproval", "paymentStatus",
            "totalAmount", "transactions", "createdAt", "nft", "client", "_count",
            "totalQuantity", "totalPrice",
        ]  # fmt: skip
        assert (
            item["invoiceNumber"]
            == f"DG_{int(order.created_at.timestamp() * 1000)}{order.client_id}"
        )
        assert item["nft"] == {"tokenId": holder.nft.token_id, "ownerId": holder.nft.owner_id}  # type: ignore[union-attr]

    async def test_filters_by_status_fields(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``status``, ``paymentStatus`` and ``adminApproval`` filter their fields."""
        state = box.state
        pending = state.orders.create(holder)
        shipped = state.orders.create(holder, admin_approval="VERIFIED", order_status="SHIPPED")
        paid = state.orders.create(holder, admin_approval="VERIFIED", payment_status="PAID")
        caller = box.caller(holder)

        async def ids(*pairs: tuple[str, str]) -> list[str]:
            return [
                o["id"] for o in (await caller.get("/dapp/orders", *pairs)).json()["data"]["orders"]
            ]

        assert await ids(("status", "SHIPPED")) == [shipped.id]
        assert await ids(("paymentStatus", "PAID")) == [paid.id]
        assert await ids(("adminApproval", "PENDING")) == [pending.id]

    async def test_verified_filter_sorts_by_verified_at_with_logs(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Filtering VERIFIED sorts by verifiedAt and adds ``orderLogs``."""
        first, second = make_orders(box, holder, clock, 2)
        box.state.lifecycle.approve(second)
        clock.advance(5)
        box.state.lifecycle.approve(first)
        answer = await box.caller(holder).get("/dapp/orders", ("adminApproval", "VERIFIED"))
        items = answer.json()["data"]["orders"]
        assert [o["id"] for o in items] == [second, first]
        assert items[0]["orderLogs"] == [
            {"activity": "Approved", "createdAt": iso(clock.now() - timedelta(seconds=5))}
        ]
        assert "rejectionNote" not in items[0]

    async def test_missing_sort_values_come_last(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Orders forced to VERIFIED without a verifiedAt sort last, in either direction."""
        forced, approved = make_orders(box, holder, clock, 2)
        box.state.orders.patch(forced, {"adminApproval": "VERIFIED"})
        box.state.lifecycle.approve(approved)
        caller = box.caller(holder)
        for direction in ("asc", "desc"):
            answer = await caller.get(
                "/dapp/orders", ("adminApproval", "VERIFIED"), ("orderBy", direction)
            )
            assert [o["id"] for o in answer.json()["data"]["orders"]] == [approved, forced]

    async def test_rejected_filter_adds_rejection_note(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Filtering REJECTED adds ``rejectionNote``."""
        order = box.state.orders.create(holder)
        box.state.lifecycle.reject(order.id, "out of region")
        answer = await box.caller(holder).get("/dapp/orders", ("adminApproval", "REJECTED"))
        assert answer.json()["data"]["orders"][0]["rejectionNote"] == "out of region"

    async def test_filters_by_dates_clients_and_name(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Date windows include endDate's whole day; clientIds and name search narrow too."""
        state = box.state
        old = state.orders.create(holder, created_at=clock.now() - timedelta(days=3))
        jane = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        state.clients.patch(jane.id, {"firstName": "Zoë", "lastName": "Quux"})
        new = state.orders.create(holder, client_id=jane.id)
        caller = box.caller(holder)
        day = (clock.now() - timedelta(days=3)).date().isoformat()
        by_date = await caller.get("/dapp/orders", ("startDate", day), ("endDate", day))
        assert [o["id"] for o in by_date.json()["data"]["orders"]] == [old.id]
        by_client = await caller.get("/dapp/orders", ("clientIds", f'["{jane.id}"]'))
        assert [o["id"] for o in by_client.json()["data"]["orders"]] == [new.id]
        by_name = await caller.get("/dapp/orders", ("search", "zoë q"), ("searchBy", "clientName"))
        assert [o["id"] for o in by_name.json()["data"]["orders"]] == [new.id]

    async def test_holders_see_only_their_orders(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Lists are scoped to the key's NFT."""
        other = box.state.create_holder("h2")
        box.state.orders.create(other)
        answer = await box.caller(holder).get("/dapp/orders")
        assert answer.json()["data"]["orders"] == []

    async def test_summary_counts_by_approval(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The summary counts orders by adminApproval."""
        state = box.state
        state.orders.create(holder)
        state.orders.create(holder, admin_approval="VERIFIED")
        state.orders.create(holder, admin_approval="REJECTED")
        state.orders.patch(state.orders.create(holder).id, {"adminApproval": "ON_HOLD"})
        answer = await box.caller(holder).get("/dapp/orders/summary")
        assert answer.json()["data"] == {
            "summary": {"PENDING": 1, "VERIFIED": 1, "REJECTED": 1, "totalCount": 4}
        }

    async def test_recent_is_newest_first_without_approval(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """``recentOrders`` ignore orderBy, newest first, with updatedAt and no adminApproval."""
        ids = make_orders(box, holder, clock, 3)
        answer = await box.caller(holder).get(
            "/dapp/orders/recent", ("orderBy", "asc"), ("take", "2")
        )
        data = answer.json()["data"]
        assert [o["id"] for o in data["recentOrders"]] == [ids[2], ids[1]]
        item = data["recentOrders"][0]
        assert "adminApproval" not in item
        assert item["shippings"] == item["client"]["shippings"]
        assert list(item) == [
            "id", "createdAt", "updatedAt", "paymentStatus", "orderStatus", "client",
            "totalQuantity", "shippings", "totalPrice",
        ]  # fmt: skip


class TestOrderDetail:
    async def test_detail_shape_without_approval(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Detail has lines, deliveryFee and updatedAt but no adminApproval by default."""
        strain = box.state.catalogue.create(
            "Kush", retail_price=5, wholesale_price=4, locations={"GBR": 50}
        )
        order = box.state.orders.create(holder, items={strain.id: 10})
        answer = await box.caller(holder).get(f"/dapp/orders/{order.id}", orderId=order.id)
        detail = answer.json()["data"]["orderDetails"]
        assert "adminApproval" not in detail
        assert detail["orderLines"] == [
            {
                "quantity": 10,
                "strain": {
                    "id": strain.id, "name": "Kush", "imageUrl": "dr-green-strains/kush.png",
                    "description": strain.description, "wholeSalePrice": 4, "retailPrice": 5,
                },
                "productAmount": 50,
                "productProfit": 10,
            }
        ]  # fmt: skip
        assert (detail["totalAmount"], detail["deliveryFee"], detail["totalProfit"]) == (50, 6, 10)
        assert (detail["totalOrdered"], detail["totalQuantity"]) == (1, 10)

    async def test_switch_adds_approval_to_detail(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """With order_detail_admin_approval, detail carries adminApproval and verifiedAt."""
        box.state.update_settings({"order_detail_admin_approval": True})
        order = box.state.lifecycle.approve(box.state.orders.create(holder).id)
        answer = await box.caller(holder).get(f"/dapp/orders/{order.id}", orderId=order.id)
        detail = answer.json()["data"]["orderDetails"]
        assert (detail["adminApproval"], detail["verifiedAt"]) == (
            "VERIFIED",
            iso(order.updated_at),
        )

    async def test_unknown_order_is_null_by_default(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """An unknown id answers 200 with ``orderDetails: null``."""
        answer = await box.caller(holder).get(f"/dapp/orders/{UNKNOWN_ID}", orderId=UNKNOWN_ID)
        assert answer.status == 200
        assert answer.json()["data"] == {"orderDetails": None}

    async def test_unknown_order_can_be_404(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """With unknown_order=404 an unknown id is a 404 error."""
        box.state.update_settings({"unknown_order": "404"})
        answer = await box.caller(holder).get(f"/dapp/orders/{UNKNOWN_ID}", orderId=UNKNOWN_ID)
        assert answer.status == 404
        assert answer.json()["message"] == "Order not found"

    async def test_non_uuid_order_id_is_400(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A malformed id is a 400 ``orderId must be a UUID``."""
        answer = await box.caller(holder).get("/dapp/orders/abc", orderId="abc")
        assert answer.status == 400
        assert answer.json()["url"] == "/api/v1/dapp/orders/abc"
        assert answer.json()["message"] == "orderId must be a UUID"

    async def test_detail_is_not_scoped_to_the_nft(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Like the snapshot, order detail does not re-check the key's NFT."""
        foreign = box.state.orders.create(box.state.create_holder("h2"))
        answer = await box.caller(holder).get(f"/dapp/orders/{foreign.id}", orderId=foreign.id)
        assert answer.json()["data"]["orderDetails"]["id"] == foreign.id

    async def test_client_scoped_detail(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``/clients/{clientId}/orders/{orderId}`` finds only the client's own orders."""
        order = box.state.orders.create(holder)
        other = box.state.clients.create(holder)
        caller = box.caller(holder)
        mine = await caller.get(
            f"/dapp/clients/{order.client_id}/orders/{order.id}",
            clientId=order.client_id, orderId=order.id,
        )  # fmt: skip
        theirs = await caller.get(
            f"/dapp/clients/{other.id}/orders/{order.id}", clientId=other.id, orderId=order.id
        )
        assert mine.json()["data"]["orderDetails"]["id"] == order.id
        assert theirs.json()["data"] == {"orderDetails": None}

    async def test_docs_error_shape(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """With error_shape=docs, validation errors list their messages under ``data``."""
        box.state.update_settings({"error_shape": "docs"})
        answer = await box.caller(holder).get("/dapp/orders", ("take", "0"), ("page", "0"))
        assert answer.json() == {
            "success": False,
            "statusCode": 400,
            "message": "Validation failed",
            "data": ["page must not be less than 1", "take must not be less than 1"],
        }
