"""A store's edits of its own clients (``PATCH /dapp/clients/{clientId}``), as the backend does.

Owns what the edit may change (names, email, contact number and phone codes; every address and
business of the client, field by field; the medical record, created when missing), the 404 for a
client outside the holder's NFT, the 409s for an email or contact number another client has, and
a new KYC case when an unverified client's email changes. It must not validate types (the
caller's DTO does) nor touch KYC, approval or ``isActive``, which the backend's edit cannot set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drgreen_poller.sandbox.world.clients import Clients
from drgreen_poller.sandbox.world.model import Client, ServiceRefusal, iso
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

# Edit field → Client attribute, for the plain columns an edit may set.
IDENTITY_FIELDS: Mapping[str, str] = {
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "contactNumber": "contact_number",
    "phoneCountryCode": "phone_country_code",
    "phoneCode": "phone_code",
}
# Wire name of an address field → ``Shipping`` attribute.
SHIPPING_FIELDS: Mapping[str, str] = {
    "address1": "address1",
    "address2": "address2",
    "landmark": "landmark",
    "city": "city",
    "state": "state",
    "country": "country",
    "countryCode": "country_code",
    "postalCode": "postal_code",
}


@dataclass(frozen=True, slots=True)
class ClientEdit:
    """A validated edit: only the keys present are written."""

    identity: Mapping[str, str] = field(default_factory=dict)
    shipping: Mapping[str, Any] | None = None
    business: Mapping[str, Any] | None = None
    medical_record: Mapping[str, Any] | None = None


class Profiles:
    """The store's client edits, over the world's shared tables and the client rules."""

    def __init__(self, tables: Tables, clients: Clients) -> None:
        self._t = tables
        self._clients = clients

    def edit(self, holder: HolderRef, client_id: str, change: ClientEdit) -> Client:
        """Apply ``change`` to the holder's client and bump its ``updatedAt``.

        Raises:
            ServiceRefusal: 404 "Client not found" outside the holder's NFT; 409 when the new
                email or contact number belongs to another client.
        """
        client = self._clients.held(holder, client_id)
        if client is None:
            raise ServiceRefusal(404, "Client not found")
        self._check_unique(client, change.identity)
        new_case = "email" in change.identity and change.identity["email"] != client.email
        self._write_identity(client, change.identity)
        if new_case and not client.is_kyc_verified:
            client.case_id = f"case-{self._t.rng.randrange(100000, 1000000)}"
        shipping, business = change.shipping or {}, change.business or {}
        for address in client.shippings:  # the backend's updateMany: every address alike
            for name, value in shipping.items():
                setattr(address, SHIPPING_FIELDS[name], value)
        for row in client.businesses:
            row.update(business)
        when = self._t.now()
        if change.medical_record is not None:
            self._upsert_medical(client, change.medical_record, iso(when))
        client.updated_at = when
        return client

    def _check_unique(self, client: Client, identity: Mapping[str, str]) -> None:
        email, phone = identity.get("email"), identity.get("contactNumber")
        if email and email != client.email and email in self._t.client_emails:
            raise ServiceRefusal(409, "Client Email ID already exists")
        if phone and phone != client.contact_number and phone in self._t.client_phones:
            raise ServiceRefusal(409, "Phone Number already exists")

    def _write_identity(self, client: Client, identity: Mapping[str, str]) -> None:
        self._t.client_emails.pop(client.email, None)
        self._t.client_phones.pop(client.contact_number, None)
        for name, value in identity.items():
            setattr(client, IDENTITY_FIELDS[name], value)
        self._t.client_emails[client.email] = client.id
        self._t.client_phones[client.contact_number] = client.id

    def _upsert_medical(self, client: Client, fields: Mapping[str, Any], stamp: str) -> None:
        if client.medical_record is None:
            client.medical_record = {"id": self._t.new_id(), "createdAt": stamp}
        client.medical_record.update(fields)
        client.medical_record.update(updatedAt=stamp, clientId=client.id)
