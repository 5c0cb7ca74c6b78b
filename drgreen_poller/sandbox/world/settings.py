"""The sandbox's switches between documented variants of the Dr Green API.

Owns ``SandboxSettings`` and the validation of changes to it. It must not act on the switches:
the route handlers and rules read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from drgreen_poller.sandbox.world.inputs import as_bool, as_choice
from drgreen_poller.sandbox.world.model import (
    DOCS_PAYMENT_STATUSES,
    SOURCE_PAYMENT_STATUSES,
    InvalidInput,
)

PaymentVocabulary = Literal["source", "docs"]
UnknownOrder = Literal["null", "404"]
ErrorShape = Literal["source", "docs"]

_CHOICES: Mapping[str, tuple[str, ...]] = {
    "payment_vocabulary": ("source", "docs"),
    "unknown_order": ("null", "404"),
    "error_shape": ("source", "docs"),
}
_FLAGS = ("order_detail_admin_approval",)


@dataclass(slots=True)
class SandboxSettings:
    """Variant switches, all defaulting to the source snapshot's behaviour (drgreen-api.md).

    Attributes:
        payment_vocabulary: ``source`` uses PENDING/PAID; ``docs`` uses PENDING, PROCESSING,
            COMPLETED, FAILED, REFUNDED (so paying an order sets COMPLETED).
        order_detail_admin_approval: whether ``GET /dapp/orders/{id}`` also carries
            ``adminApproval``, ``verifiedAt``, ``rejectedAt`` and ``rejectionNote``.
        unknown_order: ``null`` answers an unknown order id with 200 and ``orderDetails: null``;
            ``404`` answers it with a 404 "Order not found" error.
        error_shape: ``source`` renders handled errors in the interceptor shape
            (``success, message, errorCode, error, url, urlMethod``); ``docs`` in the documented
            shape (``success, statusCode, message, data``).
    """

    payment_vocabulary: PaymentVocabulary = "source"
    order_detail_admin_approval: bool = False
    unknown_order: UnknownOrder = "null"
    error_shape: ErrorShape = "source"

    @property
    def paid_status(self) -> str:
        """The ``paymentStatus`` a paid order gets in the current vocabulary."""
        return "PAID" if self.payment_vocabulary == "source" else "COMPLETED"

    @property
    def payment_statuses(self) -> tuple[str, ...]:
        """The ``paymentStatus`` values the order list filter accepts."""
        if self.payment_vocabulary == "source":
            return SOURCE_PAYMENT_STATUSES
        return DOCS_PAYMENT_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The switches as JSON."""
        return asdict(self)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (all validated before any is applied).

        Raises:
            InvalidInput: an unknown switch or a value outside its choices.
        """
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name in _CHOICES:
                checked[name] = as_choice(value, name, _CHOICES[name])
            elif name in _FLAGS:
                checked[name] = as_bool(value, name)
            else:
                known = ", ".join([*_CHOICES, *_FLAGS])
                raise InvalidInput(f"unknown setting {name!r}; settings are: {known}")
        for name, value in checked.items():
            setattr(self, name, cast(Any, value))
