"""Validation of ``POST /dapp/clients`` bodies, as ``CreateClientDto`` and class-validator do.

Owns the required fields, their messages (nested ones prefixed with the parent, e.g.
``shipping.countryCode must be a valid ISO31661 Alpha3 code``) and the whitelist that drops
unknown keys. It must not store anything: the handler passes the result to the state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drgreen_poller.sandbox.dapp.client_records import MEDICAL_COLUMNS
from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.world.clients import Identity
from drgreen_poller.sandbox.world.inputs import parse_iso

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_ALPHA2_RE = re.compile(r"[A-Z]{2}")
_ALPHA3_RE = re.compile(r"[A-Z]{3}")
ADDRESS_REQUIRED = ("address1", "city", "state", "country", "postalCode")
ADDRESS_OPTIONAL = ("address2", "landmark")
BUSINESS_FIELDS = ("name", "businessType", *ADDRESS_REQUIRED, *ADDRESS_OPTIONAL, "countryCode")
FREQUENCIES = ("everyday", "every_other_day", "1_2_times_per_week", "never")
METHODS = ("smoking_joints", "vaporizing", "ingestion", "topical", "never")


@dataclass(frozen=True, slots=True)
class NewClient:
    """A validated ``CreateClientDto``."""

    identity: Identity
    shipping: dict[str, Any]
    business: dict[str, Any] | None
    medical_record: dict[str, Any] | None


class _Messages:
    def __init__(self) -> None:
        self.items: list[str] = []

    def text(self, data: dict[str, Any], name: str, prefix: str = "") -> str:
        value = data.get(name)
        if value is None or value == "":
            self.items.append(f"{prefix}{name} should not be empty")
        elif not isinstance(value, str):
            self.items.append(f"{prefix}{name} must be a string")
        else:
            return value
        return ""

    def pattern(self, data: dict[str, Any], name: str, regex: re.Pattern[str], what: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not regex.fullmatch(value):
            self.items.append(f"{name} {what}")
            return ""
        return value

    def obj(self, data: dict[str, Any], name: str) -> dict[str, Any] | None:
        value = data.get(name)
        if value is None:
            self.items.append(f"{name} should not be empty")
            return None
        if not isinstance(value, dict):
            self.items.append(f"{name} must be a non-empty object")
            return None
        return value


def _email(data: dict[str, Any], messages: _Messages) -> str:
    value = data.get("email")
    if not isinstance(value, str) or not _EMAIL_RE.fullmatch(value):
        messages.items.append("email must be an email")
        return ""
    if value != value.lower():
        messages.items.append("email must be a lowercase string")
    return value


def _address(data: dict[str, Any], messages: _Messages) -> dict[str, Any]:
    shipping = messages.obj(data, "shipping")
    if shipping is None:
        return {}
    address: dict[str, Any] = {
        name: messages.text(shipping, name, "shipping.") for name in ADDRESS_REQUIRED
    }
    for name in ADDRESS_OPTIONAL:
        value = shipping.get(name)
        if value is not None and not isinstance(value, str):
            messages.items.append(f"shipping.{name} must be a string")
        address[name] = value if isinstance(value, str) else None
    code = shipping.get("countryCode")
    if not isinstance(code, str) or not _ALPHA3_RE.fullmatch(code):
        messages.items.append("shipping.countryCode must be a valid ISO31661 Alpha3 code")
    address["countryCode"] = code
    return address


def _choices(
    record: dict[str, Any], name: str, allowed: Sequence[str], messages: _Messages
) -> None:
    values = record.get(name)
    if values is None:
        return
    if not isinstance(values, list) or any(v not in allowed for v in values):
        messages.items.append(
            f"medicalRecord.{name} must be one of the following values: {', '.join(allowed)}"
        )
    elif "never" in values and len(values) > 1:
        messages.items.append(f"medicalRecord.{name} cannot combine never with other values")


def _medical(data: dict[str, Any], country: Any, messages: _Messages) -> dict[str, Any] | None:
    if data.get("verificationType") == "ID" and country == "ZAF" and "medicalRecord" not in data:
        return None  # the South-African ID path needs no questionnaire
    record = messages.obj(data, "medicalRecord")
    if record is None:
        return None
    dob = record.get("dob")
    if not isinstance(dob, str) or parse_iso(dob) is None:
        messages.items.append("medicalRecord.dob must be a valid ISO 8601 date string")
    messages.text(record, "gender", "medicalRecord.")
    frequency = record.get("medicalHistory13")
    if frequency is not None and frequency not in FREQUENCIES:
        messages.items.append(
            "medicalRecord.medicalHistory13 must be one of the following values: "
            + ", ".join(FREQUENCIES)
        )
    _choices(record, "medicalHistory14", METHODS, messages)
    return {column: record[column] for column in MEDICAL_COLUMNS if column in record}


def parse_new_client(body: Any) -> NewClient:
    """Validate a ``POST /dapp/clients`` body; unknown keys are dropped (whitelist).

    Raises:
        ApiError: 400 with every class-validator message.
    """
    data = body if isinstance(body, dict) else {}
    messages = _Messages()
    first = messages.text(data, "firstName")
    last = messages.text(data, "lastName")
    email = _email(data, messages)
    phone_code = messages.text(data, "phoneCode")
    alpha2 = "must be a valid ISO31661 Alpha2 code"
    phone_country = messages.pattern(data, "phoneCountryCode", _ALPHA2_RE, alpha2)
    contact = messages.text(data, "contactNumber")
    shipping = _address(data, messages)
    business = data.get("clientBusiness")
    if business is not None and not isinstance(business, dict):
        messages.items.append("clientBusiness must be an object")
    medical = _medical(data, shipping.get("countryCode"), messages)
    if messages.items:
        raise ApiError(400, messages.items, validation=True)
    identity = Identity(first, last, email, contact, phone_code, phone_country)
    kept = None if business is None else {k: business[k] for k in BUSINESS_FIELDS if k in business}
    return NewClient(identity, shipping, kept, medical)
