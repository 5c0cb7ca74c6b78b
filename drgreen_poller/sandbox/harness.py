"""Driving a sandbox over HTTP from tests and benchmarks: a local server and a raw signed caller.

Owns ``LocalSandbox`` (a sandbox app on 127.0.0.1 through aiohttp's ``TestServer``, with a
session and control-API helper) and ``SignedCaller`` (requests built exactly as a correct client
builds them, answers returned raw). It is not the product's API client: it never interprets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy
from yarl import URL

from drgreen_poller.canonical import canonical_json, canonical_payload, canonical_query
from drgreen_poller.request_signing import ApiCredentials, load_private_key, sign_api_request
from drgreen_poller.sandbox.app import API_PREFIX, create_app
from drgreen_poller.sandbox.control import CONTROL_PREFIX
from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.world.model import HolderInfo


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """A response as received."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


class SignedCaller:
    """Sends signed requests to ``base_url`` (``http://host:port/api/v1``)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, credentials: ApiCredentials
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._key = load_private_key(credentials.secret_key)

    def headers_for(self, payload: str) -> dict[str, str]:
        """The auth headers for a canonical ``payload``."""
        return {
            "x-auth-apikey": self.credentials.api_key,
            "x-auth-signature": sign_api_request(self._key, payload),
            "Content-Type": "application/json",
        }

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        path_params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        signed_payload: str | None = None,
    ) -> RawAnswer:
        """Send one request and return the raw answer.

        Args:
            method: the HTTP method.
            path: the path below the base URL, parameters filled in (``/dapp/orders/<id>``).
            query: ordered query pairs, signed and sent as one canonical string.
            path_params: the route's parameters in route order (signed for a GET without query).
            body: a JSON body (sent compact, exactly as signed).
            headers: extra or replacement headers (e.g. a wrong signature).
            signed_payload: sign this string instead of the canonical one (to test the guard).
        """
        payload = canonical_payload(method, query=query, path_params=path_params, body=body)
        all_headers = self.headers_for(signed_payload if signed_payload is not None else payload)
        all_headers.update(headers or {})
        url = self.base_url + path
        if query:
            url += "?" + canonical_query(query)
        data = None if body is None else canonical_json(body).encode("utf-8")
        async with self.session.request(
            method, URL(url, encoded=True), data=data, headers=all_headers
        ) as response:
            return RawAnswer(response.status, response.headers, await response.read())

    async def get(self, path: str, *pairs: tuple[str, str], **path_params: str) -> RawAnswer:
        """A signed GET: ``get("/dapp/orders", ("take", "5"))``, ``get(path, orderId=oid)``."""
        return await self.call("GET", path, query=pairs, path_params=path_params or None)

    async def post(self, path: str, body: Any) -> RawAnswer:
        """A signed POST of a JSON body."""
        return await self.call("POST", path, body=body)

    async def patch(self, path: str, body: Any) -> RawAnswer:
        """A signed PATCH of a JSON body."""
        return await self.call("PATCH", path, body=body)


class SandboxNotRunning(Exception):
    """A ``LocalSandbox`` was used outside its ``async with`` block."""


class LocalSandbox:
    """A sandbox served on 127.0.0.1 (a free port) for the length of an ``async with``.

    Example::

        async with LocalSandbox(SandboxState(FakeClock())) as box:
            holder = box.state.create_holder("h1")
            answer = await box.caller(holder).get("/dapp/orders", ("take", "5"))
    """

    def __init__(self, state: SandboxState | None = None) -> None:
        self.state = state if state is not None else SandboxState()
        self._server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LocalSandbox:
        self._server = TestServer(create_app(self.state), host="127.0.0.1")
        await self._server.start_server()
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The client session (open inside the ``async with``)."""
        if self._session is None:
            raise SandboxNotRunning("LocalSandbox is used outside its async with block")
        return self._session

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise SandboxNotRunning("LocalSandbox is used outside its async with block")
        return str(self._server.make_url("")).rstrip("/")

    @property
    def base_url(self) -> str:
        """The Dr Green base URL, ``http://127.0.0.1:PORT/api/v1``."""
        return self.origin + API_PREFIX

    def caller(self, holder: HolderInfo) -> SignedCaller:
        """A signed caller with the holder's key pair."""
        return SignedCaller(self.session, self.base_url, holder.credentials)

    async def control(self, method: str, path: str, body: Any = None) -> RawAnswer:
        """A control-API request: ``control("POST", "/faults", {"kind": "slow"})``."""
        url = self.origin + CONTROL_PREFIX + path
        async with self.session.request(method, url, json=body) as response:
            return RawAnswer(response.status, response.headers, await response.read())

    async def raw(
        self,
        method: str,
        path_qs: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> RawAnswer:
        """An unsigned request to ``/api/v1`` + ``path_qs``, sent byte for byte."""
        url = URL(self.base_url + path_qs, encoded=True)
        async with self.session.request(method, url, headers=headers, data=data) as response:
            return RawAnswer(response.status, response.headers, await response.read())
