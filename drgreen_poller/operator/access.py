"""Who may see the operator page and who may act on it: loopback or a token, and no cross-site POST.

Owns the rules, as functions of a request's peer and headers: without ``[daemon]
operator_token`` only loopback peers addressing the page by a loopback name are served (the Host
check stops a DNS-rebinding site from reading it through the browser); with a token every
request carries it (``Authorization: Bearer``, or the cookie the login form sets, which holds a
digest of it, never the token). A POST must also carry the per-process form token and must not
come from another site (``Origin``, ``Sec-Fetch-Site``). It renders no page and logs nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Mapping

from aiohttp import web

COOKIE = "drgreen_operator"
CSRF_FIELD = "csrf"
# ``Access.refusal``'s answer for a request that only lacks the token: show the sign-in form.
SIGN_IN = "sign in"
# What the login cookie holds: HMAC(token, this), so the cookie never is the token itself and a
# new token (a reload) ends every session at once.
_SESSION_CONTEXT = b"drgreen-poller operator page session"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
# Sec-Fetch-Site values of a request the page's own form (or a typed URL) made.
_SAME_SITE = frozenset({"same-origin", "none"})


def is_loopback(peer: str | None) -> bool:
    """Whether the peer address is a loopback one (IPv4-mapped IPv6 included)."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name or address."""
    if not host:
        return False
    if host.startswith("["):  # [::1]:9187
        name = host[1:].split("]", 1)[0]
    else:  # localhost:9187, 127.0.0.1 (one colon at most: a bare IPv6 address has several)
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in _LOOPBACK_NAMES or is_loopback(name)


def session_value(token: str) -> str:
    """The login cookie's value for ``token``."""
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def carries_token(headers: Mapping[str, str], cookies: Mapping[str, str], token: str) -> bool:
    """Whether a request carries ``token``: as a bearer token, or the login cookie."""
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _equal(given.strip(), token):
        return True
    return _equal(cookies.get(COOKIE, ""), session_value(token))


def cross_site(headers: Mapping[str, str], own_origin: str) -> str | None:
    """Why a POST looks like it comes from another site (None: it does not)."""
    origin = headers.get("Origin")
    if origin is not None and origin != own_origin:
        return f"the form was sent from {origin!r}, not from this page"
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in _SAME_SITE:
        return f"the browser says the form came from another site ({fetch_site})"
    return None


class Access:
    """The page's gatekeeper. ``token`` returns the configured token now (None: loopback only),
    so a reload that sets or changes it applies to the next request."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        self.token = token
        self.csrf = secrets.token_urlsafe(32)  # per process: a restart invalidates open forms

    def refusal(self, request: web.Request) -> str | None:
        """Why ``request`` may not see the page (None: it may). ``SIGN_IN`` means: show the
        sign-in form (a token is configured and the request does not carry it)."""
        token = self.token()
        if token is None:
            if not is_loopback(request.remote):
                return (
                    "the operator page answers only on loopback: reach it through an SSH tunnel"
                    " (ssh -L 9187:127.0.0.1:9187 HOST), or set [daemon] operator_token"
                )
            if not is_loopback_host(request.host):
                return "the operator page answers only to loopback names (localhost, 127.0.0.1)"
            return None
        return None if carries_token(request.headers, request.cookies, token) else SIGN_IN

    def post_refusal(self, request: web.Request, form: Mapping[str, str]) -> str | None:
        """Why a POST is refused as a possible cross-site request (None: it is not)."""
        if not _equal(form.get(CSRF_FIELD, ""), self.csrf):
            return "the form is stale or was not sent by this page (reload the page and retry)"
        return cross_site(request.headers, f"{request.scheme}://{request.host}")
