"""Clients of the sandbox world: creation, lookup and the KYC/approval lifecycle (§4.2).

Owns client identity rules (unique lowercase email, unique contact number), the transitions an
admin or FirstAML would make, and the shipping country carts and orders check against. It must
not change carts (``carts.py`` does) nor create orders, nor know about HTTP or JSON shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drgreen_poller.sandbox.world.inputs import (
    as_bool,
    as_int,
    as_opt_dict,
    as_opt_str,
    as_str,
    as_time,
)
from drgreen_poller.sandbox.world.model import (
    Client,
    Converter,
    LogEntry,
    ServiceRefusal,
    Shipping,
    StateConflict,
    UnknownEntity,
    apply_patch,
    country_name,
    iso,
)
from drgreen_poller.sandbox.world.tables import HolderRef, Tables

FIRST_NAMES = ("Jane", "Sam", "Amara", "Luis", "Priya", "Tom", "Ines", "Kofi", "Mei", "Olga")
LAST_NAMES = (
    "Doe",
    "Lee",
    "Okafor",
    "Silva",
    "Patel",
    "Brown",
    "Costa",
    "Mensah",
    "Wong",
    "Ivanova",
)
ADDRESSES: Mapping[str, tuple[str, str, str, str]] = {
    "GBR": ("1 High Street", "London", "London", "N1 1AA"),
    "PRT": ("Rua Augusta 10", "Lisboa", "Lisboa", "1100-053"),
    "ZAF": ("12 Long Street", "Cape Town", "Western Cape", "8001"),
    "THA": ("99 Sukhumvit Road", "Bangkok", "Bangkok", "10110"),
}
DEFAULT_MEDICAL_RECORD: Mapping[str, Any] = {
    "dob": "1990-01-01",
    "gender": "Female",
    "medicalConditions": ["anxiety"],
    "medicinesTreatments": [],
    "medicalHistory0": False,
    "medicalHistory5": ["none"],
    "medicalHistory7": ["none"],
    "medicalHistory11": "0",
    "medicalHistory13": "never",
    "medicalHistory14": ["never"],
}
CLIENT_FIELDS: Mapping[str, tuple[str, Converter]] = {
    "firstName": ("first_name", as_str),
    "lastName": ("last_name", as_str),
    "email": ("email", as_str),
    "phoneCountryCode": ("phone_country_code", as_str),
    "phoneCode": ("phone_code", as_str),
    "contactNumber": ("contact_number", as_str),
    "caseId": ("case_id", as_str),
    "maxRetries": ("max_retries", as_int),
    "adminApproval": ("admin_approval", as_str),
    "isKYCVerified": ("is_kyc_verified", as_bool),
    "isActive": ("is_active", as_bool),
    "rejectionNote": ("rejection_note", as_opt_str),
    "verifiedAt": ("verified_at", lambda v, n: None if v is None else as_time(v, n)),
    "rejectedAt": ("rejected_at", lambda v, n: None if v is None else as_time(v, n)),
    "createdAt": ("created_at", as_time),
    "updatedAt": ("updated_at", as_time),
    "medicalRecord": ("medical_record", as_opt_dict),
}


@dataclass(slots=True)
class Identity:
    """Who a new client is: the contact fields of ``CreateClientDto``."""

    first_name: str
    last_name: str
    email: str
    contact_number: str
    phone_code: str = "+44"
    phone_country_code: str = "GB"


class Clients:
    """The client rules, over the world's shared tables."""

    def __init__(self, tables: Tables) -> None:
        self._t = tables

    def get(self, client_id: str) -> Client:
        """The client with that id, whoever holds it.

        Raises:
            UnknownEntity: no such client.
        """
        try:
            return self._t.clients[client_id.lower()]
        except KeyError:
            raise UnknownEntity("client", client_id) from None

    def held(self, holder: HolderRef, client_id: str) -> Client | None:
        """The client with that id if it belongs to ``holder`` (the NFT scope)."""
        client = self._t.clients.get(client_id.lower())
        return (
            client if client is not None and client.holder == self._t.holder(holder).name else None
        )

    def of(self, holder: HolderRef) -> list[Client]:
        """The holder's clients in creation order."""
        return self._t.holder_clients[self._t.holder(holder).name]

    def shipping_country(self, client: Client) -> str:
        """The country of the client's newest address (what carts and orders check against).

        Raises:
            ServiceRefusal: 400 when the client has no address.
        """
        if not client.shippings:
            raise ServiceRefusal(400, "Client shipping address not found.")
        return client.shippings[0].country_code

    def generated_identity(self) -> Identity:
        """A fresh made-up identity whose email and contact number are not taken."""
        first = self._t.rng.choice(FIRST_NAMES)
        last = self._t.rng.choice(LAST_NAMES)
        n = len(self._t.clients) + 1
        while f"{first}.{last}.{n}@example.com".lower() in self._t.client_emails or (
            f"7700{n:06d}" in self._t.client_phones
        ):
            n += 1
        return Identity(first, last, f"{first}.{last}.{n}@example.com".lower(), f"7700{n:06d}")

    def default_shipping(self, country_code: str, when: datetime) -> Shipping:
        """A plausible address in ``country_code``."""
        street, city, region, postcode = ADDRESSES.get(
            country_code, ("1 Main Street", "Capital", "Capital", "00000")
        )
        name = country_name(country_code)
        return Shipping(self._t.new_id(), street, city, region, name, country_code, postcode, when)

    def add(
        self,
        holder: HolderRef,
        identity: Identity,
        shipping: Shipping,
        *,
        created_at: datetime | None = None,
        medical_record: Mapping[str, Any] | None = None,
    ) -> Client:
        """Store a new PENDING, not verified, inactive client with an empty cart.

        Raises:
            ServiceRefusal: 409 when the email or the contact number is already taken.
        """
        owner = self._t.holder(holder)
        if identity.email.lower() in self._t.client_emails:
            raise ServiceRefusal(409, "Client Email ID already exists")
        if identity.contact_number in self._t.client_phones:
            raise ServiceRefusal(409, "Phone Number already exists")
        when = created_at if created_at is not None else self._t.now()
        client = Client(
            id=self._t.new_id(),
            holder=owner.name,
            seq=self._t.next_seq(),
            first_name=identity.first_name,
            last_name=identity.last_name,
            email=identity.email.lower(),
            phone_country_code=identity.phone_country_code,
            phone_code=identity.phone_code,
            contact_number=identity.contact_number,
            created_at=when,
            updated_at=when,
            cart_id=self._t.new_id(),
            case_id=f"case-{self._t.rng.randrange(100000, 1000000)}",
            shippings=[shipping],
        )
        if medical_record is not None:
            client.medical_record = self._medical_record(client, medical_record, when)
        self._t.clients[client.id] = client
        self._t.holder_clients[owner.name].append(client)
        self._t.clients_by_cart[client.cart_id] = client
        self._t.client_emails[client.email] = client.id
        self._t.client_phones[client.contact_number] = client.id
        return client

    def _medical_record(
        self, client: Client, fields: Mapping[str, Any], when: datetime
    ) -> dict[str, Any]:
        stamp = iso(when)
        record = {"id": self._t.new_id(), **fields}
        record.update(createdAt=stamp, updatedAt=stamp, clientId=client.id)
        return record

    def create(
        self,
        holder: HolderRef,
        *,
        country_code: str = "GBR",
        kyc_verified: bool = False,
        admin_approval: str = "PENDING",
        is_active: bool | None = None,
        created_at: datetime | None = None,
        medical_record: bool = True,
        identity: Identity | None = None,
    ) -> Client:
        """Create a client directly, in any KYC state (the control API's shortcut).

        Args:
            holder: whose client it is.
            country_code: the shipping country (alpha-3).
            kyc_verified: start with ``isKYCVerified`` true.
            admin_approval: ``PENDING``, ``VERIFIED`` (sets ``verifiedAt``) or ``REJECTED``.
            is_active: defaults to true exactly when ``admin_approval`` is VERIFIED.
            created_at: backdate the client (and its address).
            medical_record: give the client the standard medical record.
            identity: names, email and phone; made up when omitted.
        """
        when = created_at if created_at is not None else self._t.now()
        try:
            client = self.add(
                holder,
                identity or self.generated_identity(),
                self.default_shipping(country_code, when),
                created_at=when,
                medical_record=DEFAULT_MEDICAL_RECORD if medical_record else None,
            )
        except ServiceRefusal as exc:
            raise StateConflict(exc.message) from exc
        client.is_kyc_verified = kyc_verified
        client.admin_approval = admin_approval
        if admin_approval == "VERIFIED":
            client.verified_at = when
            client.logs.append(LogEntry("Approved", when))
        elif admin_approval == "REJECTED":
            client.rejected_at = when
        client.is_active = (admin_approval == "VERIFIED") if is_active is None else is_active
        return client

    # --- lifecycle (§4.2) ----------------------------------------------------------------------

    def _touch(self, client: Client, activity: str) -> datetime:
        when = self._t.now()
        client.updated_at = when
        client.logs.append(LogEntry(activity, when))
        return when

    def verify_kyc(self, client_id: str) -> Client:
        """FirstAML passed: ``isKYCVerified`` becomes true (there is no way back)."""
        client = self.get(client_id)
        client.is_kyc_verified = True
        self._touch(client, "KYC Verified")
        return client

    def approve(self, client_id: str) -> Client:
        """Admin approval: VERIFIED, active, ``verifiedAt`` now."""
        client = self.get(client_id)
        client.verified_at = self._touch(client, "Approved")
        client.admin_approval = "VERIFIED"
        client.is_active = True
        return client

    def reject(self, client_id: str, note: str | None = None) -> Client:
        """Admin rejection: REJECTED, ``rejectedAt`` now, ``rejectionNote``."""
        client = self.get(client_id)
        client.rejected_at = self._touch(client, "Rejected")
        client.admin_approval = "REJECTED"
        client.rejection_note = note
        return client

    def activate(self, client_id: str) -> Client:
        """Admin toggle: ``isActive`` true."""
        client = self.get(client_id)
        client.is_active = True
        self._touch(client, "Activated")
        return client

    def deactivate(self, client_id: str) -> Client:
        """Admin toggle: ``isActive`` false."""
        client = self.get(client_id)
        client.is_active = False
        self._touch(client, "Deactivated")
        return client

    def patch(self, client_id: str, changes: Mapping[str, Any]) -> Client:
        """Force raw field values (any string for ``adminApproval``), bumping ``updatedAt``.

        Raises:
            InvalidInput: an unknown field or a wrong type.
            StateConflict: the new email or contact number belongs to another client.
        """
        client = self.get(client_id)
        for key, index in (
            ("email", self._t.client_emails),
            ("contactNumber", self._t.client_phones),
        ):
            owner = index.get(changes.get(key, None)) if isinstance(changes.get(key), str) else None
            if owner is not None and owner != client.id:
                raise StateConflict(f"{key} {changes[key]!r} belongs to another client")
        old_email, old_phone = client.email, client.contact_number
        apply_patch(client, CLIENT_FIELDS, changes)
        self._t.client_emails.pop(old_email, None)
        self._t.client_phones.pop(old_phone, None)
        self._t.client_emails[client.email] = client.id
        self._t.client_phones[client.contact_number] = client.id
        if "updatedAt" not in changes:
            client.updated_at = self._t.now()
        return client
