"""Tests of Dr Green's request authentication: key pairs, loading them, ECDSA signatures."""

from __future__ import annotations

import base64

import pytest

from drgreen_poller.errors import SigningError
from drgreen_poller.request_signing import (
    ApiCredentials,
    api_key_for,
    load_private_key,
    load_public_key,
    sign_api_request,
    verify_api_signature,
)


class TestKeys:
    def test_generated_pair_has_dr_green_shape(self, credentials: ApiCredentials) -> None:
        """Keys are Base64 PEM: SPKI public (232 chars), PKCS#8 private (~316 chars)."""
        assert credentials.api_key.startswith("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K")
        assert len(credentials.api_key) == 232
        assert 300 <= len(credentials.secret_key) <= 330

    def test_api_key_for_matches(self, credentials: ApiCredentials) -> None:
        """The public key derived from a secret key equals the issued API key."""
        assert api_key_for(credentials.secret_key) == credentials.api_key

    def test_repr_hides_the_secret(self, credentials: ApiCredentials) -> None:
        """Printing credentials never shows the secret key."""
        assert credentials.secret_key not in repr(credentials)
        assert "hidden" in repr(credentials)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("not base64!!", "not Base64"),
            (base64.b64encode(b"hello").decode(), "not a PEM private key"),
        ],
    )
    def test_bad_secret_key_is_explained(self, text: str, message: str) -> None:
        """A secret key that cannot be loaded gets a specific message."""
        with pytest.raises(SigningError, match=message):
            load_private_key(text)

    def test_wrong_curve_is_refused(self) -> None:
        """A P-256 key is refused: Dr Green uses secp256k1."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(SigningError, match="secp256k1"):
            load_private_key(base64.b64encode(pem).decode())

    def test_public_key_errors(self) -> None:
        """An API key that is not a PEM public key gets a specific message."""
        with pytest.raises(SigningError, match="not a PEM public key"):
            load_public_key(base64.b64encode(b"nope").decode())

    def test_wrong_curve_public_key_is_refused(self) -> None:
        """A P-256 API key is refused: Dr Green uses secp256k1."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        with pytest.raises(SigningError, match="secp256k1"):
            load_public_key(base64.b64encode(pem).decode())


class TestSignatures:
    def test_roundtrip_and_tamper(self, credentials: ApiCredentials) -> None:
        """A signature verifies over its payload and fails over any other."""
        private = load_private_key(credentials.secret_key)
        public = load_public_key(credentials.api_key)
        signature = sign_api_request(private, "orderBy=desc&take=50&page=1")
        assert verify_api_signature(public, "orderBy=desc&take=50&page=1", signature)
        assert not verify_api_signature(public, "orderBy=desc&take=50&page=2", signature)
        assert not verify_api_signature(public, "orderBy=desc&take=50&page=1", "garbage")

    def test_signatures_are_randomised(self, credentials: ApiCredentials) -> None:
        """Two signatures of one payload differ (random k), so tests verify, never compare."""
        private = load_private_key(credentials.secret_key)
        assert sign_api_request(private, "{}") != sign_api_request(private, "{}")

    def test_der_encoding(self, credentials: ApiCredentials) -> None:
        """The signature is DER (an ASN.1 SEQUENCE), then standard Base64."""
        der = base64.b64decode(sign_api_request(load_private_key(credentials.secret_key), "{}"))
        assert der[0] == 0x30
