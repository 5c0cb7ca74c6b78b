"""Tests of parsing Dr Green records into models at the API boundary."""

from __future__ import annotations

import json
from collections import UserDict
from decimal import Decimal
from typing import Any

import pytest

from drgreen_poller.errors import UpstreamMalformed
from drgreen_poller.models import (
    loads_without_medical,
    parse_approval_summary,
    parse_client,
    parse_client_stripped,
    parse_commission,
    parse_commission_summary,
    parse_order,
    parse_order_stripped,
    parse_page_meta,
    parse_strain,
    strip_medical,
)

CLIENT_DETAIL: dict[str, Any] = {
    "id": "2cbab026-9dc6-46fd-8580-77e3dfd2f086",
    "firstName": "Jane",
    "isActive": True,
    "adminApproval": "VERIFIED",
    "isKYCVerified": True,
    "createdAt": "2026-05-02T08:00:00.000Z",
    "updatedAt": "2026-05-04T10:21:00.000Z",
    "medicalRecord": {"dob": "1990-01-01", "medicalConditions": ["anxiety"]},
}


ORDER_ITEM: dict[str, Any] = {
    "id": "o-1",
    "orderStatus": "PENDING",
    "adminApproval": "APPROVED",
    "paymentStatus": "PAID",
    "createdAt": "2026-05-02T08:00:00.000Z",
    "client": {"id": "c", "firstName": "Jane"},
    "orderLines": [{"strainId": "s", "quantity": 2}],
}


class TestMedicalData:
    def test_stripped_at_any_depth(self) -> None:
        """``medicalRecord`` is removed wherever it appears, the rest kept."""
        value = {"a": [{"medicalRecord": {"x": 1}, "b": 2}], "medicalRecord": None}
        assert strip_medical(value) == {"a": [{"b": 2}]}

    def test_stripped_inside_other_mappings_and_lists(self) -> None:
        """A mapping that is not a dict, and a list subclass, are copied without medical keys."""

        class Items(list[Any]):
            pass

        value = UserDict({"medicalRecord": 1, "items": Items([{"medicalRecord": 2, "n": 3}])})
        assert strip_medical(value) == {"items": [{"n": 3}]}

    def test_other_values_pass_through(self) -> None:
        """A value of a type JSON does not decode to (a Decimal amount) comes back as it is."""
        value = {"amount": Decimal("1.50")}
        assert strip_medical(value)["amount"] is value["amount"]

    def test_strip_leaves_the_input_alone(self) -> None:
        """``strip_medical`` copies: the value it was given keeps its keys."""
        value = {"a": {"medicalRecord": 1}}
        strip_medical(value)
        assert value == {"a": {"medicalRecord": 1}}

    @pytest.mark.parametrize(
        "text",
        [
            '{"medicalRecord": {"dob": "1990"}, "id": "c"}',
            '{"data": {"clients": [{"id": "c", "x": [{"y": {"medicalRecord": 1}}]}]}}',
            '{"data": {"medical\\u0052ecord": "escaped", "id": "c"}}',
            '[[{"\\u006dedicalRecord": 1}], {"medicalRecord": [{"medicalRecord": 2}]}]',
            '{"note": "caf\\u00e9", "c": {"medical\\u0052ecord": 1}}',
        ],
    )
    def test_decoded_without_medical_keys_at_any_depth(self, text: str) -> None:
        """Decoding drops ``medicalRecord`` from every object, at any depth, however escaped."""
        decoded = loads_without_medical(text.encode())
        assert "medicalRecord" not in repr(decoded)
        assert decoded == strip_medical(json.loads(text))

    def test_decoding_keeps_everything_else(self) -> None:
        """A document without medical keys decodes exactly as ``json.loads`` decodes it."""
        text = json.dumps({"orders": [ORDER_ITEM, {**ORDER_ITEM, "id": "o-2"}], "n": [1, 2.5]})
        assert loads_without_medical(text) == json.loads(text)

    @pytest.mark.parametrize(
        "text",
        [
            '{"orders":[{"id":"o-1","totalAmount":100,"price":12.5,"nft":{"tokenId":7}}]}',
            '{"wei":123456789012345678901234567890,"n":-9223372036854775809}',
            '{"big":18446744073709551616,"top":18446744073709551615}',
            '{"x":NaN,"y":Infinity}',
            '{"a":1,"a":2}',
            '{"f":1e400,"g":1E5,"h":-0.0,"i":0.1}',
            '{"s":"tab\\tquote\\"slash\\/caf\\u00e9\\u0001"}',
            '{"s":"café ☕"}',
            "[]",
            '"\\ud800"',
        ],
    )
    def test_compact_bytes_decode_exactly_as_the_stdlib(self, text: str) -> None:
        """Bytes without a medical key decode to what ``json.loads`` gives, type for type
        (a 65-bit integer stays an int, NaN is read, the last of duplicate keys wins)."""
        assert repr(loads_without_medical(text.encode())) == repr(json.loads(text))

    def test_compact_escaped_medical_key_is_dropped(self) -> None:
        """A medical key spelled with ``\\u`` escapes in compact JSON is dropped all the same."""
        text = '{"id":"c","medical\\u0052ecord":{"dob":"1990"},"c":[{"\\u006dedicalRecord":1}]}'
        assert loads_without_medical(text.encode()) == {"id": "c", "c": [{}]}

    def test_bytes_that_are_not_utf8_are_refused(self) -> None:
        """Bytes are read as UTF-8 only: anything else is a ValueError, not another encoding."""
        with pytest.raises(ValueError, match="utf-8"):
            loads_without_medical('{"medicalRecord": 1}'.encode("utf-16"))

    def test_stripped_parsers_read_what_the_decoder_gives(self) -> None:
        """``parse_*_stripped`` parse a decoded record as ``parse_*`` do, without a copy."""
        record = loads_without_medical(json.dumps(CLIENT_DETAIL))
        client = parse_client_stripped(record)
        assert client == parse_client(CLIENT_DETAIL)
        assert client.raw is record
        order = parse_order_stripped(dict(ORDER_ITEM))
        assert order == parse_order(ORDER_ITEM)

    def test_client_raw_has_no_medical_record(self) -> None:
        """A parsed client detail keeps its fields but never the medical record."""
        client = parse_client(CLIENT_DETAIL)
        assert "medicalRecord" not in client.raw
        assert "anxiety" not in repr(client)
        assert client.raw["firstName"] == "Jane"


class TestOrder:
    def test_list_item(self) -> None:
        """A list item carries all three status fields."""
        order = parse_order(
            {
                "id": "o",
                "orderStatus": "PENDING",
                "adminApproval": "VERIFIED",
                "paymentStatus": "PAID",
            }
        )
        assert (order.order_status, order.admin_approval, order.payment_status) == (
            "PENDING",
            "VERIFIED",
            "PAID",
        )

    def test_missing_fields_are_unknown(self) -> None:
        """A field the endpoint does not carry (adminApproval in recent/detail) is None."""
        order = parse_order({"id": "o", "orderStatus": "SHIPPED", "updatedAt": "2026-01-01"})
        assert order.admin_approval is None
        assert order.payment_status is None

    def test_unknown_enum_values_pass_through(self) -> None:
        """An enum value we have never seen is kept as it came."""
        assert parse_order({"id": "o", "paymentStatus": "ON_HOLD"}).payment_status == "ON_HOLD"

    def test_unknown_fields_tolerated(self) -> None:
        """New fields are kept in raw and do not break parsing."""
        assert parse_order({"id": "o", "deliveryCharge": 6}).raw["deliveryCharge"] == 6

    @pytest.mark.parametrize("value", [None, [], {"orderStatus": "PENDING"}, {"id": 5}])
    def test_malformed(self, value: Any) -> None:
        """A record that is not an object with a string id is malformed."""
        with pytest.raises(UpstreamMalformed):
            parse_order(value)


class TestClient:
    def test_legacy_approved_is_verified(self) -> None:
        """The legacy value APPROVED reads as VERIFIED."""
        assert parse_client({"id": "c", "adminApproval": "APPROVED"}).admin_approval == "VERIFIED"

    @pytest.mark.parametrize(("value", "expected"), [(True, True), ("false", False), (1, None)])
    def test_boolean_fields(self, value: Any, expected: bool | None) -> None:
        """Booleans may come as JSON booleans or "true"/"false"; anything else is unknown."""
        assert parse_client({"id": "c", "isKYCVerified": value}).is_kyc_verified is expected


class TestSummaries:
    def test_approval_summary(self) -> None:
        """Counts by adminApproval are read, numbers or numeric strings."""
        summary = parse_approval_summary(
            {"summary": {"PENDING": 3, "VERIFIED": "17", "REJECTED": 1, "totalCount": 21}}
        )
        assert (summary.pending, summary.verified, summary.rejected, summary.total) == (
            3,
            17,
            1,
            21,
        )

    def test_commission_summary(self) -> None:
        """USD amounts are read from each status bucket and the total."""
        summary = parse_commission_summary(
            {
                "commissionSummary": {
                    "PENDING": {"amountInDollar": 12.5, "amountInEth": 0.004},
                    "PAID": {"amountInDollar": 3.59, "amountInEth": 0.001149},
                    "totalInDollar": 16.09,
                }
            }
        )
        assert (summary.pending_usd, summary.paid_usd, summary.total_usd) == (12.5, 3.59, 16.09)

    def test_commission_summary_missing_bucket(self) -> None:
        """A missing bucket is unknown, not zero."""
        summary = parse_commission_summary({"commissionSummary": {"totalInDollar": 1}})
        assert summary.paid_usd is None

    def test_summary_wrong_shape(self) -> None:
        """A summary response without its object is malformed."""
        with pytest.raises(UpstreamMalformed):
            parse_approval_summary({"counts": {}})

    def test_commission_row(self) -> None:
        """A commission row keeps its USD amount and status."""
        row = parse_commission({"id": "k", "amountInDollar": "3.5", "paymentStatus": "PAID"})
        assert (row.amount_usd, row.payment_status) == (3.5, "PAID")


class TestStrain:
    def test_location_stock_wins(self) -> None:
        """Stock is read from the country's location when present."""
        strain = parse_strain(
            {
                "id": "s",
                "name": "Blue Dream",
                "retailPrice": 10,
                "stockQuantity": 1200,
                "strainLocations": [{"stockQuantity": 300}],
                "isAvailable": True,
            }
        )
        assert (strain.stock_quantity, strain.retail_price, strain.is_available) == (300, 10, True)

    def test_top_level_stock_fallback(self) -> None:
        """Without locations, the top-level stock is used."""
        assert parse_strain({"id": "s", "stockQuantity": 7}).stock_quantity == 7


class TestPageMeta:
    def test_string_fields(self) -> None:
        """page and take may be strings (when supplied in the request)."""
        meta = parse_page_meta(
            {"page": "2", "take": "50", "itemCount": 120, "pageCount": 3, "hasNextPage": True},
            page=2,
            take=50,
            items=50,
        )
        assert (meta.page, meta.take, meta.item_count, meta.page_count) == (2, 50, 120, 3)
        assert meta.has_next_page

    def test_number_fields(self) -> None:
        """page and take may be numbers (when absent from the request)."""
        meta = parse_page_meta(
            {"page": 1, "take": 10, "itemCount": 0, "pageCount": 0, "hasNextPage": False},
            page=1,
            take=10,
            items=0,
        )
        assert (meta.page, meta.take, meta.has_next_page) == (1, 10, False)

    def test_next_page_from_page_count(self) -> None:
        """Without hasNextPage, the page count decides."""
        meta = parse_page_meta({"pageCount": "3"}, page=2, take=10, items=10)
        assert meta.has_next_page

    def test_missing_meta_uses_fullness(self) -> None:
        """Without pageMetaDto, only a full page suggests there may be another."""
        assert parse_page_meta(None, page=1, take=10, items=10).has_next_page
        assert not parse_page_meta(None, page=1, take=10, items=3).has_next_page
