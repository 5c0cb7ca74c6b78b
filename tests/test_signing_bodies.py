"""The client signs only bodies Dr Green's body parser accepts: a JSON object or array."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from drgreen_poller.errors import SigningError, UpstreamError
from drgreen_poller.sandbox import HolderInfo, LocalSandbox
from tests.conftest import ClientFactory


class TestRequestBody:
    """``ApiClient.request`` with each kind of JSON body, against the sandbox."""

    @pytest.mark.parametrize("body", ["clientId", "", 5, 1.5, True, False])
    async def test_scalar_body_is_refused_before_sending(
        self, box: LocalSandbox, holder: HolderInfo, make_client: ClientFactory, body: Any
    ) -> None:
        """A string, number or boolean body is refused with a SigningError and never sent."""
        client = make_client(box.base_url, creds=holder.credentials)
        with pytest.raises(SigningError, match="JSON object or array") as refused:
            await client.request("POST", "/dapp/orders", body=body)
        assert type(body).__name__ in str(refused.value)
        assert client.requests_sent == 0
        assert box.state.traffic.request_counts()["total"] == 0

    @pytest.mark.parametrize("body", [{"clientId": "c"}, [{"clientId": "c"}], (), None])
    async def test_object_array_or_no_body_is_signed_and_sent(
        self, box: LocalSandbox, holder: HolderInfo, make_client: ClientFactory, body: Any
    ) -> None:
        """An object, an array or no body reaches the sandbox and passes its guard."""
        client = make_client(box.base_url, creds=holder.credentials)
        with contextlib.suppress(UpstreamError):  # the route's own answer, after the guard
            await client.request("POST", "/dapp/orders", body=body)
        counts = box.state.traffic.request_counts()
        assert counts["total"] == 1
        assert "401" not in counts["by_status"], counts["by_status"]
