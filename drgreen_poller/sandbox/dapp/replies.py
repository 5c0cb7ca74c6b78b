"""Dr Green response bodies: the success envelope, the three error shapes, JSON as Node writes it.

Owns ``ApiError`` (what a handler raises to answer with an error), the NestJS default bodies
(guard 401s, unknown routes, body-parser errors), the interceptor and docs error shapes
(§2.2), and JSON serialisation byte-compatible with ``JSON.stringify``. It must not decide when
to answer what.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from drgreen_poller.canonical import canonical_json
from drgreen_poller.sandbox.world.settings import SandboxSettings

REASONS: Mapping[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# A number token (after ":", "[" or "," in compact JSON) that Python writes differently from
# JavaScript: with an exponent, or a whole float ("1.0"). A match inside a string is harmless:
# it only sends the value down the slower exact path.
_NOT_JS_NUMBER_RE = re.compile(r"[:\[,]-?[0-9]+(?:\.[0-9]+)?[eE]|[:\[,]-?[0-9]+\.0(?=[,\]}]|$)")


class ApiError(Exception):
    """An error answer from the simulated API.

    Args:
        status: the HTTP status.
        messages: the message, or class-validator messages (joined with ", " in the source
            shape; a list in the docs shape).
        validation: whether the messages come from the validation pipe.
    """

    def __init__(self, status: int, messages: str | Sequence[str], *, validation: bool = False):
        self.status = status
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        self.validation = validation
        super().__init__(", ".join(self.messages))


def dump_json(value: Any) -> bytes:
    """UTF-8 JSON exactly as Node's ``JSON.stringify`` writes ``value`` (fast path: stdlib)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _NOT_JS_NUMBER_RE.search(text):
        text = canonical_json(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON.stringify escapes it
        return canonical_json(value).encode("utf-8")


def json_reply(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response as Express sends it (``application/json; charset=utf-8``)."""
    return web.Response(
        status=status,
        body=dump_json(value),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def envelope(data: Any, status: int) -> dict[str, Any]:
    """The success envelope; ``message`` is ``data.message`` when the handler set one."""
    message = data.get("message") if isinstance(data, dict) else None
    return {
        "success": True,
        "statusCode": status,
        "message": message if isinstance(message, str) else "Success",
        "data": data,
    }


def nest_default(status: int, message: str, *, with_error: bool = True) -> dict[str, Any]:
    """NestJS's default error body (guards, unknown routes, body-parser), not the envelope."""
    body: dict[str, Any] = {"message": message}
    if with_error:
        body["error"] = REASONS.get(status, "Error")
    body["statusCode"] = status
    return body


def handled_error(
    settings: SandboxSettings, error: ApiError, *, url: str, method: str
) -> dict[str, Any]:
    """A handled error (validation pipe or service) in the shape the settings select."""
    if settings.error_shape == "docs":
        if error.validation:
            return {
                "success": False,
                "statusCode": error.status,
                "message": "Validation failed",
                "data": error.messages,
            }
        return {
            "success": False,
            "statusCode": error.status,
            "message": ", ".join(error.messages),
            "data": None,
        }
    return {
        "success": False,
        "message": ", ".join(error.messages),
        "errorCode": error.status,
        "error": REASONS.get(error.status, "Error"),
        "url": url,
        "urlMethod": method,
    }
