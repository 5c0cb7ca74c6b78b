"""The event contract: the JSON Schemas (draft 2020-12) of the envelope and of each type's ``data``.

Owns the list of event types the daemon can emit (``EVENT_TYPES``) and reading the schema files
shipped in the package (``drgreen_poller/schemas/``, a copy of the repository's ``schemas/``).
It must not build events (``events.py``) nor decide which happen (``changes.py``); checking
events against the schemas is the test suite's (``tests/contract_check.py``).

Convention of the files: an object schema that lists ``properties`` without saying
``additionalProperties`` is open to receivers (new fields may come) but complete for us: the
suite's check reports a field it does not list, so the schemas stay in step with the code.
``"additionalProperties": true`` marks what is open by nature (Dr Green's own records).
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from drgreen_poller.errors import ConfigError

# Every type the daemon can emit, in lifecycle order (``events schema`` and ``trigger`` list
# them so). A test holds it equal to the schema files and to the types changes.py and
# refusals.py name.
EVENT_TYPES = (
    "order.created",
    "order.approved",
    "order.rejected",
    "order.approval_changed",
    "order.paid",
    "order.payment_failed",
    "order.refunded",
    "order.payment_status_changed",
    "order.processing",
    "order.shipped",
    "order.delivered",
    "order.cancelled",
    "order.status_changed",
    "client.created",
    "client.kyc.verified",
    "client.kyc.verification_changed",
    "client.kyc.approved",
    "client.kyc.rejected",
    "client.kyc.approval_changed",
    "client.kyc.completed",
    "client.activated",
    "client.deactivated",
    "commission.accrued",
    "commission.adjusted",
    "commission.paid",
    "strain.created",
    "strain.updated",
    "strain.removed",
    "poller.holder_unauthorized",
    "poller.holder_recovered",
)
ENVELOPE_FILE = "envelope.json"


def schema_files() -> Traversable:
    """The directory of schema files inside the installed package."""
    return files("drgreen_poller") / "schemas"


def _read(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_files() / name).read_text(encoding="utf-8"))
    return schema


def data_file(event_type: str) -> str:
    """The schema file of ``event_type``'s data, relative to the schema directory."""
    return f"data/{event_type}.json"


def known_type(event_type: str) -> str:
    """``event_type`` itself when the daemon emits it.

    Raises:
        ConfigError: an unknown type; the message lists the known ones.
    """
    if event_type not in EVENT_TYPES:
        raise ConfigError(
            f"unknown event type {event_type!r}; the known types are: {', '.join(EVENT_TYPES)}"
        )
    return event_type


def schema_text(event_type: str | None = None) -> str:
    """The envelope's schema file (``None``), or ``event_type``'s data schema file, as text.

    Raises:
        ConfigError: an unknown type.
    """
    name = ENVELOPE_FILE if event_type is None else data_file(known_type(event_type))
    return (schema_files() / name).read_text(encoding="utf-8")


def envelope_schema() -> dict[str, Any]:
    """The envelope's schema, as shipped."""
    return _read(ENVELOPE_FILE)


def data_schema(event_type: str) -> dict[str, Any]:
    """The schema of ``event_type``'s ``data``, as shipped.

    Raises:
        ConfigError: an unknown type.
    """
    return _read(data_file(known_type(event_type)))
