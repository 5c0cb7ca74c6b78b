"""The JavaScript canonical form of a Dr Green request, and the guard's Express rebuild of it.

Owns ``drgreen-api.md`` §1.4 as text: what the client signs and sends (WHATWG
``URLSearchParams`` for a query, ``JSON.stringify`` for params and bodies, JavaScript's number
format and property order), and what the server's guard rebuilds from a received request
(Express 4's ``qs`` query parser, then ``URLSearchParams``), which the sandbox and test fakes use.
Pure functions over strings: it must not hold keys, sign, or do I/O (``request_signing`` signs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

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
# qs turns "a[0]" .. "a[20]" into arrays and larger indices into objects.
_QS_ARRAY_LIMIT = 20
_QS_BRACKETS_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
# qs never assigns this key (Express 4's parser drops it, nested or not).
_PROTO_KEY = "__proto__"

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


def _query_key_refusal(key: str, seen: set[str]) -> str | None:
    """Why the server would not see ``key`` as sent, or None when it would."""
    if not key:
        return "a query key is empty, which the server drops"
    if key in seen:
        return f"query key {key!r} repeats; pass a JSON array in one parameter"
    if "[" in key or "]" in key:
        return f"query key {key!r} contains brackets, which the server nests"
    if _ARRAY_INDEX_RE.fullmatch(key):
        return f"query key {key!r} is numeric, which the server reorders"
    if key == _PROTO_KEY:
        return f"query key {key!r} is dropped by the server's parser"
    return None


def canonical_query(pairs: QueryPairs) -> str:
    """The query string to sign and to send, pairs in the order given.

    Raises:
        SigningError: a key repeats (the server would join the values and the signature fails),
            a key is empty, ``__proto__``, or would be reordered or nested by the server's
            parser, or a key or value holds a lone surrogate (URLSearchParams would send U+FFFD).
    """
    seen: set[str] = set()
    for key, value in pairs:
        if _LONE_SURROGATE_RE.search(key + value):
            raise SigningError(f"query pair {key!r} holds a lone surrogate, which no URL can carry")
        refusal = _query_key_refusal(key, seen)
        if refusal is not None:
            raise SigningError(refusal)
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
    becomes an object (``[object Object]``), ``__proto__`` is dropped; keys come back in
    JavaScript property order.
    """
    values: dict[str, _QsValue] = {}
    for key, val in _qs_pairs(raw_query):
        nested = _QS_BRACKETS_RE.match(key)
        parent = nested.group(1) if nested else key
        if parent == _PROTO_KEY:
            continue
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
