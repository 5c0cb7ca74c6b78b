"""Typed views of Dr Green records, parsed at the API boundary.

Each model keeps the few fields the poller reasons about, typed, plus ``raw``: the record as
received minus anything medical. A field the response did not carry is ``None`` ("unknown"),
never a default value, so change detection cannot mistake an absent field for a change. Enum
values stay raw strings: an unknown value passes through. Medical keys go at decoding
(``loads_without_medical``: unread when no key's name is in the bytes, else one cheap hook per
JSON object) or, for data decoded elsewhere, by ``strip_medical``'s copy; ``parse_*`` strip,
``parse_*_stripped`` trust the decoder. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from drgreen_poller.errors import UpstreamMalformed

T = TypeVar("T")

Json = Any
JsonObject = Mapping[str, Any]

# Keys that carry a customer's medical data; they never leave the API boundary.
MEDICAL_KEYS = frozenset({"medicalRecord"})
_MEDICAL_KEYS_UTF8 = tuple(key.encode() for key in MEDICAL_KEYS)

# Legacy stores hold "APPROVED" where Dr Green says "VERIFIED".
_APPROVAL_ALIASES = {"APPROVED": "VERIFIED"}


# Types ``strip_medical`` hands back as they are without looking inside (JSON's scalars).
_SCALARS = frozenset({str, int, float, bool, type(None)})


def strip_medical(value: Json) -> Json:
    """A copy of ``value`` with every medical key removed, at any depth."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or (kind is not dict and isinstance(value, list)):
        return [v if type(v) in _SCALARS else strip_medical(v) for v in value]
    if kind is dict or isinstance(value, Mapping):
        return {
            k: v if type(v) in _SCALARS else strip_medical(v)
            for k, v in value.items()
            if k not in MEDICAL_KEYS
        }
    return value


def drop_medical_keys(obj: dict[str, Json]) -> dict[str, Json]:
    """``json.loads`` object hook: a decoded object loses its medical keys (every object is
    decoded through it, so no depth escapes). Changes ``obj`` in place and returns it."""
    for key in MEDICAL_KEYS:
        obj.pop(key, None)
    return obj


def loads_without_medical(text: str | bytes) -> Json:
    """Decode JSON with every medical key removed at any depth, however its name was escaped.

    Bytes in which no medical key's name appears are decoded by orjson (about twice as fast as
    the stdlib on an order page) when that decoding is exactly the stdlib's: orjson turns an
    integer beyond 64 bits into a float and refuses what the stdlib accepts (NaN, lone
    surrogates), so its result is kept only when encoding it back gives the very bytes received
    (``_orjson_exact``). Any other text goes through the stdlib with the per-object hook.

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``), or bytes that are not UTF-8.
    """
    if isinstance(text, bytes | bytearray):
        if not any(key in text for key in _MEDICAL_KEYS_UTF8):
            decoded = _orjson_exact(bytes(text))
            if decoded is not _INEXACT:
                return decoded
        text = text.decode("utf-8")
    if "\\u" not in text and not any(key in text for key in MEDICAL_KEYS):
        return json.loads(text)
    return json.loads(text, object_hook=drop_medical_keys)


# What ``_orjson_exact`` returns when orjson's decoding may differ from the stdlib's.
_INEXACT: Any = object()


def _orjson_exact(body: bytes) -> Json:
    """``body`` decoded by orjson, or ``_INEXACT`` unless that equals ``json.loads``'s result.

    Encoding the result back must give ``body`` byte for byte (compact JSON as Dr Green and the
    sandbox send it). Then every number was read as the stdlib reads it (an integer orjson made
    a float comes back as ``1.2e+29``, not as its digits; both round floats correctly), every
    string is the one the stdlib decodes, and the text held no ``\\u`` escape of a letter (orjson
    writes letters as they are), so no medical key's name was hidden from the check before.
    Duplicate keys, spaces or other escapes do not come back the same: the stdlib decodes those.
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _INEXACT  # the stdlib decides (it accepts NaN; or it fails with its own message)
    return decoded if orjson.dumps(decoded) == body else _INEXACT


def _obj(value: Json, what: str) -> JsonObject:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise UpstreamMalformed(f"{what} is a {type(value).__name__}, not an object")
    return value


def _id(record: JsonObject, what: str) -> str:
    value = record.get("id")
    if not isinstance(value, str) or not value:
        raise UpstreamMalformed(f"{what} has no string id")
    return value


def _str(record: JsonObject, key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _bool(record: JsonObject, key: str) -> bool | None:
    value = record.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return None


def _number(value: Json) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int(value: Json) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _approval(record: JsonObject) -> str | None:
    value = _str(record, "adminApproval")
    return _APPROVAL_ALIASES.get(value, value) if value is not None else None


@dataclass(frozen=True, slots=True)
class PageMeta:
    """``pageMetaDto``, with the string-or-number fields coerced to numbers."""

    page: int
    take: int
    item_count: int | None
    page_count: int | None
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list endpoint."""

    items: list[T]
    meta: PageMeta


def parse_page_meta(value: Json, *, page: int, take: int, items: int) -> PageMeta:
    """Parse ``pageMetaDto``; without one, a full page is taken to mean there may be more."""
    if not isinstance(value, Mapping):
        return PageMeta(page, take, None, None, has_next_page=items >= take)
    has_next = value.get("hasNextPage")
    page_count = _int(value.get("pageCount"))
    if not isinstance(has_next, bool):
        has_next = page_count is not None and page < page_count
    return PageMeta(
        page=_int(value.get("page")) or page,
        take=_int(value.get("take")) or take,
        item_count=_int(value.get("itemCount")),
        page_count=page_count,
        has_next_page=has_next,
    )


# Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which doubles
# the cost of parsing an order page (a hundred orders every run of every holder). Nothing
# changes an ``Order`` after parsing.
@dataclass(slots=True)
class Order:
    """An order as one endpoint showed it; ``None`` means that endpoint did not say."""

    id: str
    order_status: str | None
    admin_approval: str | None
    payment_status: str | None
    created_at: str | None
    updated_at: str | None
    raw: JsonObject


def parse_order(value: Json) -> Order:
    """An ``Order`` from any decoded record (medical keys stripped by a copy)."""
    return parse_order_stripped(strip_medical(value))


def parse_order_stripped(value: Json) -> Order:
    """An ``Order`` from a record that ``loads_without_medical`` decoded (no copy made).

    The fields are read inline (``_str``'s and ``_approval``'s rules): a page is a hundred
    orders, parsed every run.
    """
    record = _obj(value, "order")
    get = record.get
    status, approval, payment = get("orderStatus"), get("adminApproval"), get("paymentStatus")
    created, updated = get("createdAt"), get("updatedAt")
    return Order(
        _id(record, "order"),
        status if isinstance(status, str) else None,
        _APPROVAL_ALIASES.get(approval, approval) if isinstance(approval, str) else None,
        payment if isinstance(payment, str) else None,
        created if isinstance(created, str) else None,
        updated if isinstance(updated, str) else None,
        record,
    )


@dataclass(frozen=True, slots=True)
class Client:
    """A client (customer) without any medical data; ``None`` means the endpoint did not say."""

    id: str
    is_kyc_verified: bool | None
    admin_approval: str | None
    is_active: bool | None
    verified_at: str | None
    created_at: str | None
    updated_at: str | None
    raw: JsonObject


def parse_client(value: Json) -> Client:
    """A ``Client`` from any decoded record (medical keys stripped by a copy)."""
    return parse_client_stripped(strip_medical(value))


def parse_client_stripped(value: Json) -> Client:
    """A ``Client`` from a record that ``loads_without_medical`` decoded (no copy made)."""
    record = _obj(value, "client")
    return Client(
        id=_id(record, "client"),
        is_kyc_verified=_bool(record, "isKYCVerified"),
        admin_approval=_approval(record),
        is_active=_bool(record, "isActive"),
        verified_at=_str(record, "verifiedAt"),
        created_at=_str(record, "createdAt"),
        updated_at=_str(record, "updatedAt"),
        raw=record,
    )


@dataclass(frozen=True, slots=True)
class ApprovalSummary:
    """Counts by ``adminApproval`` from ``/orders/summary`` or ``/clients/summary``."""

    pending: int | None
    verified: int | None
    rejected: int | None
    total: int | None
    raw: JsonObject


def parse_approval_summary(value: Json) -> ApprovalSummary:
    record = _obj(_obj(value, "summary response").get("summary"), "summary")
    return ApprovalSummary(
        pending=_int(record.get("PENDING")),
        verified=_int(record.get("VERIFIED")),
        rejected=_int(record.get("REJECTED")),
        total=_int(record.get("totalCount")),
        raw=record,
    )


@dataclass(frozen=True, slots=True)
class CommissionSummary:
    """The holder's commission totals; compare the USD figures (ETH drifts with the price)."""

    pending_usd: float | None
    paid_usd: float | None
    total_usd: float | None
    raw: JsonObject


def parse_commission_summary(value: Json) -> CommissionSummary:
    record = _obj(_obj(value, "commission response").get("commissionSummary"), "commissionSummary")

    def usd(status: str) -> float | None:
        bucket = record.get(status)
        return _number(bucket.get("amountInDollar")) if isinstance(bucket, Mapping) else None

    return CommissionSummary(
        pending_usd=usd("PENDING"),
        paid_usd=usd("PAID"),
        total_usd=_number(record.get("totalInDollar")),
        raw=record,
    )


@dataclass(frozen=True, slots=True)
class Commission:
    """One commission row."""

    id: str
    amount_usd: float | None
    payment_status: str | None
    raw: JsonObject


def parse_commission(value: Json) -> Commission:
    record = _obj(strip_medical(value), "commission")
    return Commission(
        id=_id(record, "commission"),
        amount_usd=_number(record.get("amountInDollar")),
        payment_status=_str(record, "paymentStatus"),
        raw=record,
    )


@dataclass(frozen=True, slots=True)
class Strain:
    """A strain of the catalogue as seen for one country."""

    id: str
    name: str | None
    retail_price: float | None
    stock_quantity: float | None
    is_available: bool | None
    is_active: bool | None
    raw: JsonObject


def _location_stock(record: JsonObject) -> float | None:
    locations = record.get("strainLocations")
    if isinstance(locations, list) and locations and isinstance(locations[0], Mapping):
        return _number(locations[0].get("stockQuantity"))
    return _number(record.get("stockQuantity"))


def parse_strain(value: Json) -> Strain:
    record = _obj(value, "strain")
    return Strain(
        id=_id(record, "strain"),
        name=_str(record, "name"),
        retail_price=_number(record.get("retailPrice")),
        stock_quantity=_location_stock(record),
        is_available=_bool(record, "isAvailable"),
        is_active=_bool(record, "isActive"),
        raw=record,
    )
