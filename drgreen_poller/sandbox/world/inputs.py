"""Typed reading of untrusted JSON values for the control API and the raw field patches.

Owns the conversions from decoded JSON to Python values; each raises ``InvalidInput`` with a
message naming the field. Knows nothing about entities, rules or HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from drgreen_poller.sandbox.world.model import InvalidInput, to_ms


def parse_iso(text: str) -> datetime | None:
    """A timestamp from ISO-8601 text (``Z`` allowed; no offset means UTC), or ``None``."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment.astimezone(UTC))


def as_str(value: Any, name: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    return value


def as_opt_str(value: Any, name: str) -> str | None:
    """A string or null."""
    return None if value is None else as_str(value, name)


def as_bool(value: Any, name: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def as_number(value: Any, name: str) -> float:
    """A finite JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number")
    return float(value)


def as_non_negative(value: Any, name: str) -> float:
    """A finite JSON number ≥ 0."""
    number = as_number(value, name)
    if number < 0:
        raise InvalidInput(f"{name} must not be negative")
    return number


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """A whole JSON number, optionally at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{name} must be at least {minimum}")
    return value


def as_time(value: Any, name: str) -> datetime:
    """An ISO-8601 timestamp string."""
    moment = parse_iso(as_str(value, name))
    if moment is None:
        raise InvalidInput(f"{name} must be an ISO-8601 timestamp, e.g. 2026-05-10T09:14:03.512Z")
    return moment


def as_opt_time(value: Any, name: str) -> datetime | None:
    """An ISO-8601 timestamp string or null."""
    return None if value is None else as_time(value, name)


def as_list(value: Any, name: str) -> list[Any]:
    """A JSON array."""
    if not isinstance(value, list):
        raise InvalidInput(f"{name} must be an array")
    return value


def as_dict(value: Any, name: str) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be an object")
    return value


def as_opt_dict(value: Any, name: str) -> dict[str, Any] | None:
    """A JSON object or null."""
    return None if value is None else as_dict(value, name)


def as_dict_list(value: Any, name: str) -> list[dict[str, Any]]:
    """A JSON array of objects."""
    items = as_list(value, name)
    return [as_dict(item, f"{name}[{i}]") for i, item in enumerate(items)]


def as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise InvalidInput(f"{name} must be one of: {', '.join(choices)} (got {value!r})")
    return str(value)


def as_country_code(value: Any, name: str) -> str:
    """An ISO 3166-1 alpha-3 code: three uppercase letters."""
    code = as_str(value, name)
    if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise InvalidInput(f"{name} must be an ISO 3166-1 alpha-3 code such as GBR")
    return code


def check_keys(body: dict[str, Any], allowed: Sequence[str], what: str) -> None:
    """Refuse keys outside ``allowed``, so a typo is an error rather than silently ignored."""
    unknown = [key for key in body if key not in allowed]
    if unknown:
        raise InvalidInput(
            f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
