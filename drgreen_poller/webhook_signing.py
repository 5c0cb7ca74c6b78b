"""Signatures of our own deliveries: Standard Webhooks (``whsec_`` secrets) and the hex scheme.

Owns webhook secrets (their format, decoding and generation), the ``webhook-signature`` header
and its verification, and the simple ``X-Signature: sha256=<hex>`` scheme. Pure functions: it
must not read a clock (timestamps and ``now`` are arguments) nor know about Dr Green's keys.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import os
from collections.abc import Sequence

from drgreen_poller.errors import SigningError

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# Receivers reject a webhook-timestamp further than this from their clock (Standard Webhooks).
WEBHOOK_TOLERANCE_S = 5 * 60
# ``hmac.digest`` lets go of the GIL on every call, however short the message: in the daemon's
# event loop, getting it back from SQLite's thread cost more than the HMAC itself (py-spy: about
# 20 µs of wall time per signature). An HMAC object's ``update`` keeps the GIL for pieces under
# CPython's ``HASHLIB_GIL_MINSIZE`` (2,048 bytes), so messages are fed in pieces below it.
_HMAC_PIECE = 2047


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the Base64 text after the prefix, decoded.

    Raises:
        SigningError: the secret is not ``whsec_`` + Base64.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise SigningError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError("a webhook secret is whsec_ followed by Base64") from exc


def generate_webhook_secret(size: int = 32) -> str:
    """A new ``whsec_`` secret of ``size`` random bytes (24 to 64)."""
    if not 24 <= size <= 64:
        raise SigningError("a webhook secret holds 24 to 64 random bytes")
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode("ascii")


def sign_webhook(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, single spaces.

    The HMAC-SHA256 covers ``{msg_id}.{timestamp}.{body}`` with the exact body bytes sent.
    """
    return webhook_signature([webhook_key(s) for s in secrets], msg_id, timestamp, body)


def webhook_signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """``sign_webhook`` with the secrets' keys decoded already (a sink decodes them once)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(_hmac_sha256(key, signed)).decode() for key in keys)


def sign_hex(secret: str, body: bytes) -> str:
    """The ``X-Signature`` of the simple scheme: ``sha256=<hex HMAC-SHA256 of the raw body>``.

    The key is the secret's text as configured (UTF-8), as simple receivers use it.
    """
    return "sha256=" + _hmac_sha256(secret.encode("utf-8"), body).hex()


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 object keyed and fed nothing, to copy (keying one costs more than a copy)."""
    return hmac.new(key, digestmod="sha256")


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message``, computed without letting go of the GIL (see ``_HMAC_PIECE``)."""
    mac = _keyed(key).copy()
    view = memoryview(message)
    for start in range(0, len(view), _HMAC_PIECE):
        mac.update(view[start : start + _HMAC_PIECE])
    return mac.digest()


def verify_webhook(
    secrets: Sequence[str],
    *,
    msg_id: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now_s: float,
    tolerance_s: float = WEBHOOK_TOLERANCE_S,
) -> bool:
    """Whether a Standard Webhooks request verifies with any of ``secrets`` and is fresh."""
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    expected = {entry for entry in sign_webhook(secrets, msg_id, int(timestamp), body).split(" ")}
    offered = [entry for entry in signature_header.split(" ") if entry.startswith("v1,")]
    return any(hmac.compare_digest(candidate, entry) for candidate in offered for entry in expected)
