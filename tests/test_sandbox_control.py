"""The sandbox's control API: holders, strains, clients, and orders with their lifecycle actions."""

from __future__ import annotations

from drgreen_poller.clock import SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.conftest import control_json


class TestHolders:
    async def test_create_list_revoke(self, box: LocalSandbox) -> None:
        """Holders get a key pair once; listings hide the secret; revoked keys are marked."""
        created = await control_json(box, "POST", "/holders", {"name": "h9"}, 201)
        assert created["secret_key"]
        assert created["api_key"].startswith("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K")
        assert set(created["nft"]) == {"id", "tokenId", "ownerId"}
        listed = await control_json(box, "GET", "/holders")
        assert "secret_key" not in listed["holders"][0]
        revoked = await control_json(box, "POST", "/holders/h9/revoke")
        assert revoked["revoked"] is True
        duplicate = await box.control("POST", "/holders", {"name": "h9"})
        assert (duplicate.status, duplicate.json()) == (
            409,
            {"error": "holder 'h9' already exists"},
        )

    async def test_revoked_key_is_restored(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``POST /holders/{name}/restore`` makes a revoked key work again, unchanged."""
        await control_json(box, "POST", "/holders/h1/revoke")
        assert (await box.caller(holder).get("/dapp/orders/summary")).status == 401
        restored = await control_json(box, "POST", "/holders/h1/restore")
        assert restored["revoked"] is False
        assert restored["api_key"] == holder.credentials.api_key
        assert (await box.caller(holder).get("/dapp/orders/summary")).status == 200
        missing = await box.control("POST", "/holders/nobody/restore")
        assert missing.status == 404

    async def test_holder_without_nft(self, box: LocalSandbox) -> None:
        """``nft: false`` issues a key whose holder has no primary NFT."""
        created = await control_json(box, "POST", "/holders", {"name": "bare", "nft": False}, 201)
        assert created["nft"] is None


class TestStrains:
    async def test_create_patch_locations_remove(self, box: LocalSandbox) -> None:
        """Strains are created with locations, changed field by field, and removed."""
        body = {
            "name": "Lemon Haze", "retailPrice": 12, "wholeSalePrice": 7, "type": "Sativa",
            "locations": [{"countryCode": "GBR", "stockQuantity": 300}],
        }  # fmt: skip
        strain = await control_json(box, "POST", "/strains", body, 201)
        assert (strain["type"], strain["strainLocations"][0]["stockQuantity"]) == ("Sativa", 300)
        sid = strain["id"]
        patched = await control_json(box, "PATCH", f"/strains/{sid}", {"retailPrice": 13.5})
        assert patched["retailPrice"] == 13.5
        moved = await control_json(
            box, "PATCH", f"/strains/{sid}/locations/ZAF", {"stockQuantity": 4}
        )
        assert [loc["location"]["countryCode"] for loc in moved["strainLocations"]] == [
            "GBR",
            "ZAF",
        ]
        removed = await control_json(box, "DELETE", f"/strains/{sid}")
        assert removed["removed"] is True
        assert (await box.control("PATCH", f"/strains/{sid}", {"retailPrice": 1})).status == 404

    async def test_wrong_field_types(self, box: LocalSandbox) -> None:
        """Fields of the wrong type or unknown fields are 400s naming the field."""
        strain = box.state.catalogue.create("X")
        bad_price = await box.control("PATCH", f"/strains/{strain.id}", {"retailPrice": "1"})
        assert bad_price.json() == {"error": "retailPrice must be a number"}
        unknown = await box.control("PATCH", f"/strains/{strain.id}", {"colour": "green"})
        assert unknown.status == 400
        assert "'colour' cannot be set" in unknown.json()["error"]


class TestClients:
    async def test_create_one_with_identity(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A client can be created in any KYC state with given names, backdated."""
        body = {
            "firstName": "Zoë", "email": "zoe@example.com", "kyc": True,
            "adminApproval": "VERIFIED", "createdAt": "2026-01-02T03:04:05.678Z",
            "countryCode": "ZAF",
        }  # fmt: skip
        client = await control_json(box, "POST", "/holders/h1/clients", body, 201)
        assert (client["firstName"], client["email"], client["isKYCVerified"]) == (
            "Zoë",
            "zoe@example.com",
            True,
        )
        assert (client["isActive"], client["verifiedAt"]) == (True, "2026-01-02T03:04:05.678Z")
        assert client["shippings"][0]["countryCode"] == "ZAF"

    async def test_bulk_clients(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``count`` creates that many clients with unique emails and returns their ids."""
        created = await control_json(box, "POST", "/holders/h1/clients", {"count": 50}, 201)
        assert created["count"] == 50
        emails = {client.email for client in box.state.clients.of(holder)}
        assert len(emails) == 50

    async def test_actions_and_raw_patch(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Lifecycle actions move a client; PATCH forces raw values and bumps updatedAt."""
        client = box.state.clients.create(holder)
        kyc = await control_json(box, "POST", f"/clients/{client.id}/verify-kyc")
        assert kyc["isKYCVerified"] is True
        approved = await control_json(box, "POST", f"/clients/{client.id}/approve")
        assert (approved["adminApproval"], approved["isActive"]) == ("VERIFIED", True)
        off = await control_json(box, "POST", f"/clients/{client.id}/deactivate")
        assert off["isActive"] is False
        raw = await control_json(
            box, "PATCH", f"/clients/{client.id}", {"adminApproval": "APPROVED"}
        )
        assert raw["adminApproval"] == "APPROVED"
        unknown = await box.control("POST", f"/clients/{client.id}/promote")
        assert unknown.status == 400
        assert "unknown client action 'promote'" in unknown.json()["error"]

    async def test_identity_conflicts(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A taken email is a 409; identity fields cannot be combined with a count."""
        await control_json(box, "POST", "/holders/h1/clients", {"email": "a@example.com"}, 201)
        again = await box.control("POST", "/holders/h1/clients", {"email": "a@example.com"})
        assert (again.status, again.json()["error"]) == (409, "Client Email ID already exists")
        mixed = await box.control("POST", "/holders/h1/clients", {"email": "b@x.io", "count": 2})
        assert mixed.status == 400

    async def test_fill_cart(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The control API fills a cart without Dr Green's checks."""
        strain = box.state.catalogue.create("Kush")
        client = box.state.clients.create(holder)
        body = {"items": [{"strainId": strain.id, "quantity": 3}]}
        filled = await control_json(box, "POST", f"/clients/{client.id}/cart", body)
        assert filled["cart"] == [{"strainId": strain.id, "quantity": 3}]
        emptied = await control_json(box, "DELETE", f"/clients/{client.id}/cart")
        assert emptied["cart"] == []


class TestOrders:
    async def test_lifecycle_rules(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Fulfilment needs approval, may skip steps, and stops at DELIVERED."""
        order = await control_json(box, "POST", "/holders/h1/orders", {}, 201)
        oid = order["id"]
        early = await box.control("POST", f"/orders/{oid}/ship")
        assert early.status == 409
        assert "only apply to VERIFIED orders" in early.json()["error"]
        approved = await control_json(box, "POST", f"/orders/{oid}/approve")
        assert approved["orderLogs"][0]["activity"] == "Approved"
        assert approved["verifiedAt"] is not None
        delivered = await control_json(box, "POST", f"/orders/{oid}/deliver")
        assert delivered["orderStatus"] == "DELIVERED"
        late = await box.control("POST", f"/orders/{oid}/cancel")
        assert (late.status, late.json()["error"]) == (
            409,
            f"order {oid} is DELIVERED, which is terminal",
        )

    async def test_delete_makes_an_order_vanish(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """DELETE removes an order from the lists and from detail; a paid one is refused."""
        kept, gone = [
            (await control_json(box, "POST", "/holders/h1/orders", {}, 201))["id"] for _ in "ab"
        ]
        assert await control_json(box, "DELETE", f"/orders/{gone}") == {"deleted": gone}
        listed = await control_json(box, "GET", "/holders/h1/orders")
        assert [o["id"] for o in listed["orders"]] == [kept]
        caller = box.caller(holder)
        page = (await caller.get("/dapp/orders")).json()["data"]
        assert [o["id"] for o in page["orders"]] == [kept]
        detail = await caller.get(f"/dapp/orders/{gone}", orderId=gone)
        assert detail.json()["data"]["orderDetails"] is None
        await control_json(box, "DELETE", f"/orders/{gone}", status=404)
        await control_json(box, "POST", f"/orders/{kept}/pay")
        refused = await control_json(box, "DELETE", f"/orders/{kept}", status=409)
        assert "has a commission" in refused["error"]

    async def test_payment_actions(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Paying accrues one commission; payment may regress; refund needs the docs vocabulary."""
        oid = (await control_json(box, "POST", "/holders/h1/orders", {}, 201))["id"]
        paid = await control_json(box, "POST", f"/orders/{oid}/pay", {"method": "FIAT"})
        assert (paid["paymentStatus"], paid["transactions"]) == ("PAID", [{"method": "FIAT"}])
        assert (await box.control("POST", f"/orders/{oid}/pay")).status == 409
        assert (await control_json(box, "POST", f"/orders/{oid}/unpay"))[
            "paymentStatus"
        ] == "PENDING"
        await control_json(box, "POST", f"/orders/{oid}/pay")
        assert len(box.state.commissions.of(holder)) == 1
        refused = await box.control("POST", f"/orders/{oid}/refund")
        assert refused.status == 409
        assert "docs payment vocabulary" in refused.json()["error"]
        failed = await control_json(box, "POST", f"/orders/{oid}/fail-payment")
        assert failed["paymentStatus"] == "PENDING"

    async def test_docs_vocabulary(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """In the docs vocabulary paying sets COMPLETED, which the list filter accepts."""
        await control_json(box, "PATCH", "/settings", {"payment_vocabulary": "docs"})
        oid = (await control_json(box, "POST", "/holders/h1/orders", {}, 201))["id"]
        assert (await control_json(box, "POST", f"/orders/{oid}/pay"))[
            "paymentStatus"
        ] == "COMPLETED"
        answer = await box.caller(holder).get("/dapp/orders", ("paymentStatus", "COMPLETED"))
        assert [o["id"] for o in answer.json()["data"]["orders"]] == [oid]
        assert (await control_json(box, "POST", f"/orders/{oid}/refund"))[
            "paymentStatus"
        ] == "REFUNDED"
        assert (await control_json(box, "POST", f"/orders/{oid}/fail-payment"))[
            "paymentStatus"
        ] == "FAILED"

    async def test_raw_unknown_status_reaches_the_api(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """PATCH can force an unknown paymentStatus, which the API then returns as is."""
        oid = (await control_json(box, "POST", "/holders/h1/orders", {}, 201))["id"]
        await control_json(box, "PATCH", f"/orders/{oid}", {"paymentStatus": "ON_HOLD"})
        answer = await box.caller(holder).get("/dapp/orders")
        assert answer.json()["data"]["orders"][0]["paymentStatus"] == "ON_HOLD"
        stored = await control_json(box, "GET", f"/orders/{oid}")
        assert (stored["paymentStatus"], stored["holder"]) == ("ON_HOLD", "h1")

    async def test_backdated_orders_in_initial_states(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Orders can start in any consistent state at any time."""
        body = {
            "createdAt": "2026-01-01T00:00:00.000Z", "adminApproval": "VERIFIED",
            "paymentStatus": "PAID", "orderStatus": "SHIPPED",
        }  # fmt: skip
        order = await control_json(box, "POST", "/holders/h1/orders", body, 201)
        assert (order["createdAt"], order["verifiedAt"]) == ("2026-01-01T00:00:00.000Z",) * 2
        inconsistent = await box.control(
            "POST", "/holders/h1/orders", {"orderStatus": "SHIPPED", "adminApproval": "PENDING"}
        )
        assert inconsistent.status == 400

    async def test_thousand_orders_in_well_under_a_second(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Bulk creation of 1,000 orders takes well under a second."""
        started = SystemClock().monotonic()
        created = await control_json(box, "POST", "/holders/h1/orders", {"count": 1000}, 201)
        assert SystemClock().monotonic() - started < 0.5
        assert (created["count"], len(set(created["ids"]))) == (1000, 1000)
        answer = await box.caller(holder).get("/dapp/orders", ("take", "1"))
        assert answer.json()["data"]["pageMetaDto"]["itemCount"] == 1000

    async def test_commissions(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Commissions are accrued by amount and paid by id."""
        accrued = await control_json(
            box, "POST", "/holders/h1/commissions", {"amountInDollar": 12.5}, 201
        )
        assert (accrued["amountInDollar"], accrued["paymentStatus"]) == (12.5, "PENDING")
        paid = await control_json(box, "POST", f"/commissions/{accrued['id']}/pay")
        assert paid["paymentStatus"] == "PAID"
        assert paid["transactionHash"].startswith("0x")
        assert (await box.control("POST", f"/commissions/{accrued['id']}/pay")).status == 409
        rate = await control_json(box, "PUT", "/eth-rate", {"ethPerUsd": 0.0005})
        assert rate == {"ethPerUsd": 0.0005}
