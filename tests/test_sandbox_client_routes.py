"""The sandbox's routes about one client, through the signed client: the store's edit
(``PATCH /dapp/clients/{id}``), the client's orders and its payment transactions."""

from __future__ import annotations

from typing import Any

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from drgreen_poller.sandbox.world.model import Client, Strain

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ADDRESS = {
    "address1": "2 Low Road", "address2": "", "city": "Leeds", "state": "West Yorkshire",
    "country": "United Kingdom", "countryCode": "GBR", "postalCode": "LS1 1AA",
}  # fmt: skip


@pytest.fixture
def strain(box: LocalSandbox) -> Strain:
    """A strain stocked in GBR, 10 a gram."""
    return box.state.catalogue.create(
        "Kush", retail_price=10, wholesale_price=6, locations={"GBR": 500}
    )


@pytest.fixture
def client(box: LocalSandbox, holder: HolderInfo) -> Client:
    """A PENDING, inactive client of the holder."""
    return box.state.clients.create(holder)


def message(body: dict[str, Any]) -> str:
    """The error message of an answer body."""
    return str(body["message"])


class TestEditClient:
    async def test_edit_changes_the_client_in_the_world(
        self, box: LocalSandbox, holder: HolderInfo, client: Client, clock: FakeClock
    ) -> None:
        """A signed PATCH changes names, email and addresses, drops what the DTO lacks (isActive),
        answers the updated row with its medical record, and the client list shows it."""
        clock.advance(60)
        body = {
            "firstName": "Ada",
            "email": "ada@example.com",
            "shipping": ADDRESS,
            "isActive": True,
            "medicalRecord": {"gender": "Male"},
        }
        answer = await box.caller(holder).patch(f"/dapp/clients/{client.id}", body)
        assert answer.status == 200
        data = answer.json()["data"]
        assert answer.json()["message"] == "Success"
        assert list(data)[:5] == ["id", "firstName", "lastName", "email", "phoneCountryCode"]
        assert (data["firstName"], data["email"], data["isActive"]) == (
            "Ada",
            "ada@example.com",
            False,
        )
        assert data["updatedAt"] == "2026-11-23T10:01:00.000Z"
        assert data["medicalRecord"]["clientId"] == client.id
        assert (data["medicalRecord"]["gender"], data["medicalRecord"]["dob"]) == (
            "Male",
            "1990-01-01",
        )
        listed = (await box.caller(holder).get("/dapp/clients")).json()["data"]["clients"][0]
        assert (listed["firstName"], listed["updatedAt"]) == ("Ada", data["updatedAt"])
        assert client.shippings[0].city == "Leeds"

    async def test_new_email_of_unverified_client_opens_a_new_case(
        self, box: LocalSandbox, holder: HolderInfo, client: Client
    ) -> None:
        """A new email opens a new KYC case for an unverified client; a verified one keeps its."""
        before = client.case_id
        await box.caller(holder).patch(f"/dapp/clients/{client.id}", {"email": "new@example.com"})
        assert client.case_id != before
        client.is_kyc_verified = True
        kept = client.case_id
        await box.caller(holder).patch(f"/dapp/clients/{client.id}", {"email": "newer@example.com"})
        assert (client.case_id, client.email) == (kept, "newer@example.com")

    async def test_business_and_medical_record_are_updated(
        self, box: LocalSandbox, holder: HolderInfo, client: Client
    ) -> None:
        """``clientBusiness`` updates each business of the client; ``medicalRecord`` is upserted."""
        client.businesses.append({"id": "b1", "name": "Old Ltd"})
        client.medical_record = None
        body = {
            "clientBusiness": {"name": "New Ltd", "postalCode": "N1"},
            "medicalRecord": {"gender": "Male"},
        }
        answer = await box.caller(holder).patch(f"/dapp/clients/{client.id}", body)
        assert answer.status == 200
        assert client.businesses == [{"id": "b1", "name": "New Ltd", "postalCode": "N1"}]
        assert answer.json()["data"]["medicalRecord"]["gender"] == "Male"

    async def test_bad_body_gets_every_message(
        self, box: LocalSandbox, holder: HolderInfo, client: Client
    ) -> None:
        """Wrong types and a partial address are a 400 listing each class-validator message."""
        body = {
            "firstName": 5,
            "shipping": {**ADDRESS, "city": None, "countryCode": "GB"},
            "medicalRecord": [],
        }
        answer = await box.caller(holder).patch(f"/dapp/clients/{client.id}", body)
        assert answer.status == 400
        assert message(answer.json()) == (
            "firstName must be a string, shipping.city must be a string, "
            "shipping.countryCode must be a valid ISO31661 Alpha3 code, "
            "nested property medicalRecord must be either object or array"
        )

    async def test_bad_medical_record_and_business(
        self, box: LocalSandbox, holder: HolderInfo, client: Client
    ) -> None:
        """Medical-record enums and dates, and a business without postcode, are 400s."""
        body = {
            "clientBusiness": {"name": "X"},
            "medicalRecord": {
                "dob": "soon",
                "gender": 1,
                "medicalHistory13": "often",
                "medicalHistory14": ["x"],
            },
        }
        answer = await box.caller(holder).patch(f"/dapp/clients/{client.id}", body)
        assert answer.status == 400
        assert message(answer.json()).split(", ")[0] == "clientBusiness.postalCode must be a string"
        assert "medicalRecord.dob must be a valid ISO 8601 date string" in message(answer.json())
        assert "medicalRecord.gender must be a string" in message(answer.json())
        assert message(answer.json()).count("must be one of the following values") == 2

    async def test_unknown_or_foreign_client_is_404(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """An unknown id, or another holder's client, is the service's 404 "Client not found"."""
        other = box.state.clients.create(box.state.create_holder("h2"))
        for client_id in (UNKNOWN_ID, other.id):
            answer = await box.caller(holder).patch(
                f"/dapp/clients/{client_id}", {"firstName": "A"}
            )
            assert (answer.status, message(answer.json())) == (404, "Client not found")

    async def test_taken_email_or_phone_is_409_and_bad_id_400(
        self, box: LocalSandbox, holder: HolderInfo, client: Client
    ) -> None:
        """Another client's email or contact number is a 409; a non-UUID id is a 400."""
        other = box.state.clients.create(holder)
        caller = box.caller(holder)
        answer = await caller.patch(f"/dapp/clients/{client.id}", {"email": other.email})
        assert (answer.status, message(answer.json())) == (409, "Client Email ID already exists")
        phone = {"contactNumber": other.contact_number}
        answer = await caller.patch(f"/dapp/clients/{client.id}", phone)
        assert (answer.status, message(answer.json())) == (409, "Phone Number already exists")
        answer = await caller.patch("/dapp/clients/abc", {})
        assert (answer.status, message(answer.json())) == (400, "clientId must be a UUID")


class TestClientOrders:
    async def test_orders_of_one_client(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain, clock: FakeClock
    ) -> None:
        """The client's orders, oldest first by default, in the service's shape (``totalPrice``
        sums the lines' unit prices); another client's orders are not listed."""
        state = box.state
        client = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        first = state.orders.create(holder, client_id=client.id, items={strain.id: 3})
        clock.advance(60)
        second = state.orders.create(holder, client_id=client.id, items={strain.id: 2})
        other = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        state.orders.create(holder, client_id=other.id, items={strain.id: 1})
        answer = await box.caller(holder).get(
            f"/dapp/client/{client.id}/orders", clientId=client.id
        )
        assert answer.status == 200
        data = answer.json()["data"]
        assert [o["id"] for o in data["orders"]] == [first.id, second.id]
        assert data["orders"][0] == {
            "id": first.id, "createdAt": "2026-11-23T10:00:00.000Z",
            "updatedAt": "2026-11-23T10:00:00.000Z", "paymentStatus": "PENDING",
            "orderStatus": "PENDING", "invoiceNumber": first.invoice_number, "totalAmount": 30,
            "totalOrdered": 1, "totalQuantity": 3, "totalPrice": 10,
        }  # fmt: skip
        assert data["pageMetaDto"]["itemCount"] == 2

    async def test_status_filter_and_paging(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain
    ) -> None:
        """``status`` filters orderStatus; ``orderBy=desc&take=1`` pages newest first."""
        state = box.state
        client = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        orders = [state.orders.create(holder, client_id=client.id) for _ in range(3)]
        state.lifecycle.approve(orders[0].id)
        state.lifecycle.ship(orders[0].id)
        caller = box.caller(holder)
        path = f"/dapp/client/{client.id}/orders"
        shipped = (await caller.get(path, ("status", "SHIPPED"))).json()["data"]["orders"]
        assert [o["id"] for o in shipped] == [orders[0].id]
        page = (await caller.get(path, ("orderBy", "desc"), ("take", "1"))).json()["data"]
        assert [o["id"] for o in page["orders"]] == [orders[2].id]
        assert page["pageMetaDto"] == {
            "page": 1, "take": "1", "itemCount": 3, "pageCount": 3,
            "hasPreviousPage": False, "hasNextPage": True,
        }  # fmt: skip

    async def test_bad_query_or_id_is_400(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The whole order-list DTO is validated (status, take, adminApproval), and the id too."""
        caller = box.caller(holder)
        answer = await caller.get(
            f"/dapp/client/{UNKNOWN_ID}/orders", ("status", "LOST"), ("adminApproval", "MAYBE")
        )
        assert answer.status == 400
        assert message(answer.json()) == (
            "status must be one of the following values: "
            "PENDING, PROCESSING, SHIPPED, DELIVERED, CANCELLED, "
            "adminApproval must be one of the following values: PENDING, VERIFIED, REJECTED"
        )
        answer = await caller.get("/dapp/client/abc/orders", clientId="abc")
        assert (answer.status, message(answer.json())) == (400, "clientId must be a UUID")

    async def test_unknown_client_has_no_orders(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """An unknown client id is an empty page, not an error."""
        answer = await box.caller(holder).get(
            f"/dapp/client/{UNKNOWN_ID}/orders", clientId=UNKNOWN_ID
        )
        assert answer.json()["data"]["orders"] == []


class TestClientTransactions:
    async def test_payments_are_listed_newest_first(
        self, box: LocalSandbox, holder: HolderInfo, strain: Strain, clock: FakeClock
    ) -> None:
        """Each payment is a transaction of the client, newest first, unpaged."""
        state = box.state
        client = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        first = state.orders.create(holder, client_id=client.id, items={strain.id: 3})
        second = state.orders.create(holder, client_id=client.id, items={strain.id: 1})
        state.lifecycle.pay(first.id)
        clock.advance(5)
        state.lifecycle.pay(second.id, "FIAT")
        path = f"/dapp/client/{client.id}/transactions"
        data = (await box.caller(holder).get(path, clientId=client.id)).json()["data"]
        assert [(t["method"], t["amount"]) for t in data["transactions"]] == [
            ("FIAT", 10),
            ("CRYPTO", 30),
        ]
        assert list(data["transactions"][0]) == [
            "id", "description", "method", "amount", "invoice", "status", "destination",
            "createdAt",
        ]  # fmt: skip
        assert data["transactions"][0]["createdAt"] == "2026-11-23T10:00:05.000Z"
        assert data["pageMetaDto"]["itemCount"] == 2
        pairs = (("status", "COMPLETED"), ("method", "CRYPTO"))
        crypto = (await box.caller(holder).get(path, *pairs)).json()["data"]
        assert [t["amount"] for t in crypto["transactions"]] == [30]
        assert crypto["pageMetaDto"]["pageCount"] == 1

    async def test_raw_paging_echo(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The unpaged route's pageMetaDto echoes raw page/take; a take that is not a number
        gives a null pageCount, as JavaScript's NaN serialises."""
        path = f"/dapp/client/{UNKNOWN_ID}/transactions"
        meta = (await box.caller(holder).get(path, ("page", "2"), ("take", "x"))).json()["data"][
            "pageMetaDto"
        ]
        assert meta == {
            "page": "2", "take": "x", "itemCount": 0, "pageCount": None,
            "hasPreviousPage": True, "hasNextPage": False,
        }  # fmt: skip

    async def test_bad_filter_is_400(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """An unknown status or method is a 400 naming the allowed values."""
        path = f"/dapp/client/{UNKNOWN_ID}/transactions"
        answer = await box.caller(holder).get(path, ("status", "PAID"), ("method", "CASH"))
        assert answer.status == 400
        assert message(answer.json()) == (
            "status must be one of the following values: PENDING, FAILED, COMPLETED, CANCELED, "
            "EXPIRED, UNDERPAID, OVERPAID, "
            "method must be one of the following values: DEBIT, CREDIT, CRYPTO, FIAT"
        )

    async def test_raw_transactions_patch(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The control API's raw ``transactions`` set replaces the order's completed payments."""
        order = box.state.orders.create(holder)
        box.state.orders.patch(order.id, {"transactions": ["DEBIT", "FIAT"]})
        assert [t.method for t in order.transactions] == ["DEBIT", "FIAT"]
        listed = (await box.caller(holder).get("/dapp/orders")).json()["data"]["orders"][0]
        assert listed["transactions"] == [{"method": "DEBIT"}, {"method": "FIAT"}]
