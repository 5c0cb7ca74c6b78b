"""The entities of the sandbox world, their vocabularies, and the errors the world's rules raise.

Owns plain data (holders, strains, clients, orders, commissions), timestamp and money formatting,
and the raw field patches the control API applies. It must not decide how entities change
(the parts in this package do) nor how they look on the wire (``dapp/records.py`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.sandbox.world.tokens import Nft

ORDER_STATUSES = ("PENDING", "PROCESSING", "SHIPPED", "DELIVERED", "CANCELLED")
APPROVALS = ("PENDING", "VERIFIED", "REJECTED")
SOURCE_PAYMENT_STATUSES = ("PENDING", "PAID")
DOCS_PAYMENT_STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "REFUNDED")
PAID_STATUSES = frozenset({"PAID", "COMPLETED"})
COMMISSION_STATUSES = ("PENDING", "PAID")
TRANSACTION_METHODS = ("DEBIT", "CREDIT", "CRYPTO", "FIAT")
TRANSACTION_STATUSES = (
    "PENDING", "FAILED", "COMPLETED", "CANCELED", "EXPIRED", "UNDERPAID", "OVERPAID",
)  # fmt: skip
TERMINAL_ORDER_STATUSES = frozenset({"DELIVERED", "CANCELLED"})
# Where each orderStatus may go next (only while adminApproval is VERIFIED); steps may be skipped.
ORDER_STATUS_NEXT: Mapping[str, frozenset[str]] = {
    "PENDING": frozenset({"PROCESSING", "SHIPPED", "DELIVERED", "CANCELLED"}),
    "PROCESSING": frozenset({"SHIPPED", "DELIVERED", "CANCELLED"}),
    "SHIPPED": frozenset({"DELIVERED", "CANCELLED"}),
}
COUNTRY_NAMES: Mapping[str, str] = {
    "GBR": "United Kingdom",
    "PRT": "Portugal",
    "ZAF": "South Africa",
    "THA": "Thailand",
    "DEU": "Germany",
    "ESP": "Spain",
    "IRL": "Ireland",
    "USA": "United States",
}
IMAGE_BASE_URL = "https://prod-profiles-backend.s3.amazonaws.com/"


class SandboxError(Exception):
    """A control-API or in-process request the sandbox refuses; ``status`` is the HTTP answer."""

    status = 400


class InvalidInput(SandboxError):
    """Wrong type, unknown field or impossible value (HTTP 400)."""


class UnknownEntity(SandboxError):
    """No holder, strain, client, order, commission or fault with that name or id (HTTP 404)."""

    status = 404

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"unknown {kind} {key!r}")


class StateConflict(SandboxError):
    """The entity exists but the request conflicts with its state (HTTP 409)."""

    status = 409


class ServiceRefusal(Exception):
    """A Dr Green service error with its exact HTTP status and message (e.g. 409 on checkout)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as JavaScript's ``toISOString`` writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_or_none(moment: datetime | None) -> str | None:
    """``iso`` for an optional timestamp."""
    return None if moment is None else iso(moment)


def to_ms(moment: datetime) -> datetime:
    """``moment`` cut to whole milliseconds, the precision of Postgres timestamps via Prisma."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def num(value: float) -> float | int:
    """A JSON number as JavaScript would print it: whole values without ``.0``, no float dust."""
    rounded = round(float(value), 6)
    return int(rounded) if rounded.is_integer() else rounded


def country_name(code: str) -> str:
    """The country name Dr Green shows beside an alpha-3 code (the code itself when unknown)."""
    return COUNTRY_NAMES.get(code, code)


@dataclass(slots=True)
class HolderInfo:
    """An NFT holder with an API key pair; ``revoked`` keys get 401 like soft-deleted ones."""

    name: str
    credentials: ApiCredentials
    user_id: str
    nft: Nft | None
    revoked: bool = False
    public_key: ec.EllipticCurvePublicKey | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Location:
    """A country Dr Green ships to."""

    id: str
    country: str
    country_code: str


@dataclass(slots=True)
class StrainLocation:
    """A strain's stock and flags at one location."""

    location: Location
    stock_quantity: float
    is_active: bool = True
    is_available: bool = True


@dataclass(slots=True)
class Strain:
    """A catalogue product; shared by every holder, stocked per location."""

    id: str
    seq: int
    name: str
    retail_price: float
    wholesale_price: float
    created_at: datetime
    updated_at: datetime
    code: str = ""
    description: str = ""
    type: str = "Hybrid"
    thc: float = 20.0
    cbd: float = 0.1
    cbg: float = 0.2
    batch_number: str = ""
    feelings: str = ""
    helps_with: str = ""
    effects: str = ""
    popularity: float = 0
    flavour: str = ""
    image_key: str = ""
    is_available: bool = True
    is_active: bool = True
    expiry_date: datetime | None = None
    discount: float = 0
    images: list[dict[str, Any]] = field(default_factory=list)
    prices: list[dict[str, Any]] = field(default_factory=list)
    planets: list[dict[str, Any]] = field(default_factory=list)
    locations: dict[str, StrainLocation] = field(default_factory=dict)
    deleted: bool = False


@dataclass(slots=True)
class Shipping:
    """A client's shipping address."""

    id: str
    address1: str
    city: str
    state: str
    country: str
    country_code: str
    postal_code: str
    created_at: datetime
    address2: str | None = None
    landmark: str | None = None


@dataclass(slots=True)
class LogEntry:
    """One line of an order's or a client's activity log."""

    activity: str
    created_at: datetime


@dataclass(slots=True)
class Client:
    """A holder's customer: KYC and approval state, addresses, medical record and cart."""

    id: str
    holder: str
    seq: int
    first_name: str
    last_name: str
    email: str
    phone_country_code: str
    phone_code: str
    contact_number: str
    created_at: datetime
    updated_at: datetime
    cart_id: str
    case_id: str = ""
    max_retries: int = 0
    admin_approval: str = "PENDING"
    is_kyc_verified: bool = False
    is_active: bool = False
    rejection_note: str | None = None
    verified_at: datetime | None = None
    rejected_at: datetime | None = None
    shippings: list[Shipping] = field(default_factory=list)
    businesses: list[dict[str, Any]] = field(default_factory=list)
    medical_record: dict[str, Any] | None = None
    cart: dict[str, float] = field(default_factory=dict)
    logs: list[LogEntry] = field(default_factory=list)


@dataclass(slots=True)
class OrderLine:
    """A strain and quantity in an order, with the prices at the time of ordering."""

    strain_id: str
    quantity: float
    retail_price: float
    wholesale_price: float


@dataclass(slots=True)
class Transaction:
    """A payment processor's report on an order (what ``/dapp/client/{id}/transactions`` lists)."""

    id: str
    client_id: str
    method: str
    amount: float
    created_at: datetime
    status: str = "COMPLETED"
    invoice: str | None = None
    description: str = ""
    destination: str = ""


@dataclass(slots=True)
class Order:
    """An order with its three independent status fields."""

    id: str
    holder: str
    seq: int
    client_id: str
    shipping_id: str | None
    invoice_number: str
    agent_profit: float
    total_amount: float
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLine]
    order_status: str = "PENDING"
    payment_status: str = "PENDING"
    admin_approval: str = "PENDING"
    rejection_note: str | None = None
    commission_paid: bool = False
    commission_transaction_hash: str | None = None
    verified_at: datetime | None = None
    rejected_at: datetime | None = None
    nonce: str | None = None
    delivery_fee: float = 6
    transactions: list[Transaction] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)


@dataclass(slots=True)
class Commission:
    """Commission owed to the holder for an order (or accrued directly by the control API)."""

    id: str
    holder: str
    seq: int
    user_id: str
    order_id: str | None
    amount_in_dollar: float
    created_at: datetime
    updated_at: datetime
    payment_status: str = "PENDING"
    amount_in_eth: float | None = None
    transaction_hash: str | None = None


@dataclass(slots=True)
class Manager:
    """A commission manager (agent) of a holder's NFT, paid a share of each order's profit.

    ``associated`` managers are the NFT's active ones and share in new payments; a dissociated
    manager keeps the commissions earned and counts as inactive.
    """

    id: str
    holder: str
    full_name: str
    username: str
    email: str
    wallet_address: str
    commission_percent: float
    created_at: datetime
    updated_at: datetime
    phone_code: str | None = None
    phone_number: str | None = None
    is_active: bool = True
    associated: bool = True


Converter = Callable[[Any, str], Any]


def apply_patch(
    entity: Any, fields: Mapping[str, tuple[str, Converter]], changes: Mapping[str, Any]
) -> None:
    """Set raw fields on ``entity`` from wire names; all are checked before any is written.

    Args:
        entity: the record to change.
        fields: wire name → (attribute, converter that raises ``InvalidInput``).
        changes: wire name → new value, as decoded from JSON.
    """
    converted: list[tuple[str, Any]] = []
    for name, value in changes.items():
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise InvalidInput(f"{name!r} cannot be set; settable fields: {known}")
        attribute, convert = fields[name]
        converted.append((attribute, convert(value, name)))
    for attribute, value in converted:
        setattr(entity, attribute, value)
