"""Dr Green's request authentication: secp256k1 key pairs and ECDSA-SHA256 signatures (§1.3).

Owns a holder's credentials (``apiKey``/``secretKey`` as Base64 PEM), loading and checking them,
generating pairs for the sandbox and tests, and signing or verifying a canonical string as
Node's ``crypto.createVerify`` does. It must not build canonical strings (``canonical`` does)
or read a clock; keys come from the OS random source.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drgreen_poller.errors import SigningError


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """A holder's Dr Green key pair, as issued: Base64 text of PEM public and private keys."""

    api_key: str
    secret_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={self.api_key[:44]}…, secret_key=<hidden>)"


def _b64_pem(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"{what} is not Base64 text") from exc


def load_private_key(secret_key: str) -> ec.EllipticCurvePrivateKey:
    """Load a holder's ``secretKey`` (Base64 of a PKCS#8 PEM) and check it is secp256k1.

    Raises:
        SigningError: the text is not Base64, not a PEM private key, or not on secp256k1.
    """
    pem = _b64_pem(secret_key, "secret key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError("secret key is not a PEM private key (Base64 of PKCS#8)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256K1):
        raise SigningError("secret key is not an ECDSA secp256k1 key")
    return key


def load_public_key(api_key: str) -> ec.EllipticCurvePublicKey:
    """Load a holder's ``apiKey`` (Base64 of an SPKI PEM) and check it is secp256k1.

    Raises:
        SigningError: the text is not Base64, not a PEM public key, or not on secp256k1.
    """
    pem = _b64_pem(api_key, "API key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError("API key is not a PEM public key (Base64 of SPKI)") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
        raise SigningError("API key is not an ECDSA secp256k1 key")
    return key


def _api_key_of(public_key: ec.EllipticCurvePublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(pem).decode("ascii")


def api_key_for(secret_key: str) -> str:
    """The ``apiKey`` that belongs to ``secret_key`` (to check a configured pair matches)."""
    return _api_key_of(load_private_key(secret_key).public_key())


def generate_credentials() -> ApiCredentials:
    """A fresh key pair in Dr Green's format (for the sandbox and tests)."""
    private = ec.generate_private_key(ec.SECP256K1())
    secret_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ApiCredentials(
        api_key=_api_key_of(private.public_key()),
        secret_key=base64.b64encode(secret_pem).decode("ascii"),
    )


def sign_api_request(private_key: ec.EllipticCurvePrivateKey, payload: str) -> str:
    """The ``x-auth-signature`` header for ``payload``: Base64 of a DER ECDSA-SHA256 signature."""
    der = private_key.sign(payload.encode("utf-8", "surrogatepass"), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode("ascii")


def verify_api_signature(
    public_key: ec.EllipticCurvePublicKey, payload: str, signature: str
) -> bool:
    """Whether ``signature`` verifies over ``payload``, as the guard's ``createVerify`` does."""
    try:
        der = base64.b64decode(signature, validate=False)
        public_key.verify(der, payload.encode("utf-8", "surrogatepass"), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
