"""The signed Dr Green API client: one instance per holder, over a shared aiohttp session.

Owns the request path: build the canonical string once, sign it (``RequestSigner``, the only
part that knows the crypto), send exactly those bytes, wait on the holder's token bucket, read the
envelope, and parse ``data`` into ``models``. Translates aiohttp and timeout errors into
``errors.Upstream*`` in one place (``_send``). It does **not** retry: the next scheduled poll is
the retry. Medical data is dropped before anything leaves this module. It holds the calls the
daemon polls with; a store's own calls (sign-ups, carts, orders, one client's record) are
``store_client.StoreClient``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from drgreen_poller import USER_AGENT
from drgreen_poller.canonical import QueryPairs, canonical_json, canonical_payload, canonical_query
from drgreen_poller.clock import Clock
from drgreen_poller.errors import (
    SigningError,
    UpstreamClientBug,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from drgreen_poller.http_failures import address, describe
from drgreen_poller.models import (
    ApprovalSummary,
    Client,
    CommissionSummary,
    Json,
    Order,
    Page,
    Strain,
    parse_approval_summary,
    parse_client_stripped,
    parse_commission_summary,
    parse_order_stripped,
    parse_page_meta,
    parse_strain,
)
from drgreen_poller.ratelimit import RunSlots, TokenBucket
from drgreen_poller.request_signing import ApiCredentials, load_private_key, sign_api_request
from drgreen_poller.responses import interpret_response

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Told ``(endpoint, status, duration_ms)`` after every request: the HTTP status as text, or the
# error class ("timeout", "ClientConnectorError") when no response came.
RequestHook = Callable[[str, str, float], None]

DEFAULT_TAKE = 100
# Signatures a holder's signer keeps (``RequestSigner``): every payload a steady run sends.
SIGNATURES_KEPT = 32


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How to reach Dr Green and how politely.

    Args:
        base_url: e.g. ``https://api.drgreennft.com/api/v1`` (a trailing slash is ignored).
        timeout_s: total time allowed for one request, response body included.
        requests_per_second: sustained rate of the holder's token bucket.
        burst: requests the bucket lets through at once after a quiet period.
    """

    base_url: str
    timeout_s: float = 15.0
    requests_per_second: float = 1.0
    burst: int = 3


class RequestSigner:
    """The authentication hook: turns a canonical string into Dr Green's two auth headers.

    Dr Green's signature covers the payload alone (no timestamp, no nonce: drgreen-api.md), so
    a payload signed once stays signed: the few a holder sends every run (page 1 of each list,
    the summaries) are signed once and the signatures kept, at most ``SIGNATURES_KEPT`` of them.
    """

    def __init__(self, credentials: ApiCredentials) -> None:
        self._api_key = credentials.api_key
        self._private_key = load_private_key(credentials.secret_key)
        self._signed: dict[str, str] = {}

    def headers(self, payload: str) -> dict[str, str]:
        signature = self._signed.get(payload)
        if signature is None:
            signature = sign_api_request(self._private_key, payload)
            if len(self._signed) >= SIGNATURES_KEPT:
                self._signed.clear()  # a long sweep's pages: start over rather than grow
            self._signed[payload] = signature
        return {"x-auth-apikey": self._api_key, "x-auth-signature": signature}


def json_array(values: Sequence[str]) -> str:
    """A list-valued filter as Dr Green wants it: one parameter holding a JSON array."""
    return canonical_json(list(values))


def query_pairs(**filters: str | None) -> list[tuple[str, str]]:
    """Query pairs in the given order, leaving out filters with no value."""
    return [(key, value) for key, value in filters.items() if value not in (None, "")]


def _open_gate() -> None:
    """Every request may leave (a daemon alone)."""


class ApiClient:
    """Dr Green's DAPP API for one holder.

    Args:
        session: the aiohttp session (shared by all holders; the caller closes it).
        settings: base URL, timeout and politeness budget.
        credentials: the holder's key pair.
        clock: the time source (token bucket, ``Retry-After`` dates).
        bucket: the holder's token bucket; one is made from ``settings`` when not given.
        slots: the daemon's run slots, for a bucket made here (a run lends its slot while it
            waits for the budget).
        holder: the holder's name, for logs.
        on_request: hooks told about every request as it ends (metrics subscribe here).
        instance: this daemon's instance id where several share a database (in the
            User-Agent, so that the upstream's logs tell them apart).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: ApiSettings,
        credentials: ApiCredentials,
        clock: Clock,
        *,
        bucket: TokenBucket | None = None,
        slots: RunSlots | None = None,
        holder: str = "",
        on_request: Sequence[RequestHook] = (),
        instance: str | None = None,
    ) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._signer = RequestSigner(credentials)
        self._clock = clock
        self.bucket = bucket or TokenBucket(
            settings.requests_per_second, settings.burst, clock, slots=slots
        )
        self.holder = holder
        # Several instances on one database: which one sent a request shows in its User-Agent.
        self.user_agent = USER_AGENT if instance is None else f"{USER_AGENT} (instance {instance})"
        self.requests_sent = 0  # every request that left, for the canonical poll log line
        # Checked as each request is about to leave, its budget spent: raises to hold it back
        # (several instances: ``LeaseLost`` once this one may no longer hold the holder).
        self.gate: Callable[[], None] = _open_gate
        # Observers of every request (httpx's event hooks): subscribe by appending.
        self.request_hooks: list[RequestHook] = list(on_request)

    # --- transport ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        route: str,
        *,
        path_params: Mapping[str, str] | None = None,
        query: QueryPairs = (),
        body: Json = None,
    ) -> Json:
        """Send one signed request and return the envelope's ``data``, medical data removed.

        Args:
            method: HTTP method.
            route: the route template under the base URL, e.g. ``/dapp/orders/{orderId}``.
            path_params: values for the template, in route order (a GET without query signs them).
            query: query pairs, signed and sent in this order.
            body: the JSON body of a POST/PATCH/DELETE: an object or an array (None: ``{}``).

        Raises:
            SigningError: a body that is not a JSON object or array (Express's JSON parser
                refuses it), or a query or value with no canonical form; nothing is sent.
            UpstreamError: the subclass that fits the failure.
        """
        if body is not None and not isinstance(body, Mapping | list | tuple):
            kind = type(body).__name__
            raise SigningError(f"a request body must be a JSON object or array, not a {kind}")
        params = dict(path_params or {})
        path = route.format(**{k: quote(v, safe="") for k, v in params.items()})
        payload = canonical_payload(method, query=query, path_params=params, body=body)
        query_string = canonical_query(query)
        url = URL(self._base + path + (f"?{query_string}" if query_string else ""), encoded=True)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
            **self._signer.headers(payload),
        }
        data = None if method.upper() == "GET" else payload.encode("utf-8")
        # The body was decoded without its medical keys (``responses``): nothing to copy here.
        return await self._send(method, url, headers, data, f"{method} {route}")

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], data: bytes | None, endpoint: str
    ) -> Json:
        await self.bucket.acquire()
        self.gate()
        self.requests_sent += 1
        started = self._clock.monotonic()
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
                location = response.headers.get("Location", "")
        except TimeoutError as exc:
            self._tell(endpoint, "timeout", started)
            failure = describe(exc, address(url), self._timeout.total or 0)
            raise UpstreamTimeout(failure.message, endpoint=endpoint) from exc
        except aiohttp.ClientError as exc:
            self._tell(endpoint, type(exc).__name__, started)
            failure = describe(exc, address(url), self._timeout.total or 0)
            raise UpstreamUnavailable(failure.message, endpoint=endpoint) from exc
        duration_ms = self._tell(endpoint, str(status), started)
        log.debug(
            "upstream_request_finished",
            holder=self.holder,
            endpoint=endpoint,
            status=status,
            duration_ms=duration_ms,
        )
        if 300 <= status < 400:
            raise UpstreamClientBug(
                f"redirected to {location or 'nowhere'}; check the base URL",
                status=status,
                endpoint=endpoint,
            )
        return interpret_response(
            status, body, retry_after=retry_after, now=self._clock.now(), endpoint=endpoint
        )

    def _tell(self, endpoint: str, status: str, started: float) -> float:
        """Tell the request hooks how a request ended; returns its duration in ms."""
        duration_ms = round((self._clock.monotonic() - started) * 1000, 1)
        for hook in self.request_hooks:
            hook(endpoint, status, duration_ms)
        return duration_ms

    # --- pagination -------------------------------------------------------------------------

    async def page(
        self,
        route: str,
        key: str,
        parse: Callable[[Json], T],
        *,
        page: int = 1,
        take: int = DEFAULT_TAKE,
        order_by: str | None = "desc",
        query: QueryPairs = (),
    ) -> Page[T]:
        """One page of a list endpoint: ``data[key]`` parsed item by item, and its ``pageMetaDto``.

        ``orderBy`` is always sent (the server's default is ascending) unless ``order_by`` is
        ``None``, for the endpoints that ignore it.
        """
        paging = [("take", str(take)), ("page", str(page))]
        if order_by is not None:
            paging.insert(0, ("orderBy", order_by))
        data = await self.request("GET", route, query=[*query, *paging])
        items = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise UpstreamMalformed(f"response has no {key!r} list", endpoint=f"GET {route}")
        meta = parse_page_meta(data.get("pageMetaDto"), page=page, take=take, items=len(items))
        return Page([parse(item) for item in items], meta)

    async def pages(
        self,
        route: str,
        key: str,
        parse: Callable[[Json], T],
        *,
        take: int = DEFAULT_TAKE,
        order_by: str | None = "desc",
        query: QueryPairs = (),
        first_page: int = 1,
    ) -> AsyncIterator[Page[T]]:
        """Pages from ``first_page`` on until the server says there is no next page.

        The caller stops early by breaking out of the loop; no request is made for a page it
        does not ask for.
        """
        number = first_page
        while True:
            result = await self.page(
                route, key, parse, page=number, take=take, order_by=order_by, query=query
            )
            yield result
            if not result.meta.has_next_page or not result.items:
                return
            number += 1

    # --- orders ----------------------------------------------------------------------------

    def order_pages(
        self,
        *,
        take: int = DEFAULT_TAKE,
        status: str | None = None,
        payment_status: str | None = None,
        admin_approval: str | None = None,
        client_ids: Sequence[str] = (),
    ) -> AsyncIterator[Page[Order]]:
        """``GET /dapp/orders``, newest first (list items carry all three status fields)."""
        query = query_pairs(
            status=status,
            paymentStatus=payment_status,
            adminApproval=admin_approval,
            clientIds=json_array(client_ids) if client_ids else None,
        )
        return self.pages("/dapp/orders", "orders", parse_order_stripped, take=take, query=query)

    async def orders_summary(self) -> ApprovalSummary:
        """``GET /dapp/orders/summary``: order counts by ``adminApproval``."""
        return parse_approval_summary(await self.request("GET", "/dapp/orders/summary"))

    async def order(self, order_id: str) -> Order:
        """``GET /dapp/orders/{orderId}`` (line items, ``deliveryFee``, ``updatedAt``).

        Raises:
            UpstreamNotFound: the server answered ``orderDetails: null`` (or 404).
        """
        route = "/dapp/orders/{orderId}"
        data = await self.request("GET", route, path_params={"orderId": order_id})
        details = data.get("orderDetails") if isinstance(data, Mapping) else None
        if details is None:
            raise UpstreamNotFound(f"order {order_id} not found", endpoint=f"GET {route}")
        return parse_order_stripped(details)

    # --- clients ---------------------------------------------------------------------------

    def client_pages(
        self,
        *,
        take: int = DEFAULT_TAKE,
        admin_approval: str | None = None,
        is_verified: bool | None = None,
    ) -> AsyncIterator[Page[Client]]:
        """``GET /dapp/clients``, newest first: KYC fields for many clients, no medical data."""
        query = query_pairs(
            adminApproval=admin_approval,
            isVerified=None if is_verified is None else str(is_verified).lower(),
        )
        return self.pages("/dapp/clients", "clients", parse_client_stripped, take=take, query=query)

    # --- commissions and strains ----------------------------------------------------------

    async def commissions_summary(self) -> CommissionSummary:
        """``GET /dapp/commissions/summary`` (compare the USD amounts)."""
        return parse_commission_summary(await self.request("GET", "/dapp/commissions/summary"))

    def strain_pages(
        self, country_code: str, *, take: int = DEFAULT_TAKE
    ) -> AsyncIterator[Page[Strain]]:
        """``GET /dapp/strains`` for one country (ISO alpha-3): what is on sale there."""
        query = [("countryCode", country_code)]
        return self.pages("/dapp/strains", "strains", parse_strain, take=take, query=query)
