"""Tests of our deliveries' signatures: Standard Webhooks and the hex scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from drgreen_poller.errors import SigningError
from drgreen_poller.webhook_signing import (
    generate_webhook_secret,
    sign_hex,
    sign_webhook,
    verify_webhook,
    webhook_key,
)


class TestWebhookSignatures:
    SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    OTHER = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
    BODY = '{"id":"evt_1","type":"order.approved","name":"Zoë"}'.encode()

    def test_fixed_vector(self) -> None:
        """The signature over "{id}.{timestamp}.{body}" matches an independently computed HMAC."""
        key = base64.b64decode(self.SECRET.removeprefix("whsec_"))
        expected = hmac.new(key, b"evt_1.1700000000." + self.BODY, hashlib.sha256).digest()
        header = sign_webhook([self.SECRET], "evt_1", 1700000000, self.BODY)
        assert header == "v1," + base64.b64encode(expected).decode()

    @pytest.mark.parametrize("size", [0, 2046, 2047, 2048, 4094, 4095, 10_000])
    def test_bodies_of_every_length(self, size: int) -> None:
        """Bodies around and beyond the piece the HMAC is fed in sign like a one-shot HMAC."""
        body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        key = base64.b64decode(self.SECRET.removeprefix("whsec_"))
        expected = hmac.new(key, b"evt_1.1700000000." + body, hashlib.sha256).digest()
        header = sign_webhook([self.SECRET], "evt_1", 1700000000, body)
        assert header == "v1," + base64.b64encode(expected).decode()
        hex_expected = hmac.new(self.SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert sign_hex(self.SECRET, body) == f"sha256={hex_expected}"

    def test_one_entry_per_secret(self) -> None:
        """During a rotation each secret adds one v1 entry, separated by single spaces."""
        header = sign_webhook([self.SECRET, self.OTHER], "evt_1", 1700000000, self.BODY)
        first, second = header.split(" ")
        assert first.startswith("v1,")
        assert second.startswith("v1,")
        assert "  " not in header

    def test_standardwebhooks_library_verifies(self) -> None:
        """The standardwebhooks reference library accepts our headers, with either secret."""
        from standardwebhooks.webhooks import Webhook

        now = int(time.time())  # noqa: TID251 - the library checks against the real clock
        header = sign_webhook([self.SECRET, self.OTHER], "evt_1", now, self.BODY)
        headers = {
            "webhook-id": "evt_1",
            "webhook-timestamp": str(now),
            "webhook-signature": header,
        }
        for secret in (self.SECRET, self.OTHER):
            assert Webhook(secret).verify(self.BODY, headers)["type"] == "order.approved"

    def test_verify_accepts_and_rejects(self) -> None:
        """Our verifier accepts a fresh request under any known secret, rejects tampering."""
        header = sign_webhook([self.SECRET], "evt_1", 1000, self.BODY)

        def check(
            secrets: list[str],
            now: float,
            msg_id: str = "evt_1",
            stamp: str = "1000",
            body: bytes = self.BODY,
        ) -> bool:
            return verify_webhook(
                secrets,
                msg_id=msg_id,
                timestamp=stamp,
                signature_header=header,
                body=body,
                now_s=now,
            )

        assert check([self.OTHER, self.SECRET], 1100)
        assert not check([self.OTHER], 1100)
        assert not check([self.SECRET], 1000 + 301)
        assert not check([self.SECRET], 1100, body=self.BODY + b" ")
        assert not check([self.SECRET], 1100, msg_id="evt_2")
        assert not check([self.SECRET], 1100, stamp="1001")

    def test_hex_scheme(self) -> None:
        """The simple scheme is sha256=<hex HMAC of the raw body> keyed by the secret text."""
        expected = hmac.new(self.SECRET.encode(), self.BODY, hashlib.sha256).hexdigest()
        assert sign_hex(self.SECRET, self.BODY) == f"sha256={expected}"

    def test_secrets(self) -> None:
        """New secrets are whsec_ + Base64 of 32 bytes; malformed ones are refused."""
        secret = generate_webhook_secret()
        assert len(webhook_key(secret)) == 32
        with pytest.raises(SigningError):
            webhook_key("nope")
        with pytest.raises(SigningError):
            webhook_key("whsec_***")
        with pytest.raises(SigningError):
            generate_webhook_secret(8)
