"""Reading Dr Green responses: the success envelope, the three error body shapes, ``Retry-After``.

Pure functions from (status, headers, body bytes, now) to the envelope's ``data`` or one of the
``UpstreamError`` classes of ``errors.py``. No I/O; never puts a response body into an error
message (it may hold customer data), only its shape and size. Medical keys are dropped as the
body is decoded, at any depth, before anything else sees the document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from drgreen_poller.errors import (
    UpstreamClientBug,
    UpstreamError,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTransient,
    UpstreamUnauthorized,
)
from drgreen_poller.models import loads_without_medical

_NOT_FOUND_RE = re.compile(r"\bnot\s+found\b", re.IGNORECASE)
_TRUE_VALUES = (True, "true")
_FALSE_VALUES = (False, "false")
# The longest server message we repeat in an error; Dr Green's messages are short sentences.
_MESSAGE_MAX = 200


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _decode(body: bytes) -> Any:
    """The JSON document in ``body`` without its medical keys, or ``None`` when it is not JSON."""
    try:
        return loads_without_medical(body)
    except (UnicodeDecodeError, ValueError):
        return None


def _message(document: Any) -> str:
    if not isinstance(document, Mapping):
        return ""
    message = document.get("message")
    if isinstance(message, list):
        message = ", ".join(str(m) for m in message)
    details = document.get("data")
    if isinstance(details, list) and details:  # the docs' shape: messages in data
        listed = ", ".join(str(m) for m in details)
        message = f"{message}: {listed}" if message else listed
    return str(message or document.get("error") or "")[:_MESSAGE_MAX]


def _effective_status(http_status: int, document: Any) -> int:
    """HTTP status, or for a 2xx that says ``success: false``, the status the body gives."""
    if http_status >= 400 or not isinstance(document, Mapping):
        return http_status
    for key in ("statusCode", "errorCode"):
        value = document.get(key)
        if isinstance(value, int) and value >= 400:
            return value
    return 500


def classify_error(
    http_status: int,
    document: Any,
    *,
    body_size: int,
    retry_after_s: float | None,
    endpoint: str,
) -> UpstreamError:
    """The error for a failed response (HTTP ≥ 400, or a body that says ``success: false``)."""
    status = _effective_status(http_status, document)
    message = _message(document) or f"non-JSON error body ({body_size} bytes)"
    if status == 429:
        return UpstreamRateLimited(
            message, status=status, endpoint=endpoint, retry_after_s=retry_after_s
        )
    if status in (401, 403):
        return UpstreamUnauthorized(message, status=status, endpoint=endpoint)
    if status == 404 or (status == 500 and _NOT_FOUND_RE.search(message)):
        return UpstreamNotFound(message, status=status, endpoint=endpoint)
    if status >= 500 or status == 408:
        return UpstreamTransient(
            message, status=status, endpoint=endpoint, retry_after_s=retry_after_s
        )
    return UpstreamClientBug(message, status=status, endpoint=endpoint)


def interpret_response(
    status: int,
    body: bytes,
    *,
    retry_after: str | None,
    now: datetime,
    endpoint: str,
) -> Any:
    """The ``data`` of a successful Dr Green response.

    Raises:
        UpstreamError: the subclass that fits the failure (see ``classify_error``), or
            ``UpstreamMalformed`` for a 2xx whose body is not the success envelope.
    """
    document = _decode(body)
    failed = isinstance(document, Mapping) and document.get("success") in _FALSE_VALUES
    if status >= 400 or failed:
        raise classify_error(
            status,
            document,
            body_size=len(body),
            retry_after_s=parse_retry_after(retry_after, now),
            endpoint=endpoint,
        )
    if document is None:
        raise UpstreamMalformed(
            f"HTTP {status} body is not JSON ({len(body)} bytes)", status=status, endpoint=endpoint
        )
    if not isinstance(document, Mapping) or document.get("success") not in _TRUE_VALUES:
        raise UpstreamMalformed(
            "response is not the {success, data} envelope", status=status, endpoint=endpoint
        )
    if "data" not in document:
        raise UpstreamMalformed("success envelope without data", status=status, endpoint=endpoint)
    return document["data"]
