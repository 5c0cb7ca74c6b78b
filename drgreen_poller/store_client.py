"""The Dr Green API as a store's own code calls it: sign customers up, fill carts, place orders.

``StoreClient`` adds to ``ApiClient`` the calls the daemon never makes: creating clients,
carts and orders, reading one client's record (it carries the medical record, dropped unread),
one strain, commissions page by page, recent orders, the summaries and the health check. The
demo and the tests use it to act as a store does; the daemon polls with ``ApiClient`` alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from yarl import URL

from drgreen_poller import USER_AGENT
from drgreen_poller.api import DEFAULT_TAKE, ApiClient, query_pairs
from drgreen_poller.errors import UpstreamMalformed
from drgreen_poller.models import (
    ApprovalSummary,
    Client,
    Commission,
    Json,
    Order,
    Page,
    Strain,
    parse_approval_summary,
    parse_client_stripped,
    parse_commission,
    parse_order_stripped,
    parse_strain,
)


class StoreClient(ApiClient):
    """``ApiClient`` with a store's own calls (the demo's and the tests')."""

    async def health(self) -> bool:
        """Whether ``GET /public/healthStatus`` (unsigned) answers with success."""
        url = URL(self._base + "/public/healthStatus")
        data = await self._send("GET", url, {"User-Agent": USER_AGENT}, None, "GET /public/health")
        return data is not None

    async def recent_orders(self, *, take: int = 20, page: int = 1) -> Page[Order]:
        """``GET /dapp/orders/recent``: newest orders with ``updatedAt`` (no ``adminApproval``)."""
        return await self.page(
            "/dapp/orders/recent",
            "recentOrders",
            parse_order_stripped,
            page=page,
            take=take,
            order_by=None,
        )

    async def create_order(self, client_id: str) -> Order:
        """``POST /dapp/orders``: an order from the client's server-side cart. Not idempotent."""
        return parse_order_stripped(
            await self.request("POST", "/dapp/orders", body={"clientId": client_id})
        )

    async def clients_summary(self) -> ApprovalSummary:
        """``GET /dapp/clients/summary``: client counts by ``adminApproval``."""
        return parse_approval_summary(await self.request("GET", "/dapp/clients/summary"))

    async def client(self, client_id: str) -> Client:
        """``GET /dapp/clients/{clientId}``; the medical record it carries is dropped unread."""
        route = "/dapp/clients/{clientId}"
        return parse_client_stripped(
            await self.request("GET", route, path_params={"clientId": client_id})
        )

    async def create_client(self, body: Mapping[str, Json]) -> str:
        """``POST /dapp/clients``; returns the new client's id, whichever response shape came."""
        data = await self.request("POST", "/dapp/clients", body=dict(body))
        for candidate in _client_id_candidates(data):
            if isinstance(candidate, str) and candidate:
                return candidate
        raise UpstreamMalformed(
            "client created but no id in the response", endpoint="POST /dapp/clients"
        )

    async def add_to_cart(self, cart_id: str, items: Sequence[tuple[str, float]]) -> None:
        """``POST /dapp/carts``: add ``(strainId, quantity)`` items; quantities add up."""
        body = {
            "items": [{"strainId": strain, "quantity": qty} for strain, qty in items],
            "clientCartId": cart_id,
        }
        await self.request("POST", "/dapp/carts", body=body)

    def commission_pages(
        self, *, take: int = DEFAULT_TAKE, payment_status: str | None = None
    ) -> AsyncIterator[Page[Commission]]:
        """``GET /dapp/commissions``, newest first."""
        query = query_pairs(paymentStatus=payment_status)
        return self.pages(
            "/dapp/commissions", "commissions", parse_commission, take=take, query=query
        )

    async def strain(self, strain_id: str, country_code: str | None = None) -> Strain:
        """``GET /dapp/strains/{strainId}``, with availability and stock for ``country_code``."""
        query = [("countryCode", country_code)] if country_code else []
        data = await self.request(
            "GET", "/dapp/strains/{strainId}", path_params={"strainId": strain_id}, query=query
        )
        return parse_strain(data)


def _client_id_candidates(data: Json) -> list[Json]:
    """Where the new client's id may be: ``clientId``, ``data.clientId``, ``client.id``, ``id``."""
    if not isinstance(data, Mapping):
        return []
    nested, client = data.get("data"), data.get("client")
    return [
        data.get("clientId"),
        nested.get("clientId") if isinstance(nested, Mapping) else None,
        client.get("id") if isinstance(client, Mapping) else None,
        data.get("id"),
    ]
