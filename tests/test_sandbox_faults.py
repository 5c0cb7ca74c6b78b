"""The sandbox's injected faults (the gateway in front of the API) and its request counters."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from drgreen_poller.clock import FakeClock, SystemClock
from drgreen_poller.sandbox import HolderInfo, LocalSandbox, SandboxState
from drgreen_poller.sandbox.harness import RawAnswer

ENVOY_503 = (
    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)


async def add_fault(box: LocalSandbox, spec: dict[str, Any]) -> dict[str, Any]:
    """Activate a fault through the control API and return its listing."""
    answer = await box.control("POST", "/faults", spec)
    assert answer.status == 201, answer.body
    listing: dict[str, Any] = answer.json()
    return listing


async def summary(box: LocalSandbox, holder: HolderInfo) -> RawAnswer:
    """A signed ``GET /dapp/orders/summary``."""
    return await box.caller(holder).get("/dapp/orders/summary")


class TestFaultKinds:
    async def test_rate_limit_defaults(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A rate_limit fault answers 429 with ``Retry-After: 2`` once, then the API answers."""
        await add_fault(box, {"kind": "rate_limit"})
        limited = await summary(box, holder)
        assert (limited.status, limited.headers["Retry-After"]) == (429, "2")
        assert limited.json() == {
            "statusCode": 429,
            "message": "ThrottlerException: Too Many Requests",
        }
        assert (await summary(box, holder)).status == 200

    async def test_rate_limit_without_retry_after(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """``retry_after: null`` sends no Retry-After header; the text body is Envoy's."""
        await add_fault(box, {"kind": "rate_limit", "retry_after": None, "body": "text"})
        limited = await summary(box, holder)
        assert "Retry-After" not in limited.headers
        assert limited.body == b"local_rate_limited"

    async def test_rate_limit_with_http_date(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """``retry_after_format: http-date`` sends the moment on the sandbox's clock."""
        await add_fault(
            box, {"kind": "rate_limit", "retry_after": 30, "retry_after_format": "http-date"}
        )
        limited = await summary(box, holder)
        expected = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)
        assert limited.headers["Retry-After"] == expected

    async def test_server_error_json_uses_the_error_shape(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A 500 with a JSON body looks like the interceptor's error."""
        await add_fault(box, {"kind": "server_error"})
        failed = await summary(box, holder)
        assert failed.status == 500
        assert failed.json() == {
            "success": False,
            "message": "Internal server error",
            "errorCode": 500,
            "error": "Internal Server Error",
            "url": "/api/v1/dapp/orders/summary",
            "urlMethod": "GET",
        }

    async def test_gateway_html_page(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The html variant is nginx's 502 page."""
        await add_fault(box, {"kind": "server_error", "status": 502, "body": "html"})
        failed = await summary(box, holder)
        assert failed.status == 502
        assert failed.headers["Content-Type"].startswith("text/html")
        assert b"<title>502 Bad Gateway</title>" in failed.body
        assert b"<center>nginx</center>" in failed.body

    async def test_envoy_text_with_retry_after(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """The text variant of a 503 is Envoy's connect error, here with Retry-After."""
        await add_fault(
            box, {"kind": "server_error", "status": 503, "body": "text", "retry_after": 7}
        )
        failed = await summary(box, holder)
        assert (failed.status, failed.body, failed.headers["Retry-After"]) == (503, ENVOY_503, "7")
        assert failed.headers["Server"] == "envoy"

    async def test_gateway_timeout_text(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A 504 text body is Envoy's upstream timeout."""
        await add_fault(box, {"kind": "server_error", "status": 504, "body": "text"})
        assert (await summary(box, holder)).body == b"upstream request timeout"

    async def test_malformed_is_200_without_json(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A malformed answer is HTTP 200 whose body is not JSON."""
        await add_fault(box, {"kind": "malformed"})
        answer = await summary(box, holder)
        assert answer.status == 200
        with pytest.raises(ValueError, match="Expecting value"):
            answer.json()

    async def test_truncated_cuts_the_real_body(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A truncated answer is a prefix of the real body with a matching Content-Length."""
        full = (await summary(box, holder)).body
        await add_fault(box, {"kind": "truncated", "keep_fraction": 0.5})
        cut = await summary(box, holder)
        assert cut.status == 200
        assert cut.body == full[: len(full) // 2]
        assert cut.headers["Content-Length"] == str(len(cut.body))

    async def test_reset_closes_the_connection_without_an_answer(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A reset fault drops the connection unanswered (counted as nginx's 444), then heals."""
        # aiohttp clients resend an idempotent request once on a dropped connection: 2 hits.
        await add_fault(box, {"kind": "reset", "count": 2})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await summary(box, holder)
        assert (await summary(box, holder)).status == 200
        counts = (await box.control("GET", "/requests")).json()
        assert counts["by_status"] == {"444": 2, "200": 1}

    async def test_slow_waits_on_the_clock(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """A slow fault answers only after the sandbox's clock has moved ``delay_s``."""
        await add_fault(box, {"kind": "slow", "delay_s": 30})
        pending = asyncio.ensure_future(summary(box, holder))
        for _ in range(500):
            if clock.sleepers:
                break
            await SystemClock().sleep(0.002)
        assert clock.sleepers == 1
        assert not pending.done()
        clock.advance(30)
        assert (await pending).status == 200

    async def test_slow_with_the_system_clock(self) -> None:
        """With the real clock a short delay really delays the answer."""
        state = SandboxState()
        real_holder = state.create_holder("real")
        state.traffic.add_fault({"kind": "slow", "delay_s": 0.05})
        async with LocalSandbox(state) as box:
            started = SystemClock().monotonic()
            assert (await summary(box, real_holder)).status == 200
            assert SystemClock().monotonic() - started >= 0.05


class TestFaultSelection:
    async def test_count_is_spent_then_the_fault_leaves(
        self, box: LocalSandbox, holder: HolderInfo
    ) -> None:
        """A fault with ``count: 2`` hits two requests; the listing shows what remains."""
        await add_fault(box, {"kind": "server_error", "count": 2})
        assert (await summary(box, holder)).status == 500
        listed = (await box.control("GET", "/faults")).json()["faults"]
        assert (listed[0]["remaining"], listed[0]["fired"]) == (1, 1)
        assert (await summary(box, holder)).status == 500
        assert (await summary(box, holder)).status == 200
        assert (await box.control("GET", "/faults")).json() == {"faults": []}

    async def test_fraction_is_seeded(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """A fraction fault hits the requests its seeded generator picks."""
        await add_fault(box, {"kind": "server_error", "fraction": 0.3, "seed": 7})
        rng = random.Random(7)
        expected = [500 if rng.random() < 0.3 else 200 for _ in range(20)]
        assert [(await summary(box, holder)).status for _ in range(20)] == expected
        assert 0 < expected.count(500) < 20

    async def test_fraction_with_a_cap(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``fraction`` with ``count`` stops after ``count`` hits."""
        await add_fault(box, {"kind": "server_error", "fraction": 1.0, "count": 2})
        assert [(await summary(box, holder)).status for _ in range(4)] == [500, 500, 200, 200]

    async def test_endpoint_filter_and_glob(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``endpoint`` limits a fault to matching templates (globs allowed)."""
        caller = box.caller(holder)
        await add_fault(box, {"kind": "server_error", "count": 5, "endpoint": "GET /dapp/orders"})
        assert (await summary(box, holder)).status == 200
        assert (await caller.get("/dapp/orders")).status == 500
        await box.control("DELETE", "/faults")
        await add_fault(box, {"kind": "server_error", "count": 5, "endpoint": "GET /dapp/orders*"})
        assert (await summary(box, holder)).status == 500

    async def test_holder_filter(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``holder`` limits a fault to one holder's requests."""
        other = box.state.create_holder("h2")
        await add_fault(box, {"kind": "rate_limit", "count": 5, "holder": "h2"})
        assert (await summary(box, holder)).status == 200
        assert (await summary(box, other)).status == 429

    async def test_faults_come_before_the_guard(self, box: LocalSandbox) -> None:
        """The gateway answers unsigned requests and unknown routes too."""
        await add_fault(box, {"kind": "rate_limit", "count": 2})
        assert (await box.raw("GET", "/dapp/orders")).status == 429
        assert (await box.raw("GET", "/nowhere")).status == 429

    async def test_control_api_is_never_faulted(self, box: LocalSandbox) -> None:
        """Control requests bypass the gateway."""
        await add_fault(box, {"kind": "server_error", "fraction": 1.0})
        assert (await box.control("GET", "/settings")).status == 200

    async def test_remove_one_fault(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``DELETE /_sandbox/faults/{id}`` removes that fault only."""
        first = await add_fault(box, {"kind": "server_error", "count": 9})
        await add_fault(box, {"kind": "rate_limit", "count": 9})
        assert (await box.control("DELETE", f"/faults/{first['id']}")).status == 200
        assert (await summary(box, holder)).status == 429
        assert (await box.control("DELETE", "/faults/99")).status == 404

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ({"kind": "earthquake"}, "kind must be one of: rate_limit, server_error, slow"),
            ({"kind": "reset", "delay_s": 1}, "a reset fault: unknown field(s) 'delay_s'"),
            ({"kind": "server_error", "status": 418}, "status must be one of: 500, 502, 503, 504"),
            ({"kind": "slow", "status": 500}, "a slow fault: unknown field(s) 'status'"),
            ({"kind": "slow", "delay_s": -1}, "delay_s must not be negative"),
            ({"kind": "malformed", "fraction": 2}, "fraction must be greater than 0 and at most 1"),
            ({"kind": "malformed", "count": 0}, "count must be at least 1"),
            ({"kind": "malformed", "endpoint": "GET /dapp/order"}, "matches no endpoint"),
            ({"kind": "rate_limit", "retry_after": "soon"}, "retry_after must be an integer"),
        ],
    )
    async def test_bad_specs_are_400(
        self, box: LocalSandbox, spec: dict[str, Any], message: str
    ) -> None:
        """Unknown kinds and bad parameters get a 400 that says what is wrong."""
        answer = await box.control("POST", "/faults", spec)
        assert answer.status == 400
        assert message in answer.json()["error"]


class TestCounters:
    async def test_counts_by_endpoint_holder_and_status(
        self, box: LocalSandbox, holder: HolderInfo, clock: FakeClock
    ) -> None:
        """Every API request is counted by template and holder, faulted and refused ones too."""
        order = box.state.orders.create(holder)
        caller = box.caller(holder)
        await caller.get(f"/dapp/orders/{order.id}", orderId=order.id)
        clock.advance(5)
        await caller.get("/dapp/orders/summary", ("x", "1"))
        await box.raw("GET", "/dapp/orders/summary")
        await box.raw("GET", "/nowhere")
        await add_fault(box, {"kind": "rate_limit"})
        await caller.get("/dapp/orders")
        await box.control("GET", "/settings")
        counts = (await box.control("GET", "/requests")).json()
        assert counts["total"] == 5
        assert counts["by_endpoint"] == {
            "GET /dapp/orders/{orderId}": 1,
            "GET /dapp/orders/summary": 2,
            "unmatched": 1,
            "GET /dapp/orders": 1,
        }
        assert counts["by_holder"] == {"h1": 3, "anonymous": 2}
        assert counts["by_status"] == {"200": 2, "401": 1, "404": 1, "429": 1}
        assert counts["by_holder_endpoint"]["h1"]["GET /dapp/orders"] == 1
        first, second = counts["log"][:2]
        assert (first["t"], second["t"]) == (0.0, 5.0)
        assert first["at"] == "2026-11-23T10:00:00.000Z"
        assert first == {
            **first,
            "holder": "h1",
            "endpoint": "GET /dapp/orders/{orderId}",
            "status": 200,
        }

    async def test_holder_filter_and_reset(self, box: LocalSandbox, holder: HolderInfo) -> None:
        """``?holder=`` narrows the counts; DELETE resets them."""
        await summary(box, holder)
        await box.raw("GET", "/dapp/orders/summary")
        mine = (await box.control("GET", "/requests?holder=h1")).json()
        assert (mine["total"], mine["by_endpoint"], len(mine["log"])) == (
            1, {"GET /dapp/orders/summary": 1}, 1,
        )  # fmt: skip
        assert (await box.control("DELETE", "/requests")).json()["total"] == 0
        assert box.state.traffic.request_counts()["log"] == []
