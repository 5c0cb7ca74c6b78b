"""Routing of ``/api/v1`` requests as Express does it, and the handler calling convention.

Owns the endpoint templates (``METHOD /path/{param}`` below ``/api/v1``, in matching order, with
the guard each runs behind), matching (case-insensitive, optional trailing slash, first match
wins, ``HEAD`` served by ``GET`` routes), path-parameter decoding in route order, and the
``Call``/``Reply`` types the handlers use. It must not authenticate, validate or build bodies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from drgreen_poller.sandbox.world import World
from drgreen_poller.sandbox.world.model import HolderInfo

Auth = Literal["api_key", "public", "jwt_only"]

# The admin panel's routes below ``/nfts/{tokenId}``: JWT only, so an API key gets a 401.
NFT_ADMIN_ROUTES = (
    "summary", "holder", "clients", "clients/export", "orders", "orders/export", "transactions",
    "transactions/exports", "commissions/holder/summary",
    "commissions/managers/{userId}/summary", "commissions/holder", "commissions/holder/export",
    "commissions/managers/{userId}", "commissions/managers/{userId}/export",
)  # fmt: skip
# Static paths come before parameterised siblings, as in the NestJS controllers.
ROUTE_TABLE: tuple[tuple[str, Auth], ...] = (
    ("GET /public/healthStatus", "public"),
    ("GET /dapp/orders", "api_key"),
    ("GET /dapp/orders/recent", "api_key"),
    ("GET /dapp/orders/summary", "api_key"),
    ("GET /dapp/orders/chart-data", "api_key"),
    ("GET /dapp/orders/status-breakdown", "api_key"),
    ("GET /dapp/orders/{orderId}", "api_key"),
    ("POST /dapp/orders", "api_key"),
    ("GET /dapp/clients", "api_key"),
    ("GET /dapp/clients/summary", "api_key"),
    ("GET /dapp/clients/list", "api_key"),
    ("GET /dapp/clients/chart-data", "api_key"),
    ("GET /dapp/clients/status-breakdown", "api_key"),
    ("GET /dapp/clients/{clientId}", "api_key"),
    ("PATCH /dapp/clients/{clientId}", "api_key"),
    ("GET /dapp/clients/{clientId}/orders/{orderId}", "api_key"),
    ("POST /dapp/clients", "api_key"),
    ("GET /dapp/client/{clientId}/orders", "api_key"),
    ("GET /dapp/client/{clientId}/transactions", "api_key"),
    ("GET /dapp/carts", "api_key"),
    ("POST /dapp/carts", "api_key"),
    ("DELETE /dapp/carts/{cartId}", "api_key"),
    ("GET /dapp/commissions/summary", "api_key"),
    ("GET /dapp/commissions", "api_key"),
    ("GET /dapp/commissions/managers/summary", "api_key"),
    ("GET /dapp/commissions/managers", "api_key"),
    ("GET /dapp/strains", "api_key"),
    ("GET /dapp/strains/{strainId}", "api_key"),
    ("GET /dapp/dashboard/summary", "api_key"),
    ("GET /dapp/dashboard/analytics", "api_key"),
    ("GET /dapp/sales", "api_key"),
    ("GET /dapp/sales/summary", "api_key"),
    ("GET /dapp/revenue", "api_key"),
    ("GET /dapp/revenue/summary", "api_key"),
    ("GET /dapp/revenue/chart-data", "api_key"),
    ("GET /nfts/list", "jwt_only"),
    ("GET /nfts/celebrities-list", "jwt_only"),
    ("GET /nfts/{tokenId}", "api_key"),
    *((f"GET /nfts/{{tokenId}}/{tail}", "jwt_only") for tail in NFT_ADMIN_ROUTES),
    ("GET /strains", "public"),
    ("GET /strains/{strainId}", "jwt_only"),
    ("GET /dapp/users/nfts", "jwt_only"),
    ("POST /keys", "jwt_only"),
    ("PATCH /keys/delete", "jwt_only"),
)
ENDPOINTS: tuple[str, ...] = tuple(endpoint for endpoint, _ in ROUTE_TABLE)
_PARAM_RE = re.compile(r"\{([A-Za-z]+)\}")


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: the world, the admitted holder and the parsed request."""

    state: World
    holder: HolderInfo | None
    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any

    @property
    def owner(self) -> HolderInfo:
        """The admitted holder (every ``/dapp`` route runs behind the guard)."""
        if self.holder is None:
            raise LookupError("this route runs without the API-key guard")
        return self.holder


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: the envelope's ``data`` and the status (201 for POST)."""

    data: Any
    status: int = 200


Handler = Callable[[Call], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: its template, guard and compiled path pattern."""

    endpoint: str
    method: str
    auth: Auth
    pattern: re.Pattern[str]
    names: tuple[str, ...]


def _compile(endpoint: str, auth: Auth) -> Route:
    method, template = endpoint.split(" ", 1)
    names = tuple(_PARAM_RE.findall(template))
    parts = _PARAM_RE.split(template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return Route(endpoint, method, auth, re.compile(f"{regex}/?", re.IGNORECASE), names)


ROUTES: tuple[Route, ...] = tuple(_compile(endpoint, auth) for endpoint, auth in ROUTE_TABLE)


def match(method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
    """The first route for ``method`` and the raw path below ``/api/v1``, with decoded params."""
    wanted = "GET" if method == "HEAD" else method
    for route in ROUTES:
        if route.method != wanted:
            continue
        found = route.pattern.fullmatch(raw_path)
        if found is not None:
            return route, {name: unquote(found.group(name)) for name in route.names}
    return None
