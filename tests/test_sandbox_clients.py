"""The sandbox's client and cart endpoints, and the create flow from new client to order."""

from __future__ import annotations

from typing import Any

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.harness import SignedCaller
from drgreen_poller.sandbox.world.model import Strain

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def strain(box: LocalSandbox) -> Strain:
    """A strain stocked in GBR only."""
    return box.state.catalogue.create(
        "Kush", retail_price=10, wholesale_price=6, locations={"GBR": 20}
    )


def new_client_body(email: str = "jane@example.com", phone: str = "7700900123") -> dict[str, Any]:
    """A valid ``POST /dapp/clients`` body."""
    return {
        "firstName": "Jane",
        "lastName": "Doe",
        "email": email,
        "phoneCode": "+44",
        "phoneCountryCode": "GB",
        "contactNumber": phone,
        "shipping": {
            "address1": "1 High St", "address2": "Flat 2", "city": "London", "state": "London",
            "country": "United Kingdom", "countryCode": "GBR", "postalCode": "N1 1AA",
        },
        "medicalRecord": {
            "dob": "1990-01-01", "gender": "Female", "medicalConditions": ["anxiety"],
            "medicalHistory13": "never", "medicalHistory14": ["never"], "secret": "dropped",
        },
    }  # fmt: skip


async def order_error(caller: SignedCaller, client_id: str) -> tuple[int, str]:
    """POST an order and return the error's status and message."""
    answer = await caller.post("/dapp/orders", {"clientId": client_id})
    return answer.status, answer.json()["message"]


class TestCreateFlow:
    async def test_new_client_to_order(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain
    ) -> None:
        """POST client, control-API KYC and approval, cart, POST order: each step's answer."""
        caller = box.caller(holder)
        created = await caller.post("/dapp/clients", new_client_body())
        assert created.status == 201
        body = created.json()
        assert body["message"] == "KYC link has been sent to client at jane@example.com"
        client_id = body["data"]["clientId"]
        assert body["data"]["client"]["id"] == client_id
        assert body["data"]["kycLink"].endswith(client_id)
        row = body["data"]["client"]
        assert (row["adminApproval"], row["isKYCVerified"], row["isActive"]) == (
            "PENDING",
            False,
            False,
        )

        assert await order_error(caller, client_id) == (400, "Client is not active")
        assert (await box.control("POST", f"/clients/{client_id}/activate")).status == 200
        assert await order_error(caller, client_id) == (409, "Client is not KYC verified")
        assert (await box.control("POST", f"/clients/{client_id}/verify-kyc")).status == 200
        assert await order_error(caller, client_id) == (409, "Approval is PENDING by admin")
        await box.control("POST", f"/clients/{client_id}/reject", {"note": "blurry"})
        assert await order_error(caller, client_id) == (409, "Approval is REJECTED by admin")
        await box.control("POST", f"/clients/{client_id}/approve")
        assert await order_error(caller, client_id) == (
            409,
            "Client does not have any item in the cart",
        )

        detail = (await caller.get(f"/dapp/clients/{client_id}", clientId=client_id)).json()["data"]
        cart_id = detail["clientCart"][0]["id"]
        assert cart_id != client_id
        item = {"strainId": strain.id, "quantity": 4}
        added = await caller.post("/dapp/carts", {"items": [item], "clientCartId": cart_id})
        assert (added.status, added.json()["message"]) == (201, "1 items added to the cart")
        await caller.post("/dapp/carts", {"items": [item], "clientCartId": cart_id})

        ordered = await caller.post("/dapp/orders", {"clientId": client_id})
        assert ordered.status == 201
        row = ordered.json()["data"]
        assert (row["orderStatus"], row["paymentStatus"], row["adminApproval"]) == ("PENDING",) * 3
        assert (row["totalAmount"], row["agentProfit"]) == (80, 32)
        assert strain.locations["GBR"].stock_quantity == 12
        assert box.state.clients.get(client_id).cart == {}

    async def test_unknown_client_order_is_400(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Ordering for a client outside the NFT is 400 ``Client is not found``."""
        foreign = box.state.clients.create(box.state.create_holder("h2"))
        assert await order_error(box.caller(holder), foreign.id) == (400, "Client is not found")

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"isAvailable": False}, "Kush is not available"),
            ({"isActive": False}, "Kush is not active"),
            ({"stockQuantity": 1}, "Kush does not enough quantity"),
        ],
    )
    async def test_strain_checks_at_checkout(
        self,
        box: LocalSandbox,
        holder: HolderInfo,
        strain: Strain,
        change: dict[str, Any],
        message: str,
    ) -> None:
        """Checkout re-checks each strain at the client's country with Dr Green's messages."""
        client = box.state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        box.state.carts.fill(client.id, {strain.id: 5})
        box.state.catalogue.set_location(strain.id, "GBR", change)
        assert await order_error(box.caller(holder), client.id) == (409, message)

    async def test_order_id_must_be_uuid(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A body without a UUID clientId is a 400."""
        answer = await box.caller(holder).post("/dapp/orders", {"paymentFlow": "DIRECT"})
        assert (answer.status, answer.json()["message"]) == (400, "clientId must be a UUID")


class TestClientCreation:
    async def test_duplicate_email_and_phone_conflict(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Emails and contact numbers are unique across the platform (409)."""
        caller = box.caller(holder)
        assert (await caller.post("/dapp/clients", new_client_body())).status == 201
        other = box.caller(box.state.create_holder("h2"))
        same_email = await other.post("/dapp/clients", new_client_body(phone="1"))
        assert (same_email.status, same_email.json()["message"]) == (
            409,
            "Client Email ID already exists",
        )
        assert same_email.json()["error"] == "Conflict"
        same_phone = await caller.post("/dapp/clients", new_client_body(email="x@example.com"))
        assert (same_phone.status, same_phone.json()["message"]) == (
            409,
            "Phone Number already exists",
        )

    async def test_validation_messages(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Missing and malformed fields get class-validator messages, nested ones prefixed."""
        body = new_client_body(email="Jane@Example.com")
        del body["firstName"]
        body["shipping"]["countryCode"] = "GB"
        del body["medicalRecord"]
        answer = await box.caller(holder).post("/dapp/clients", body)
        assert answer.status == 400
        assert answer.json()["message"] == (
            "firstName should not be empty, email must be a lowercase string, "
            "shipping.countryCode must be a valid ISO31661 Alpha3 code, "
            "medicalRecord should not be empty"
        )

    async def test_south_african_id_path_needs_no_medical_record(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """ZAF clients with ``verificationType: ID`` are created without a questionnaire."""
        body = new_client_body()
        del body["medicalRecord"]
        body["verificationType"] = "ID"
        body["shipping"]["countryCode"] = "ZAF"
        answer = await box.caller(holder).post("/dapp/clients", body)
        assert answer.status == 201

    async def test_detail_includes_medical_record(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """Client detail returns the medical record, as the real server does."""
        caller = box.caller(holder)
        client_id = (await caller.post("/dapp/clients", new_client_body())).json()["data"][
            "clientId"
        ]
        detail = (await caller.get(f"/dapp/clients/{client_id}", clientId=client_id)).json()["data"]
        record = detail["medicalRecord"]
        assert (record["dob"], record["medicalHistory13"], record["clientId"]) == (
            "1990-01-01",
            "never",
            client_id,
        )
        assert record["medicalHistory0"] is None
        assert "secret" not in record
        assert detail["shippings"][0]["address2"] == "Flat 2"

    async def test_unknown_client_is_500(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """An unknown client id is the snapshot's 500 ``Client not found``."""
        answer = await box.caller(holder).get(f"/dapp/clients/{UNKNOWN_ID}", clientId=UNKNOWN_ID)
        assert answer.status == 500
        assert answer.json() == {
            "success": False,
            "message": "Client not found",
            "errorCode": 500,
            "error": "Internal Server Error",
            "url": f"/api/v1/dapp/clients/{UNKNOWN_ID}",
            "urlMethod": "GET",
        }


class TestClientLists:
    async def test_filters(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """adminApproval, isVerified, status and countryCodes filter the list."""
        state = box.state
        eligible = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        waiting = state.clients.create(holder, kyc_verified=True, country_code="ZAF")
        fresh = state.clients.create(holder, country_code="PRT")
        caller = box.caller(holder)

        async def ids(*pairs: tuple[str, str]) -> list[str]:
            return [
                c["id"]
                for c in (await caller.get("/dapp/clients", *pairs)).json()["data"]["clients"]
            ]

        assert await ids(("adminApproval", "VERIFIED")) == [eligible.id]
        assert await ids(("isVerified", "true"), ("status", "InActive")) == [waiting.id]
        assert await ids(("isVerified", "false")) == [fresh.id]
        assert await ids(("countryCodes", '["ZAF","PRT"]'), ("orderBy", "desc")) == [
            fresh.id,
            waiting.id,
        ]

    async def test_rejected_filter_shows_note_and_sorts_by_rejection(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Filtering REJECTED adds rejectionNote and sorts by rejectedAt."""
        first = box.state.clients.create(holder)
        second = box.state.clients.create(holder)
        box.state.clients.reject(second.id, "expired ID")
        clock.advance(1)
        box.state.clients.reject(first.id)
        answer = await box.caller(holder).get("/dapp/clients", ("adminApproval", "REJECTED"))
        items = answer.json()["data"]["clients"]
        assert [(c["id"], c["rejectionNote"]) for c in items] == [
            (second.id, "expired ID"),
            (first.id, None),
        ]

    async def test_summary_and_verified_list(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The summary counts by approval; ``/clients/list`` has VERIFIED clients by first name."""
        state = box.state
        for first in ("Zed", "Amy"):
            client = state.clients.create(holder, admin_approval="VERIFIED")
            state.clients.patch(client.id, {"firstName": first})
        state.clients.create(holder)
        caller = box.caller(holder)
        summary = (await caller.get("/dapp/clients/summary")).json()["data"]["summary"]
        assert summary == {"PENDING": 1, "VERIFIED": 2, "REJECTED": 0, "totalCount": 3}
        listed = (await caller.get("/dapp/clients/list")).json()["data"]
        assert [c["firstName"] for c in listed["clients"]] == ["Amy", "Zed"]
        assert "pageMetaDto" not in listed


class TestCarts:
    async def test_region_and_stock_checks(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain
    ) -> None:
        """Adding a strain not sold in the client's country, or too much of it, is a 400."""
        caller = box.caller(holder)
        portugal = box.state.clients.create(holder, country_code="PRT")
        item = {"strainId": strain.id, "quantity": 1}
        answer = await caller.post(
            "/dapp/carts", {"items": [item], "clientCartId": portugal.cart_id}
        )
        assert (answer.status, answer.json()["message"]) == (
            400, f"Strain {strain.id} is not available in your region (PRT)",
        )  # fmt: skip
        britain = box.state.clients.create(holder)
        much = {"strainId": strain.id, "quantity": 21}
        answer = await caller.post(
            "/dapp/carts", {"items": [much], "clientCartId": britain.cart_id}
        )
        assert answer.json()["message"] == (
            f"Strain {strain.id} is not available in sufficient quantity in your region (GBR)"
        )

    async def test_docs_body_shape_and_listing(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain
    ) -> None:
        """The docs' ``{clientId, cartItems}`` body works too, and ``GET /dapp/carts`` shows it."""
        caller = box.caller(holder)
        client = box.state.clients.create(holder)
        body = {"clientId": client.id, "cartItems": [{"strainId": strain.id, "quantity": 2.5}]}
        assert (await caller.post("/dapp/carts", body)).status == 201
        carts = (await caller.get("/dapp/carts")).json()["data"]["clients"]
        assert carts[0]["clientCart"][0]["cartItems"][0]["quantity"] == 2.5

    async def test_cart_validation(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """Bad items get class-validator messages."""
        body = {"items": [{"strainId": "x", "quantity": 0}], "clientCartId": "y"}
        answer = await box.caller(holder).post("/dapp/carts", body)
        assert answer.json()["message"] == (
            "clientCartId must be a UUID, items.0.strainId must be a UUID, "
            "items.0.quantity must not be less than 0.001"
        )

    async def test_delete_one_item_or_all(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain
    ) -> None:
        """``DELETE /dapp/carts/{cartId}`` drops one strain with ``?strainId=``, else everything."""
        client = box.state.clients.create(holder)
        other = box.state.catalogue.create("Haze", locations={"GBR": 9})
        box.state.carts.fill(client.id, {strain.id: 1, other.id: 2})
        caller = box.caller(holder)
        one = await caller.call(
            "DELETE", f"/dapp/carts/{client.cart_id}?strainId={strain.id}", body={}
        )
        assert (one.status, one.json()["message"]) == (200, "Cart item removed successfully")
        assert box.state.clients.get(client.id).cart == {other.id: 2}
        assert (await caller.call("DELETE", f"/dapp/carts/{client.cart_id}")).status == 200
        assert box.state.clients.get(client.id).cart == {}
        missing = await caller.call("DELETE", f"/dapp/carts/{UNKNOWN_ID}")
        assert (missing.status, missing.json()["message"]) == (404, "Client cart not found")


class TestMoreFilters:
    async def test_client_dates_and_search(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Clients filter by createdAt window and by name or email."""
        old = box.state.clients.create(holder)
        clock.advance(3 * 86400)
        new = box.state.clients.create(holder)
        caller = box.caller(holder)
        day = old.created_at.date().isoformat()
        by_day = await caller.get("/dapp/clients", ("startDate", day), ("endDate", day))
        assert [c["id"] for c in by_day.json()["data"]["clients"]] == [old.id]
        by_email = await caller.get(
            "/dapp/clients", ("search", new.email[:12]), ("searchBy", "clientName")
        )
        assert [c["id"] for c in by_email.json()["data"]["clients"]] == [new.id]

    async def test_business_and_missing_record(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A business is stored with the client; a client without a record shows ``null``."""
        caller = box.caller(holder)
        body = {**new_client_body(), "clientBusiness": {"name": "Shop", "businessType": "Retail"}}
        client_id = (await caller.post("/dapp/clients", body)).json()["data"]["clientId"]
        detail = (await caller.get(f"/dapp/clients/{client_id}", clientId=client_id)).json()["data"]
        assert detail["clientBusinesses"][0]["name"] == "Shop"
        bare = box.state.clients.create(holder, medical_record=False)
        detail = (await caller.get(f"/dapp/clients/{bare.id}", clientId=bare.id)).json()["data"]
        assert detail["medicalRecord"] is None

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            (
                {"items": [], "clientCartId": UNKNOWN_ID},
                400,
                "items must contain at least 1 elements",
            ),
            (
                {"items": [{"strainId": UNKNOWN_ID, "quantity": "1"}], "clientCartId": UNKNOWN_ID},
                400,
                "items.0.quantity must be a number conforming to the specified constraints",
            ),
            ({"clientId": "x", "cartItems": []}, 400, "clientId must be a UUID"),
            (
                {"clientId": UNKNOWN_ID, "cartItems": [{"strainId": UNKNOWN_ID, "quantity": 1}]},
                400,
                "Client is not found",
            ),
        ],
    )
    async def test_cart_body_errors(
        self, box: LocalSandbox, holder: HolderInfo, body: dict[str, Any], status: int, message: str
    ) -> None:
        """Cart bodies in either shape are validated with specific messages."""
        answer = await box.caller(holder).post("/dapp/carts", body)
        assert answer.status == status
        assert message in answer.json()["message"]
