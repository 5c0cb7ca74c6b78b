"""What went wrong on an HTTP connection, in an operator's words, not an exception class's.

Owns one pure function, ``describe``, that turns a timeout or an aiohttp client exception into
a short kind (``connection refused``) and one line an operator can act on (``cannot connect to
127.0.0.1:8799: connection refused``). It raises nothing and translates nothing into our error
tree: ``api`` and ``sinks`` do that, each in its one place, with these words.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass

import aiohttp
from yarl import URL

# Errors asyncio raises without an errno, by the errno they stand for.
_ERRNO_OF: dict[type[OSError], int] = {
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    BrokenPipeError: errno.EPIPE,
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed request in words: ``kind`` is short and stable, ``message`` says where and why."""

    kind: str
    message: str


def address(url: URL | str) -> str:
    """``host:port`` of a URL, as an operator would type it (IPv6 in brackets)."""
    url = URL(url)
    host = url.host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def describe(exc: BaseException, where: str, timeout_s: float) -> Failure:
    """The words for ``exc``, raised by a request to ``where`` (``host:port``, a socket path).

    Args:
        exc: a ``TimeoutError`` or an ``aiohttp.ClientError``.
        where: what the request went to, as the operator configured it.
        timeout_s: the request's timeout, to say how long we waited.
    """
    if isinstance(exc, TimeoutError):
        return Failure("timeout", f"no answer from {where} within {timeout_s:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _not_connected(exc, where)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure("disconnected", f"{where} closed the connection without answering")
    if isinstance(exc, aiohttp.ClientOSError):
        reason = _reason(exc)
        return Failure(reason, f"connection to {where} lost: {reason}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure("answer cut off", f"the answer from {where} was cut off")
    if isinstance(exc, aiohttp.ClientResponseError):
        first_line = (exc.message or "").splitlines()[0] if exc.message else "unreadable"
        return Failure("not HTTP", f"{where} did not answer in HTTP ({first_line.lower()})")
    return Failure("request failed", f"request to {where} failed: {exc or type(exc).__name__}")


def _not_connected(exc: aiohttp.ClientConnectorError, where: str) -> Failure:
    """No connection was made: refused, no such host, TLS refused, or another OS error."""
    cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or "not trusted"
        return Failure("TLS failure", f"cannot connect to {where}: TLS certificate {detail}")
    if isinstance(cause, ssl.SSLError):
        detail = (cause.reason or str(cause)).replace("_", " ").lower()
        return Failure("TLS failure", f"cannot connect to {where}: TLS handshake failed: {detail}")
    if isinstance(cause, socket.gaierror):
        return Failure("name not resolved", f"cannot connect to {where}: {_reason(cause)}")
    reason = _reason(cause)
    return Failure(reason, f"cannot connect to {where}: {reason}")


def _reason(error: OSError) -> str:
    """An OS error's reason in lower case: ``connection refused``, ``name or service not known``.

    The errno's own text comes first: asyncio words a refusal "Connect call failed (...)".
    """
    number = error.errno or _ERRNO_OF.get(type(error), 0)
    if number > 0:
        text = os.strerror(number)
    else:
        text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]
