"""Tests of reading Dr Green responses: success envelopes, error shapes, classification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from drgreen_poller.errors import (
    UpstreamClientBug,
    UpstreamError,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTransient,
    UpstreamUnauthorized,
)
from drgreen_poller.responses import interpret_response, parse_retry_after

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def _read(status: int, body: Any, retry_after: str | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return interpret_response(
        status, raw, retry_after=retry_after, now=NOW, endpoint="GET /dapp/orders"
    )


class TestSuccess:
    @pytest.mark.parametrize("flag", [True, "true"])
    def test_success_flag_bool_or_string(self, flag: Any) -> None:
        """``success`` may be true or the string "true"; ``data`` is returned."""
        assert _read(200, {"success": flag, "statusCode": 200, "data": {"x": 1}}) == {"x": 1}

    def test_data_may_be_null(self) -> None:
        """A null ``data`` is a valid answer, returned as None."""
        assert _read(201, {"success": True, "statusCode": 201, "data": None}) is None

    @pytest.mark.parametrize(
        "body",
        [
            b'{"success":true,"statusCode":200,"data":{"orders":[{"id":',
            b"<html>ok</html>",
            b"\xff\xfe",
            [1, 2],
            {"statusCode": 200, "data": {}},
            {"success": True, "statusCode": 200},
        ],
    )
    def test_malformed_success_is_transient(self, body: Any) -> None:
        """A 2xx that is not the envelope (truncated, HTML, wrong shape) is malformed."""
        with pytest.raises(UpstreamMalformed) as info:
            _read(200, body)
        assert isinstance(info.value, UpstreamTransient)


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "kind", "message"),
        [
            (
                401,
                {"message": "User is not authorized", "error": "Unauthorized", "statusCode": 401},
                UpstreamUnauthorized,
                "User is not authorized",
            ),
            (403, {"message": "Forbidden", "statusCode": 403}, UpstreamUnauthorized, "Forbidden"),
            (
                400,
                {
                    "success": False,
                    "message": "orderId must be a UUID",
                    "errorCode": 400,
                    "error": "Bad Request",
                    "url": "/api/v1/dapp/orders/abc",
                    "urlMethod": "GET",
                },
                UpstreamClientBug,
                "orderId must be a UUID",
            ),
            (
                400,
                {
                    "success": False,
                    "statusCode": 400,
                    "message": "Validation failed",
                    "data": ["email must be a valid email"],
                },
                UpstreamClientBug,
                "Validation failed: email must be a valid email",
            ),
            (
                400,
                {"message": ["take must not be less than 1", "page must be an integer"]},
                UpstreamClientBug,
                "take must not be less than 1, page must be an integer",
            ),
            (
                500,
                {"success": False, "message": "Client not found", "errorCode": 500},
                UpstreamNotFound,
                "Client not found",
            ),
            (
                500,
                {"success": False, "message": "strain not found", "errorCode": 500},
                UpstreamNotFound,
                "strain not found",
            ),
            (
                404,
                {"message": "Cannot GET /api/v1/dapp/nope", "error": "Not Found"},
                UpstreamNotFound,
                "Cannot GET",
            ),
            (
                409,
                {"success": False, "message": "Client is not KYC verified"},
                UpstreamClientBug,
                "KYC",
            ),
            (500, {"success": False, "message": "Prisma exploded"}, UpstreamTransient, "Prisma"),
            (502, HTML_502, UpstreamTransient, "non-JSON error body"),
            (503, b"upstream connect error or disconnect/reset", UpstreamTransient, "non-JSON"),
            (504, b"", UpstreamTransient, "non-JSON error body (0 bytes)"),
            (408, b"", UpstreamTransient, "non-JSON"),
        ],
    )
    def test_classification(
        self, status: int, body: Any, kind: type[UpstreamError], message: str
    ) -> None:
        """Every error shape is read and classified; the server's message is kept."""
        with pytest.raises(kind) as info:
            _read(status, body)
        assert message in info.value.message
        assert info.value.status == status

    def test_success_false_on_200(self) -> None:
        """A 200 whose body says ``success: false`` is an error with the body's status."""
        body = {"success": False, "statusCode": 409, "message": "conflict", "data": None}
        with pytest.raises(UpstreamClientBug) as info:
            _read(200, body)
        assert info.value.status == 409

    def test_error_body_never_copied_whole(self) -> None:
        """A non-JSON error body is described by size, never echoed (it may hold customer data)."""
        with pytest.raises(UpstreamTransient) as info:
            _read(502, HTML_502)
        assert "nginx" not in str(info.value)

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("7", 7.0), (None, None), ("Mon, 23 Nov 2026 10:00:30 GMT", 30.0), ("soon", None)],
    )
    def test_429_carries_retry_after(self, header: str | None, expected: float | None) -> None:
        """429 is rate-limited and transient, with Retry-After seconds or date parsed."""
        with pytest.raises(UpstreamRateLimited) as info:
            _read(429, {"message": "Too Many Requests"}, retry_after=header)
        assert info.value.retry_after_s == expected

    def test_503_carries_retry_after(self) -> None:
        """A 503 with Retry-After carries the hint too."""
        with pytest.raises(UpstreamTransient) as info:
            _read(503, b"busy", retry_after="120")
        assert info.value.retry_after_s == 120.0


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0", 0.0),
            (" 15 ", 15.0),
            ("Mon, 23 Nov 2026 10:01:00 GMT", 60.0),
            ("Mon, 23 Nov 2026 09:00:00 GMT", 0.0),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("Mon, 23 Nov 2026 10:01:00", None),
        ],
    )
    def test_parse(self, value: str, expected: float | None) -> None:
        """Delta-seconds and HTTP-dates are understood; a past date means now; junk is ignored."""
        assert parse_retry_after(value, NOW) == expected
