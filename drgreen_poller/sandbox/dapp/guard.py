"""The front of the simulated API: Express's JSON body parser and the DualAuthGuard (§1.3–1.4).

Owns how a request body becomes ``req.body`` and whether a request's key and signature admit
it, with NestJS's default 401 bodies. It must not route, validate or answer successfully.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDictProxy

from drgreen_poller.canonical import rebuild_canonical
from drgreen_poller.request_signing import verify_api_signature
from drgreen_poller.sandbox.dapp.replies import nest_default
from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import HolderInfo

NOT_AUTHORIZED = "User is not authorized"
BODY_LIMIT_BYTES = 100 * 1024  # body-parser's default "100kb"


class NestError(Exception):
    """An answer with a NestJS default body (not the envelope): guard 401s, 404, body-parser."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body


def _js_parse_error(text: str, position: int) -> NestError:
    if position >= len(text):
        message = "Unexpected end of JSON input"
    else:
        message = f"Unexpected token {text[position]} in JSON at position {position}"
    return NestError(400, nest_default(400, message))


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # JSON.parse has no NaN or Infinity


def parse_body(content_type: str, raw: bytes) -> Any:
    """``req.body`` as body-parser's ``json()`` leaves it (strict mode).

    Only ``application/json`` bodies are parsed; any other body, and an empty one, is ``{}``.

    Raises:
        NestError: 400 for a body that is not a JSON object or array, 413 above 100 KiB.
    """
    if content_type != "application/json" or not raw:
        return {}
    if len(raw) > BODY_LIMIT_BYTES:
        raise NestError(413, nest_default(413, "request entity too large"))
    text = raw.decode("utf-8", errors="replace")
    stripped = text.lstrip(" \t\n\r")
    if not stripped:
        return {}
    start = len(text) - len(stripped)
    if stripped[0] not in "{[":
        raise _js_parse_error(text, start)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _js_parse_error(text, exc.pos) from exc
    except ValueError as exc:
        raise _js_parse_error(text, text.find(str(exc))) from exc


def header(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """A header as Node sees it: repeated values joined with ``", "``."""
    values = headers.getall(name, [])
    return ", ".join(values) if values else None


def admit(
    state: World,
    headers: CIMultiDictProxy[str],
    *,
    method: str,
    raw_query: str,
    path_params: Mapping[str, str],
    body: Any,
) -> HolderInfo:
    """The holder a request speaks for, if its key and signature pass the guard.

    Raises:
        NestError: 401 ``Unauthorized`` when an ``Authorization`` header sends it down the JWT
            path; 401 ``User is not authorized`` for a missing, unknown or revoked key or a
            signature that does not verify; 401 ``Unauthorized Access`` for a holder without
            a primary NFT.
    """
    if "authorization" in headers:
        raise NestError(401, nest_default(401, "Unauthorized", with_error=False))
    holder = state.holder_for_key(header(headers, "x-auth-apikey"))
    signature = header(headers, "x-auth-signature")
    if holder is None or holder.revoked or holder.public_key is None or signature is None:
        raise NestError(401, nest_default(401, NOT_AUTHORIZED))
    canonical = rebuild_canonical(
        method, raw_query=raw_query, path_params=path_params, json_body=body
    )
    if not verify_api_signature(holder.public_key, canonical, signature):
        raise NestError(401, nest_default(401, NOT_AUTHORIZED))
    if holder.nft is None:
        raise NestError(401, nest_default(401, "Unauthorized Access"))
    return holder
