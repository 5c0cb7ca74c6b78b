"""Clients and carts in the exact JSON shapes of the Dr Green API (§3.6–3.8, §7.1).

Owns the client list item, detail (with the medical record, as the real server returns it), raw
row, verified-client brief and the cart listing. It must not filter, sort or change anything.
"""

from __future__ import annotations

from typing import Any

from drgreen_poller.sandbox.dapp.records import Json, logs, nft, shipping
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import Client, iso, iso_or_none, num

MEDICAL_COLUMNS = (
    "dob", "gender", "medicalConditions", "otherMedicalCondition", "medicinesTreatments",
    "otherMedicalTreatments", "medicalHistory0", "medicalHistory1", "medicalHistory2",
    "medicalHistory3", "medicalHistory4", "medicalHistory5", "medicalHistory6",
    "medicalHistory7", "medicalHistory7Relation", "medicalHistory8", "medicalHistory9",
    "medicalHistory10", "medicalHistory11", "medicalHistory12", "medicalHistory13",
    "medicalHistory14", "medicalHistory15", "medicalHistory16", "prescriptionsSupplements",
)  # fmt: skip


def client_contact(client: Client) -> Json:
    """Who a client is, as the first fields of every client shape (id, names, e-mail, phone)."""
    return {
        "id": client.id,
        "firstName": client.first_name,
        "lastName": client.last_name,
        "email": client.email,
        "phoneCountryCode": client.phone_country_code,
        "phoneCode": client.phone_code,
        "contactNumber": client.contact_number,
    }


def client_list_item(
    state: World, client: Client, *, with_note: bool = False, with_logs: bool = False
) -> Json:
    """An item of ``GET /dapp/clients``."""
    item: Json = {
        **client_contact(client),
        "isActive": client.is_active,
        "adminApproval": client.admin_approval,
        "isKYCVerified": client.is_kyc_verified,
        "verifiedAt": iso_or_none(client.verified_at),
        "rejectedAt": iso_or_none(client.rejected_at),
    }
    if with_note:
        item["rejectionNote"] = client.rejection_note
    if with_logs:
        item["clientLogs"] = logs(client)
    item.update(
        nft=nft(state.holders[client.holder]),
        shippings=[{"country": address.country} for address in client.shippings],
        createdAt=iso(client.created_at),
        updatedAt=iso(client.updated_at),
        clientCart=[{"id": client.cart_id}],
    )
    return item


def medical_record(record: dict[str, Any] | None) -> Json | None:
    if record is None:
        return None
    head = {"id": record.get("id")}
    columns = {column: record.get(column) for column in MEDICAL_COLUMNS}
    extra = {k: v for k, v in record.items() if k not in columns and k not in head}
    return {**head, **columns, **extra}


def client_detail(state: World, client: Client) -> Json:
    """``GET /dapp/clients/{clientId}``: the client with addresses and its medical record."""
    return {
        **client_contact(client),
        "isActive": client.is_active,
        "nft": nft(state.holders[client.holder]),
        "adminApproval": client.admin_approval,
        "isKYCVerified": client.is_kyc_verified,
        "createdAt": iso(client.created_at),
        "updatedAt": iso(client.updated_at),
        "clientCart": [{"id": client.cart_id}],
        "shippings": [shipping(address) for address in client.shippings],
        "clientBusinesses": [dict(business) for business in client.businesses],
        "medicalRecord": medical_record(client.medical_record),
    }


def client_row(state: World, client: Client) -> Json:
    """The raw client row, as ``POST /dapp/clients`` returns it under ``client``."""
    holder = state.holders[client.holder]
    return {
        **client_contact(client),
        "caseId": client.case_id,
        "maxRetries": client.max_retries,
        "adminApproval": client.admin_approval,
        "isKYCVerified": client.is_kyc_verified,
        "isActive": client.is_active,
        "rejectionNote": client.rejection_note,
        "verifiedAt": iso_or_none(client.verified_at),
        "rejectedAt": iso_or_none(client.rejected_at),
        "createdAt": iso(client.created_at),
        "updatedAt": iso(client.updated_at),
        "deletedAt": None,
        "nftId": None if holder.nft is None else holder.nft.id,
    }


def client_brief(client: Client) -> Json:
    """An item of ``GET /dapp/clients/list``."""
    return {
        "id": client.id,
        "firstName": client.first_name,
        "lastName": client.last_name,
        "clientCart": [{"id": client.cart_id}],
        "shippings": [
            {"country": a.country, "countryCode": a.country_code} for a in client.shippings
        ],
    }


def cart_client(state: World, client: Client) -> Json:
    """An item of ``GET /dapp/carts``: a client with its cart's items (sandbox's reading)."""
    items = []
    for strain_id, quantity in client.cart.items():
        strain = state.tables.strains[strain_id]
        items.append(
            {
                "quantity": num(quantity),
                "strain": {
                    "id": strain.id,
                    "name": strain.name,
                    "imageUrl": strain.image_key,
                    "retailPrice": num(strain.retail_price),
                    "wholeSalePrice": num(strain.wholesale_price),
                },
            }
        )
    return {
        "id": client.id,
        "firstName": client.first_name,
        "lastName": client.last_name,
        "email": client.email,
        "clientCart": [{"id": client.cart_id, "cartItems": items}],
    }
