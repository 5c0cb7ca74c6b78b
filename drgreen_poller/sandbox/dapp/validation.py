"""The validation pipe of the simulated API: query DTOs, pagination and ``pageMetaDto``.

Owns class-validator style messages (collected, then raised together as one 400), JavaScript's
``Number()`` coercion of query strings, and the interceptor's pagination rewrite (§2.1). It must
not look entities up: handlers filter with what it returns.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from drgreen_poller.sandbox.dapp.replies import ApiError
from drgreen_poller.sandbox.world.inputs import parse_iso


class Sequenced(Protocol):
    """An entity with a creation sequence number (the tie-break of equal sort values)."""

    @property
    def seq(self) -> int: ...


T = TypeVar("T")
S = TypeVar("S", bound=Sequenced)
DEFAULT_TAKE = 10
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = {"0x": 16, "0o": 8, "0b": 2}
_JS_SPACE = " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501
_ALPHA3_RE = re.compile(r"[A-Z]{3}")


def js_number(text: str) -> float:
    """JavaScript's ``Number(text)``: trims, ``""`` → 0, hex/octal/binary, else NaN."""
    body = text.strip(_JS_SPACE)
    if not body:
        return 0.0
    prefix = body[:2].lower()
    if prefix in _RADIX:
        try:
            return float(int(body[2:], _RADIX[prefix]))
        except ValueError:
            return math.nan
    if body.lstrip("+-") == "Infinity":
        return -math.inf if body.startswith("-") else math.inf
    return float(body) if _DECIMAL_RE.fullmatch(body) else math.nan


def js_parse_int(text: str) -> float:
    """JavaScript's ``parseInt(text)``: trims, a sign, ``0x`` for hex, then the longest run of
    digits (``"12abc"`` → 12); NaN when there is none."""
    body = text.lstrip(_JS_SPACE)
    sign = -1.0 if body.startswith("-") else 1.0
    body = body[1:] if body[:1] in ("+", "-") else body
    radix, digits = 10, string.digits
    if body[:2].lower() == "0x":
        radix, digits, body = 16, string.hexdigits, body[2:]
    run = len(body) - len(body.lstrip(digits))
    if not run:
        return math.nan
    try:
        return sign * float(int(body[:run], radix))
    except OverflowError:  # beyond the largest double: JavaScript says Infinity
        return sign * math.inf


def is_uuid(text: str) -> bool:
    """Whether ``text`` is shaped like a UUID (class-validator ``IsUUID``, any version)."""
    return UUID_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Page:
    """Validated ``page``/``take``/``orderBy`` of a list request."""

    page: int
    take: int
    descending: bool
    raw_page: str | None
    raw_take: str | None

    def slice(self, items: Sequence[T]) -> list[T]:
        """The items of this page (empty past the end)."""
        start = (self.page - 1) * self.take
        return list(items[start : start + self.take])

    def meta(self, item_count: int) -> dict[str, Any]:
        """``pageMetaDto``: page/take echo the raw query strings, or 1/10 when absent."""
        page_count = math.ceil(item_count / self.take)
        return {
            "page": self.raw_page if self.raw_page is not None else 1,
            "take": self.raw_take if self.raw_take is not None else DEFAULT_TAKE,
            "itemCount": item_count,
            "pageCount": page_count,
            "hasPreviousPage": self.page > 1,
            "hasNextPage": self.page < page_count,
        }


class QueryCheck:
    """Reads a list endpoint's query like a DTO with class-validator, collecting messages."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self.query = query
        self.messages: list[str] = []

    def done(self) -> None:
        """Raise the collected messages as one 400."""
        if self.messages:
            raise ApiError(400, self.messages, validation=True)

    def _int_at_least_one(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        value = js_number(raw)
        failures = []
        if not value >= 1:
            failures.append(f"{name} must not be less than 1")
        if not (math.isfinite(value) and value.is_integer()):
            failures.append(f"{name} must be an integer number")
        self.messages.extend(failures)
        return int(value) if not failures else default

    def page(self, *, allow_order: bool = True) -> Page:
        """``page`` ≥ 1, ``take`` ≥ 1 (default 10), ``orderBy`` asc|desc (default asc)."""
        page = self._int_at_least_one("page", 1)
        take = self._int_at_least_one("take", DEFAULT_TAKE)
        order = self.choice("orderBy", ("asc", "desc")) if allow_order else None
        return Page(page, take, order == "desc", self.query.get("page"), self.query.get("take"))

    def choice(self, name: str, values: Sequence[str]) -> str | None:
        """An optional enum parameter."""
        raw = self.query.get(name)
        if raw is not None and raw not in values:
            self.messages.append(f"{name} must be one of the following values: {', '.join(values)}")
            return None
        return raw

    def date(self, name: str) -> datetime | None:
        """An optional ISO-8601 date parameter."""
        raw = self.query.get(name)
        if raw is None:
            return None
        moment = parse_iso(raw)
        if moment is None:
            self.messages.append(f"{name} must be a valid ISO 8601 date string")
        return moment

    def required_date(
        self, name: str, *, iso_only: bool = False, required: bool = True
    ) -> datetime | None:
        """A date: ``@Type(() => Date) @IsDate`` (the DTOs' own message, which spells
        ``startdate`` in lower case) or, with ``iso_only``, ``@IsDateString``; unless
        ``required``, an absent one is ``None`` without a message."""
        raw = self.query.get(name)
        if raw is None and not required:
            return None
        moment = None if raw is None else parse_iso(raw)
        if moment is None:
            label = "startdate" if name == "startDate" else name
            self.messages.append(
                f"{name} must be a valid ISO 8601 date string"
                if iso_only
                else f"{label} must be a valid date. ex: YYYY-MM-DD or MM-DD-YYYY"
            )
        if not raw and required:
            self.messages.append(f"{name} should not be empty")
        return moment

    def required_choice(self, name: str, values: Sequence[str]) -> str | None:
        """A required enum parameter (``@IsString @IsNotEmpty @IsEnum``)."""
        if self.query.get(name):
            return self.choice(name, values)
        self.messages.append(f"{name} must be one of the following values: {', '.join(values)}")
        self.messages.append(f"{name} should not be empty")
        if name not in self.query:
            self.messages.append(f"{name} must be a string")
        return None

    def window(self) -> tuple[datetime, datetime] | None:
        """``startDate``/``endDate`` as a createdAt window; ``endDate`` is inclusive (+1 day)."""
        start, end = self.date("startDate"), self.date("endDate")
        if start is None or end is None:
            return None
        return start, end + timedelta(days=1)

    def json_list(self, name: str) -> list[str] | None:
        """An optional parameter holding a JSON array of strings (``clientIds``, ...)."""
        raw = self.query.get(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.messages.append(f"{name} must be a JSON array of strings")
            return None
        return value

    def country_code(self, name: str = "countryCode") -> str | None:
        """An optional ISO 3166-1 alpha-3 code."""
        raw = self.query.get(name)
        if raw is not None and not _ALPHA3_RE.fullmatch(raw):
            self.messages.append(f"{name} must be a valid ISO31661 Alpha3 code")
            return None
        return raw

    def search(self) -> str | None:
        """``search`` when ``searchBy=clientName`` (lower-cased), else ``None``."""
        by = self.choice("searchBy", ("clientName",))
        raw = self.query.get("search")
        return raw.lower() if by == "clientName" and raw else None


def require_uuid(params: Mapping[str, str], *names: str) -> None:
    """Path parameters that must be UUIDs (``orderId must be a UUID``)."""
    failures = [f"{name} must be a UUID" for name in names if not is_uuid(params[name])]
    if failures:
        raise ApiError(400, failures, validation=True)


def matching(items: Iterable[T], tests: Sequence[Callable[[T], bool]]) -> list[T]:
    """The items that pass every test (all of them when there are no tests)."""
    if not tests:
        return list(items)
    return [item for item in items if all(test(item) for test in tests)]


def ordered(items: Sequence[S], attribute: str, descending: bool) -> list[S]:
    """Items sorted by ``attribute`` (ties by creation), those where it is ``None`` last."""
    value = attrgetter(attribute)
    present = [item for item in items if value(item) is not None]
    present.sort(key=attrgetter(attribute, "seq"), reverse=descending)
    if len(present) == len(items):
        return present
    return present + [item for item in items if value(item) is None]


def sort_attribute(approval: str | None) -> str:
    """What a list sorts by: createdAt, or verifiedAt/rejectedAt when filtering by that approval."""
    if approval == "VERIFIED":
        return "verified_at"
    if approval == "REJECTED":
        return "rejected_at"
    return "created_at"


def approval_list(
    key: str,
    page: Page,
    found: Sequence[S],
    approval: str | None,
    render: Callable[[S, bool, bool], dict[str, Any]],
) -> dict[str, Any]:
    """One page of an orders or clients list (§3.1, §3.6): sorted by the approval filter's date,
    items with ``rejectionNote`` under REJECTED and their logs under VERIFIED."""
    sorted_items = ordered(found, sort_attribute(approval), page.descending)
    rejected, verified = approval == "REJECTED", approval == "VERIFIED"
    items = [render(item, rejected, verified) for item in page.slice(sorted_items)]
    return {key: items, "pageMetaDto": page.meta(len(found))}
