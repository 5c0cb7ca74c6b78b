"""Validation of ``PATCH /dapp/clients/{clientId}`` bodies, as ``UpdateClientDto`` does it.

Owns the editable fields (all optional strings), the nested ``shipping`` (every address field
but ``landmark`` required), ``clientBusiness`` and ``medicalRecord`` checks with their prefixed
messages, and the whitelist that silently drops every other key (``isActive`` and
``adminApproval`` included: a store cannot set them). It must not store anything.
"""

from __future__ import annotations

import re
from typing import Any

from drgreen_poller.sandbox.dapp.client_dto import FREQUENCIES, METHODS
from drgreen_poller.sandbox.dapp.client_records import MEDICAL_COLUMNS
from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.world.inputs import parse_iso
from drgreen_poller.sandbox.world.profiles import IDENTITY_FIELDS, SHIPPING_FIELDS, ClientEdit

_ALPHA3_RE = re.compile(r"[A-Z]{3}")
SHIPPING_OPTIONAL = ("landmark",)
BUSINESS_FIELDS = (*SHIPPING_FIELDS, "name", "businessType")
BUSINESS_REQUIRED = ("postalCode",)


def _strings(
    data: dict[str, Any], names: tuple[str, ...], required: tuple[str, ...], prefix: str
) -> tuple[dict[str, Any], list[str]]:
    """The string fields present in ``data`` and the messages for the wrong or missing ones."""
    kept: dict[str, Any] = {}
    messages: list[str] = []
    for name in names:
        value = data.get(name)
        if value is None and name not in required:
            continue
        if not isinstance(value, str):
            messages.append(f"{prefix}{name} must be a string")
        elif name == "countryCode" and not _ALPHA3_RE.fullmatch(value):
            messages.append(f"{prefix}{name} must be a valid ISO31661 Alpha3 code")
        else:
            kept[name] = value
    return kept, messages


def _nested(data: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, list[str]]:
    value = data.get(name)
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [f"nested property {name} must be either object or array"]
    return value, []


def _medical(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    messages: list[str] = []
    dob = record.get("dob")
    if dob is not None and (not isinstance(dob, str) or parse_iso(dob) is None):
        messages.append("medicalRecord.dob must be a valid ISO 8601 date string")
    gender = record.get("gender")
    if gender is not None and not isinstance(gender, str):
        messages.append("medicalRecord.gender must be a string")
    frequency = record.get("medicalHistory13")
    if frequency is not None and frequency not in FREQUENCIES:
        allowed = ", ".join(FREQUENCIES)
        messages.append(
            f"medicalRecord.medicalHistory13 must be one of the following values: {allowed}"
        )
    methods = record.get("medicalHistory14")
    if methods is not None and (
        not isinstance(methods, list) or any(m not in METHODS for m in methods)
    ):
        allowed = ", ".join(METHODS)
        messages.append(
            f"medicalRecord.medicalHistory14 must be one of the following values: {allowed}"
        )
    return {column: record[column] for column in MEDICAL_COLUMNS if column in record}, messages


def parse_client_edit(body: Any) -> ClientEdit:
    """Validate a ``PATCH /dapp/clients/{clientId}`` body; unknown keys are dropped.

    Raises:
        ApiError: 400 with every class-validator message.
    """
    data = body if isinstance(body, dict) else {}
    identity, messages = _strings(data, tuple(IDENTITY_FIELDS), (), "")
    shipping_raw, found = _nested(data, "shipping")
    messages += found
    shipping = None
    if shipping_raw is not None:
        required = tuple(n for n in SHIPPING_FIELDS if n not in SHIPPING_OPTIONAL)
        shipping, found = _strings(shipping_raw, tuple(SHIPPING_FIELDS), required, "shipping.")
        messages += found
    business_raw, found = _nested(data, "clientBusiness")
    messages += found
    business = None
    if business_raw is not None:
        business, found = _strings(
            business_raw, BUSINESS_FIELDS, BUSINESS_REQUIRED, "clientBusiness."
        )
        messages += found
    medical_raw, found = _nested(data, "medicalRecord")
    messages += found
    medical = None
    if medical_raw is not None:
        medical, found = _medical(medical_raw)
        messages += found
    if messages:
        raise ApiError(400, messages, validation=True)
    return ClientEdit(identity, shipping, business, medical)
