"""Dr Green request signing: canonical strings, ECDSA secp256k1 signatures, and key handling.

Owns both halves of ``drgreen-api.md`` §1.4: the client's canonical string (built once, then
signed *and* sent), and the server guard's rebuild of that string from a received request (which
the sandbox uses, mimicking Express's ``qs`` parser, ``URLSearchParams`` and ``JSON.stringify``).
Also the Standard Webhooks signatures of our own deliveries. Pure functions only: no I/O, no
clock (timestamps are arguments); keys and secrets are generated with the OS random source.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drgreen_poller.errors import SigningError

# WHATWG application/x-www-form-urlencoded: these bytes stay as they are, space becomes "+",
# every other byte of the UTF-8 encoding becomes %XX (uppercase). Not urllib's rules: urllib
# leaves "~" alone and escapes "*", and either difference is a 401.
_FORM_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._")

# JavaScript numbers are doubles: integers beyond 2**53 lose precision in JSON.parse.
_JS_SAFE_INTEGER = 2**53
# ECMAScript "array index" property keys (0 .. 2**32 - 2) are enumerated first, ascending.
_JS_ARRAY_INDEX_MAX = 2**32 - 2
_ARRAY_INDEX_RE = re.compile(r"0|[1-9][0-9]*")
_LONE_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
# ``hmac.digest`` lets go of the GIL on every call, however short the message: in the daemon's
# event loop, getting it back from SQLite's thread cost more than the HMAC itself (py-spy: about
# 20 µs of wall time per signature). An HMAC object's ``update`` keeps the GIL for pieces under
# CPython's ``HASHLIB_GIL_MINSIZE`` (2,048 bytes), so messages are fed in pieces below it.
_HMAC_PIECE = 2047
# qs turns "a[0]" .. "a[20]" into arrays and larger indices into objects.
_QS_ARRAY_LIMIT = 20
_QS_BRACKETS_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")

QueryPairs = Sequence[tuple[str, str]]


def form_encode(text: str) -> str:
    """Encode one key or value exactly as WHATWG ``URLSearchParams`` serialises it."""
    out: list[str] = []
    for byte in text.encode("utf-8", "surrogatepass"):
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def canonical_query(pairs: QueryPairs) -> str:
    """The query string to sign and to send, pairs in the order given.

    Raises:
        SigningError: a key repeats (the server would join the values and the signature fails),
            a key is empty or would be reordered or nested by the server's parser, or a key or
            value holds a lone surrogate (URLSearchParams would send U+FFFD instead).
    """
    seen: set[str] = set()
    for key, value in pairs:
        if not key:
            raise SigningError("a query key is empty, which the server drops")
        if _LONE_SURROGATE_RE.search(key + value):
            raise SigningError(f"query pair {key!r} holds a lone surrogate, which no URL can carry")
        if key in seen:
            raise SigningError(f"query key {key!r} repeats; pass a JSON array in one parameter")
        if "[" in key or "]" in key:
            raise SigningError(f"query key {key!r} contains brackets, which the server nests")
        if _ARRAY_INDEX_RE.fullmatch(key):
            raise SigningError(f"query key {key!r} is numeric, which the server reorders")
        seen.add(key)
    return "&".join(f"{form_encode(k)}={form_encode(v)}" for k, v in pairs)


def _finite_double(value: float | int) -> float:
    """The double JavaScript holds for ``value``; refused when it has no JSON form."""
    try:
        double = float(value)
    except OverflowError:
        raise SigningError("an integer beyond the range of a JavaScript number") from None
    if double != double or double in (float("inf"), float("-inf")):
        raise SigningError("NaN and Infinity have no JSON form")
    return double


def js_number(value: float | int) -> str:
    """Format a number the way JavaScript's ``JSON.stringify`` does (``1.0`` → ``1``)."""
    if isinstance(value, bool):
        raise SigningError("a boolean is not a number")
    if isinstance(value, int) and -_JS_SAFE_INTEGER <= value <= _JS_SAFE_INTEGER:
        return str(value)
    value = _finite_double(value)
    if value == 0:
        return "0"  # JavaScript prints -0 as 0
    if value < 0:
        return "-" + js_number(-value)
    _sign, digits_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    digits = "".join(map(str, digits_tuple)).rstrip("0")
    exponent += len(digits_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # value == 0.<digits> * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_key_order(keys: Sequence[str]) -> list[str]:
    """Property order of a JavaScript object: array-index keys ascending, then the rest in order."""
    indices = [k for k in keys if _ARRAY_INDEX_RE.fullmatch(k) and int(k) <= _JS_ARRAY_INDEX_MAX]
    index_set = set(indices)
    return sorted(indices, key=int) + [k for k in keys if k not in index_set]


def _js_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    # JSON.stringify (ES2019) escapes lone surrogates; Python would emit them raw.
    return _LONE_SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


def canonical_json(value: Any) -> str:
    """Serialise ``value`` exactly as JavaScript's ``JSON.stringify`` would after ``JSON.parse``.

    Compact separators, non-ASCII left raw, whole floats without ``.0``, big integers rounded
    as doubles, object keys in JavaScript property order.

    Raises:
        SigningError: the value holds NaN, Infinity, or a type JSON cannot carry.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return js_number(value)
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, Mapping):
        keys = [str(k) for k in value]
        if len(set(keys)) != len(keys):
            raise SigningError("an object has two keys with the same text")
        by_text = {str(k): v for k, v in value.items()}
        items = (f"{_js_string(k)}:{canonical_json(by_text[k])}" for k in js_key_order(keys))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise SigningError(f"a {type(value).__name__} cannot be sent as JSON")


def canonical_payload(
    method: str,
    *,
    query: QueryPairs = (),
    path_params: Mapping[str, str] | None = None,
    body: Any = None,
) -> str:
    """The string the Dr Green guard rebuilds for a request the client is about to send.

    GET with a query signs the query string; GET without one signs the route's path parameters
    as JSON (``{}`` when there are none); every other method signs the JSON body (``{}`` when
    there is none).
    """
    if method.upper() == "GET":
        if query:
            return canonical_query(query)
        return canonical_json(dict(path_params or {}))
    return canonical_json({} if body is None else body)


# --- the server side: what the guard rebuilds from a received request -------------------------


def _qs_decode(text: str) -> str:
    plus_free = text.replace("+", " ")
    try:
        return unquote(plus_free, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return plus_free  # decodeURIComponent throws; qs then keeps the raw text


def _qs_pairs(raw_query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        bracket_equals = part.find("]=")
        pos = part.find("=") if bracket_equals == -1 else bracket_equals + 1
        if pos == -1:
            key, val = _qs_decode(part), ""
        else:
            key, val = _qs_decode(part[:pos]), _qs_decode(part[pos + 1 :])
        if key:  # qs drops empty keys (and with them empty segments like "a=1&&b=2")
            pairs.append((key, val))
    return pairs


@dataclass
class _QsValue:
    """One top-level value of Express's ``req.query``, as JavaScript's ``String()`` sees it."""

    scalars: list[str] = field(default_factory=list)
    is_object: bool = False

    def as_js_string(self) -> str:
        return "[object Object]" if self.is_object else ",".join(self.scalars)


def express_query(raw_query: str) -> dict[str, str]:
    """Parse a raw query as Express 4 (``qs``) does, then stringify each value as JavaScript would.

    Repeated keys become arrays (joined with ``,``), ``a[]``/``a[0]`` become arrays, ``a[b]``
    becomes an object (``[object Object]``); keys come back in JavaScript property order.
    """
    values: dict[str, _QsValue] = {}
    for key, val in _qs_pairs(raw_query):
        nested = _QS_BRACKETS_RE.match(key)
        parent = nested.group(1) if nested else key
        entry = values.setdefault(parent, _QsValue())
        if nested:
            first = nested.group(2)[1 : nested.group(2).index("]")]
            is_index = first == "" or (first.isdigit() and int(first) <= _QS_ARRAY_LIMIT)
            if not is_index or nested.group(2).count("[") > 1:
                entry.is_object = True
        entry.scalars.append(val)
    return {k: values[k].as_js_string() for k in js_key_order(list(values))}


def rebuild_canonical(
    method: str,
    *,
    raw_query: str,
    path_params: Mapping[str, str],
    json_body: Any,
) -> str:
    """The canonical string as the real guard builds it from a request it received.

    Args:
        method: the HTTP method.
        raw_query: the query string exactly as received, without the ``?``.
        path_params: the route's parameters in route order.
        json_body: the parsed JSON body (``{}`` when the request had none or was not JSON).
    """
    if method.upper() == "GET":
        query = express_query(raw_query)
        if query:
            return "&".join(f"{form_encode(k)}={form_encode(v)}" for k, v in query.items())
        return canonical_json(dict(path_params))
    return canonical_json(json_body)


# --- keys and signatures -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """A holder's Dr Green key pair, as issued: Base64 text of PEM public and private keys."""

    api_key: str
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={self.api_key[:44]}…, secret_key=<hidden>)"


def _b64_pem(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"{what} is not Base64 text") from exc


def load_private_key(secret_key: str) -> ec.EllipticCurvePrivateKey:
    """Load a holder's ``secretKey`` (Base64 of a PKCS#8 PEM) and check it is secp256k1.

    Raises:
        SigningError: the text is not Base64, not a PEM private key, or not on secp256k1.
    """
    pem = _b64_pem(secret_key, "secret key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError("secret key is not a PEM private key (Base64 of PKCS#8)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256K1):
        raise SigningError("secret key is not an ECDSA secp256k1 key")
    return key


def load_public_key(api_key: str) -> ec.EllipticCurvePublicKey:
    """Load a holder's ``apiKey`` (Base64 of an SPKI PEM) and check it is secp256k1.

    Raises:
        SigningError: the text is not Base64, not a PEM public key, or not on secp256k1.
    """
    pem = _b64_pem(api_key, "API key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError("API key is not a PEM public key (Base64 of SPKI)") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
        raise SigningError("API key is not an ECDSA secp256k1 key")
    return key


def _api_key_of(public_key: ec.EllipticCurvePublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(pem).decode("ascii")


def api_key_for(secret_key: str) -> str:
    """The ``apiKey`` that belongs to ``secret_key`` (to check a configured pair matches)."""
    return _api_key_of(load_private_key(secret_key).public_key())


def generate_credentials() -> ApiCredentials:
    """A fresh key pair in Dr Green's format (for the sandbox and tests)."""
    private = ec.generate_private_key(ec.SECP256K1())
    secret_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ApiCredentials(
        api_key=_api_key_of(private.public_key()),
        secret_key=base64.b64encode(secret_pem).decode("ascii"),
    )


def sign_api_request(private_key: ec.EllipticCurvePrivateKey, payload: str) -> str:
    """The ``x-auth-signature`` header for ``payload``: Base64 of a DER ECDSA-SHA256 signature."""
    der = private_key.sign(payload.encode("utf-8", "surrogatepass"), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")


def verify_api_signature(
    public_key: ec.EllipticCurvePublicKey, payload: str, signature: str
) -> bool:
    """Whether ``signature`` verifies over ``payload``, as the guard's ``createVerify`` does."""
    try:
        der = base64.b64decode(signature, validate=False)
        public_key.verify(der, payload.encode("utf-8", "surrogatepass"), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


# --- webhooks (Standard Webhooks) ---------------------------------------------------------------

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
# Receivers reject a webhook-timestamp further than this from their clock (Standard Webhooks).
WEBHOOK_TOLERANCE_S = 5 * 60


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
