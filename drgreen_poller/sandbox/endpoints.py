"""The endpoint templates of the simulated Dr Green API, as requests are counted and filtered.

Owns the list of ``METHOD /path/{param}`` templates (relative to ``/api/v1``) in matching order,
and which guard each one runs behind. Pure data: ``routes.py`` binds handlers to it.
"""

from __future__ import annotations

from typing import Literal

Auth = Literal["api_key", "public", "jwt_only"]

# Static paths come before parameterised siblings, as in the NestJS controllers.
ROUTE_TABLE: tuple[tuple[str, Auth], ...] = (
    ("GET /public/healthStatus", "public"),
    ("GET /dapp/orders", "api_key"),
    ("GET /dapp/orders/recent", "api_key"),
    ("GET /dapp/orders/summary", "api_key"),
    ("GET /dapp/orders/{orderId}", "api_key"),
    ("POST /dapp/orders", "api_key"),
    ("GET /dapp/clients", "api_key"),
    ("GET /dapp/clients/summary", "api_key"),
    ("GET /dapp/clients/list", "api_key"),
    ("GET /dapp/clients/{clientId}", "api_key"),
    ("GET /dapp/clients/{clientId}/orders/{orderId}", "api_key"),
    ("POST /dapp/clients", "api_key"),
    ("GET /dapp/carts", "api_key"),
    ("POST /dapp/carts", "api_key"),
    ("DELETE /dapp/carts/{cartId}", "api_key"),
    ("GET /dapp/commissions/summary", "api_key"),
    ("GET /dapp/commissions", "api_key"),
    ("GET /dapp/strains", "api_key"),
    ("GET /dapp/strains/{strainId}", "api_key"),
    ("GET /dapp/dashboard/summary", "api_key"),
    ("GET /strains", "public"),
    ("GET /strains/{strainId}", "jwt_only"),
    ("GET /dapp/users/nfts", "jwt_only"),
    ("POST /keys", "jwt_only"),
    ("PATCH /keys/delete", "jwt_only"),
)
ENDPOINTS: tuple[str, ...] = tuple(endpoint for endpoint, _ in ROUTE_TABLE)
