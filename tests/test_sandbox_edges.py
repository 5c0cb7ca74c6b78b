"""Edge cases of the sandbox's parsing, validation and rules, mostly as pure functions."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.sandbox import (
    HolderInfo,
    InvalidInput,
    LocalSandbox,
    SandboxState,
    ServiceRefusal,
    StateConflict,
    UnknownEntity,
    story,
)
from drgreen_poller.sandbox.dapp import records
from drgreen_poller.sandbox.dapp.app import HANDLERS
from drgreen_poller.sandbox.dapp.client_dto import parse_new_client
from drgreen_poller.sandbox.dapp.faults import Fault
from drgreen_poller.sandbox.dapp.replies import ApiError, dump_json
from drgreen_poller.sandbox.dapp.routes import ROUTE_TABLE, Call
from drgreen_poller.sandbox.dapp.validation import js_number
from drgreen_poller.sandbox.harness import SandboxNotRunning
from drgreen_poller.sandbox.world import inputs
from drgreen_poller.sandbox.world.clients import Identity


def client_body(**changes: Any) -> dict[str, Any]:
    """A valid ``CreateClientDto`` with ``changes`` applied (``None`` deletes a key)."""
    body: dict[str, Any] = {
        "firstName": "Jane", "lastName": "Doe", "email": "jane@example.com",
        "phoneCode": "+44", "phoneCountryCode": "GB", "contactNumber": "1",
        "shipping": {"address1": "a", "city": "c", "state": "s", "country": "UK",
                     "countryCode": "GBR", "postalCode": "p"},
        "medicalRecord": {"dob": "1990-01-01", "gender": "F"},
    }  # fmt: skip
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


class TestJsNumber:
    @pytest.mark.parametrize(
        ("text", "value"),
        [("", 0.0), (" 7 ", 7.0), ("0x1F", 31.0), ("0b11", 3.0), ("0o7", 7.0), ("1e2", 100.0),
         ("-Infinity", -math.inf), ("Infinity", math.inf), (".5", 0.5)],
    )  # fmt: skip
    def test_numbers(self, text: str, value: float) -> None:
        """``Number()`` accepts JavaScript's numeric literals."""
        assert js_number(text) == value

    @pytest.mark.parametrize("text", ["abc", "0xZZ", "1,2", "1e", "--1"])
    def test_not_numbers(self, text: str) -> None:
        """Anything else is NaN."""
        assert math.isnan(js_number(text))


class TestClientDto:
    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"firstName": 5}, "firstName must be a string"),
            ({"email": "nope"}, "email must be an email"),
            ({"phoneCountryCode": "GBR"}, "phoneCountryCode must be a valid ISO31661 Alpha2 code"),
            ({"shipping": "x"}, "shipping must be a non-empty object"),
            ({"shipping": None}, "shipping should not be empty"),
            ({"clientBusiness": []}, "clientBusiness must be an object"),
            ({"medicalRecord": {"gender": "F"}},
             "medicalRecord.dob must be a valid ISO 8601 date string"),
            ({"medicalRecord": {"dob": "1990-01-01", "gender": "F", "medicalHistory13": "often"}},
             "medicalRecord.medicalHistory13 must be one of the following values"),
            ({"medicalRecord": {"dob": "1990-01-01", "gender": "F", "medicalHistory14": ["x"]}},
             "medicalRecord.medicalHistory14 must be one of the following values"),
            ({"medicalRecord": {"dob": "1990-01-01", "gender": "F",
                                "medicalHistory14": ["never", "topical"]}},
             "medicalRecord.medicalHistory14 cannot combine never with other values"),
        ],
    )  # fmt: skip
    def test_messages(self, changes: dict[str, Any], message: str) -> None:
        """Each invalid field gets its class-validator message."""
        with pytest.raises(ApiError) as raised:
            parse_new_client(client_body(**changes))
        assert raised.value.validation
        assert any(m.startswith(message) for m in raised.value.messages)

    def test_optional_address_fields_and_business(self) -> None:
        """address2/landmark must be strings when given; business fields are whitelisted."""
        shipping = {**client_body()["shipping"], "landmark": 3}
        with pytest.raises(ApiError, match=r"shipping\.landmark must be a string"):
            parse_new_client(client_body(shipping=shipping))
        parsed = parse_new_client(client_body(clientBusiness={"name": "Shop", "extra": 1}))
        assert parsed.business == {"name": "Shop"}

    def test_not_an_object(self) -> None:
        """A body that is not an object fails every required field."""
        with pytest.raises(ApiError, match="firstName should not be empty"):
            parse_new_client([1, 2])


class TestInputs:
    @pytest.mark.parametrize(
        ("convert", "value", "message"),
        [
            (inputs.as_bool, "yes", "x must be true or false"),
            (inputs.as_number, float("nan"), "x must be a number"),
            (inputs.as_number, True, "x must be a number"),
            (inputs.as_time, "soon", "x must be an ISO-8601 timestamp"),
            (inputs.as_list, {}, "x must be an array"),
            (inputs.as_dict, [], "x must be an object"),
            (inputs.as_country_code, "gbr", "x must be an ISO 3166-1 alpha-3 code"),
            (inputs.as_opt_str, 1, "x must be a string"),
        ],
    )
    def test_refusals(self, convert: Any, value: Any, message: str) -> None:
        """Converters refuse wrong types with a message naming the field."""
        with pytest.raises(InvalidInput, match=message):
            convert(value, "x")

    def test_optional_values(self) -> None:
        """Optional converters pass null through; naive times are UTC."""
        assert inputs.as_opt_time(None, "x") is None
        assert inputs.as_opt_dict(None, "x") is None
        assert inputs.as_time("2026-01-01T00:00:00", "x").tzinfo is not None


class TestRuleEdges:
    def test_cart_refusals(self, state: SandboxState, holder: HolderInfo) -> None:
        """Unknown carts, missing addresses and absent items are refused like the service does."""
        client = state.clients.create(holder)
        with pytest.raises(ServiceRefusal, match="Client cart not found"):
            state.carts.add(holder, client.id, [])
        with pytest.raises(ServiceRefusal, match="Cart item not found"):
            state.carts.remove(holder, client.cart_id, client.id)
        client.shippings.clear()
        with pytest.raises(ServiceRefusal, match=r"Client shipping address not found\."):
            state.carts.add(holder, client.cart_id, [])
        with pytest.raises(InvalidInput, match="must be greater than 0"):
            state.carts.fill(client.id, {state.catalogue.create("S").id: 0})

    def test_removed_strains_are_not_orderable(self, state: SandboxState) -> None:
        """A removed strain is orderable nowhere and has no stock to take."""
        strain = state.catalogue.create("S", locations={"GBR": 5})
        state.catalogue.remove(strain.id)
        assert state.catalogue.orderable_at(strain, "GBR") is None
        with pytest.raises(InvalidInput, match="has no location ZAF"):
            state.catalogue.take_stock(strain, "ZAF", 1, state.now())
        with pytest.raises(UnknownEntity):
            state.catalogue.get(strain.id)

    def test_commission_and_order_input(self, state: SandboxState, holder: HolderInfo) -> None:
        """Negative amounts, unknown orders, bad statuses and foreign clients are refused."""
        with pytest.raises(InvalidInput, match="must not be negative"):
            state.commissions.accrue(holder, -1)
        with pytest.raises(UnknownEntity, match="unknown order"):
            state.commissions.accrue(holder, 1, order_id="nope")
        with pytest.raises(InvalidInput, match="paymentStatus must be one of"):
            state.orders.create(holder, payment_status="ON_HOLD")
        with pytest.raises(InvalidInput, match="orderStatus must be one of"):
            state.orders.create(holder, order_status="LOST", admin_approval="VERIFIED")
        foreign = state.clients.create(state.create_holder("h2"))
        with pytest.raises(UnknownEntity, match="client of holder 'h1'"):
            state.orders.create(holder, client_id=foreign.id)

    def test_holder_input(self, state: SandboxState) -> None:
        """Holders need a name and a usable key."""
        with pytest.raises(InvalidInput, match="non-empty name"):
            state.create_holder("")
        with pytest.raises(InvalidInput, match="not Base64"):
            state.create_holder("x", credentials=ApiCredentials("%%%", "%%%"))
        with pytest.raises(StateConflict):
            state.create_holder("anonymous")

    def test_generated_identity_skips_taken_numbers(
        self, state: SandboxState, holder: HolderInfo
    ) -> None:
        """Made-up contact numbers skip ones already taken."""
        state.clients.create(holder, identity=Identity("A", "B", "a@x.io", "7700000002"))
        assert state.clients.create(holder).contact_number == "7700000003"

    def test_fault_without_budget_never_fires(self) -> None:
        """A spent fault does not fire."""
        assert not Fault(id=1, kind="malformed", remaining=0).draw()

    def test_story_checkout_refusal_empties_the_cart(
        self, state: SandboxState, holder: HolderInfo
    ) -> None:
        """A story order that Dr Green refuses leaves no cart behind."""
        state.catalogue.create("Scarce", locations={"GBR": 1})
        client = state.clients.create(holder, kyc_verified=True, admin_approval="VERIFIED")
        assert story._place_order(state, holder, random.Random(0)) is None
        assert client.cart == {}
        state.catalogue.update(state.catalogue.listed()[0].id, {"isActive": False})
        assert story._place_order(state, holder, random.Random(0)) is None

    def test_story_steps_without_work(self, state: SandboxState, holder: HolderInfo) -> None:
        """Steps with nothing to act on do nothing."""
        rng = random.Random(0)
        for step, _ in story.STEPS[1:]:
            assert step(state, holder, rng) is None


class TestWireEdges:
    def test_every_guarded_or_public_route_has_a_handler(self) -> None:
        """The route table and the handlers agree (JWT-only routes need none)."""
        served = {endpoint for endpoint, auth in ROUTE_TABLE if auth != "jwt_only"}
        assert served == set(HANDLERS)

    def test_lone_surrogates_are_escaped(self) -> None:
        """JSON with a lone surrogate is escaped as JSON.stringify does."""
        assert dump_json({"a": "\ud800"}) == b'{"a":"\\ud800"}'

    def test_numbers_are_written_as_javascript_writes_them(self) -> None:
        """Whole floats lose ``.0`` and small ones avoid exponents; hex in strings is left alone."""
        value = {"a": 3.2e-05, "b": [8.0], "c": "8e4f-1.0,", "d": 1.5}
        assert dump_json(value) == b'{"a":0.000032,"b":[8],"c":"8e4f-1.0,","d":1.5}'

    def test_records_without_nft(self, state: SandboxState) -> None:
        """A holder without an NFT renders ``nft: null``."""
        assert records.nft(state.create_holder("bare", nft=False)) is None

    def test_call_owner_requires_the_guard(self, state: SandboxState) -> None:
        """Public routes have no owner."""
        with pytest.raises(LookupError):
            _ = Call(state, None, {}, {}, {}).owner

    async def test_local_sandbox_outside_its_block(self) -> None:
        """A LocalSandbox that is not running says so."""
        idle = LocalSandbox()
        with pytest.raises(SandboxNotRunning):
            _ = idle.session
        with pytest.raises(SandboxNotRunning):
            _ = idle.origin

    async def test_unexpected_failure_is_a_500(
        self, box: LocalSandbox, state: SandboxState, holder: HolderInfo
    ) -> None:
        """A failure inside a handler becomes NestJS's 500 in the error shape."""
        strain = state.catalogue.create("Odd", locations={"GBR": 1})
        state.catalogue.update(strain.id, {"strainImages": [{"x": float("nan")}]})
        answer = await box.caller(holder).get(f"/dapp/strains/{strain.id}", strainId=strain.id)
        assert answer.status == 500
        assert answer.json()["errorCode"] == 500

    async def test_docs_shape_for_service_errors(
        self, box: LocalSandbox, state: SandboxState, holder: HolderInfo
    ) -> None:
        """In the docs shape a service error has its message and ``data: null``."""
        state.update_settings({"error_shape": "docs"})
        answer = await box.caller(holder).post(
            "/dapp/orders", {"clientId": "0" * 8 + "-0000-4000-8000-" + "0" * 12}
        )
        assert answer.json() == {
            "success": False, "statusCode": 400, "message": "Client is not found", "data": None,
        }  # fmt: skip

    async def test_whitespace_json_body_is_empty(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A JSON body of only whitespace counts as ``{}``."""
        headers = box.caller(holder).headers_for("{}")
        answer = await box.raw("POST", "/dapp/orders", headers=headers, data=b"  \n")
        assert answer.json()["message"] == "clientId must be a UUID"

    async def test_gateway_json_for_502(self, box: LocalSandbox) -> None:
        """A 502 fault with a JSON body carries the status and reason."""
        await box.control("POST", "/faults", {"kind": "server_error", "status": 502})
        answer = await box.raw("GET", "/public/healthStatus")
        assert answer.json() == {"statusCode": 502, "message": "Bad Gateway"}

    async def test_keep_fraction_bounds(self, box: LocalSandbox) -> None:
        """keep_fraction must leave the body shorter than it was."""
        answer = await box.control("POST", "/faults", {"kind": "truncated", "keep_fraction": 1})
        assert answer.json()["error"] == "keep_fraction must be at least 0 and less than 1"
