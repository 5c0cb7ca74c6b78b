"""What the property tests share: their Hypothesis settings and the Dr Green list items they
generate.

A few hundred examples run in ``make test``; ``RELIABILITY_FULL=1`` (``make reliability``) runs
thousands. Owns ``PROPERTY`` (and ``PROPERTY_ON_DISK`` for examples that open real SQLite
files), the per-test timeout to go with them, and the order, client and strain record
strategies. It holds no test.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FULL = os.environ.get("RELIABILITY_FULL") == "1"
PROPERTY = settings(
    max_examples=3000 if FULL else 150,
    deadline=None,
    database=None,  # nothing written beside the checkout; failures print their example
    suppress_health_check=[HealthCheck.too_slow],
)
# Examples that open real SQLite files cost milliseconds each: fewer of them.
PROPERTY_ON_DISK = settings(PROPERTY, max_examples=800 if FULL else 60)
PROPERTY_TIMEOUT_S = 600 if FULL else 30

APPROVALS = ["PENDING", "VERIFIED", "REJECTED", "ON_HOLD", None]  # None: the field is missing
PAYMENTS = ["PENDING", "PAID", "COMPLETED", "FAILED", "REFUNDED", "PARTIALLY_PAID", None]
STATUSES = ["PENDING", "PROCESSING", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED", None]
FLAGS = [True, False, None]
CREATED_AT = "2026-11-20T10:00:00.000Z"


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    """A list item as Dr Green sends it: fields it lacks are simply absent."""
    present = {k: v for k, v in fields.items() if v is not None}
    return {"id": "r-1", "createdAt": CREATED_AT, **present}


order_records = st.fixed_dictionaries(
    {
        "adminApproval": st.sampled_from(APPROVALS),
        "paymentStatus": st.sampled_from(PAYMENTS),
        "orderStatus": st.sampled_from(STATUSES),
    }
).map(_record)
client_records = st.fixed_dictionaries(
    {
        "isKYCVerified": st.sampled_from(FLAGS),
        "adminApproval": st.sampled_from(APPROVALS),
        "isActive": st.sampled_from(FLAGS),
    }
).map(_record)
amounts = st.one_of(
    st.none(), st.integers(0, 1000), st.floats(0, 1000), st.sampled_from([495, 495.0, "12.5"])
)
strain_records = st.fixed_dictionaries(
    {
        "retailPrice": amounts,
        "stockQuantity": amounts,
        "isAvailable": st.sampled_from(FLAGS),
        "isActive": st.sampled_from(FLAGS),
    }
).map(_record)
# A strain a complete sweep no longer lists: None in the sequence.
strain_sweeps = st.one_of(st.none(), strain_records)
