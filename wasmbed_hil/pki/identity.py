"""Device identities, certificate/key loading and signature verification."""

from __future__ import annotations

import hashlib
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import PkiError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
"""Key types a device or gateway may hold: ECDSA P-256 or Ed25519."""

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = b"-----BEGIN"
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, _BYTES_LIKE):
        raise PkiError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def spki_der(cert: x509.Certificate) -> bytes:
    """Return the DER SubjectPublicKeyInfo of ``cert``."""
    if not isinstance(cert, x509.Certificate):
        raise PkiError(f"expected an x509.Certificate, not {type(cert).__name__}")
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"certificate has an unsupported public key: {exc}") from exc
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_spki_der(key: PrivateKey) -> bytes:
    """Return the DER SubjectPublicKeyInfo of the public half of ``key``."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def device_identity(cert_or_spki: x509.Certificate | bytes) -> str:
    """Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.

    ``cert_or_spki`` is a certificate or SPKI DER bytes; the bytes are hashed as given
    but must parse as a public key.
    """
    if isinstance(cert_or_spki, x509.Certificate):
        der = spki_der(cert_or_spki)
    else:
        der = _as_bytes(cert_or_spki, "SubjectPublicKeyInfo")
        try:
            serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise PkiError(f"not a DER SubjectPublicKeyInfo: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def device_certificate_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is no device certificate, or None when it is one.

    TLS verification only says the fleet CA signed it; a device certificate must also be an
    end entity (BasicConstraints absent or CA:FALSE) for TLS client authentication (an
    ExtendedKeyUsage that names clientAuth), as ``FleetCA.issue_device`` issues them.
    OpenSSL lets both through: it checks the usages only when the extension is there, and
    never asks whether a leaf is a CA.
    """
    if not isinstance(cert, x509.Certificate):
        raise PkiError(f"expected an x509.Certificate, not {type(cert).__name__}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            return "certificate is a CA certificate (BasicConstraints CA:TRUE), not a device's"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate has no extended key usage: a device's must name clientAuth"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages) or "none"
        return f"certificate's extended key usage ({names}) lacks clientAuth"
    return None


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a PEM or DER certificate; PkiError if ``data`` is neither."""
    raw = _as_bytes(data, "certificate data")
    try:
        if _PEM_CERT in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise PkiError(f"not a PEM or DER X.509 certificate: {exc}") from exc


def check_private_key(key: object) -> PrivateKey:
    """Return ``key`` if it is an ECDSA P-256 or Ed25519 private key, else raise PkiError."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key
        raise PkiError(f"unsupported EC curve {key.curve.name}; only P-256 (secp256r1) is allowed")
    raise PkiError(f"unsupported private key type {type(key).__name__}; use P-256 or Ed25519")


def load_private_key(data: bytes) -> PrivateKey:
    """Parse an unencrypted PEM or DER (PKCS#8 or traditional) P-256 or Ed25519 private key."""
    raw = _as_bytes(data, "private key data")
    try:
        if _PEM_KEY in raw:
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"not an unencrypted PEM or DER private key: {exc}") from exc
    return check_private_key(key)


def verify_signature(spki: bytes, signature: bytes, data: bytes) -> bool:
    """Check a ``Credentials.sign`` signature of ``data`` against the key in ``spki``.

    P-256 keys use ECDSA/SHA-256 (DER signature), Ed25519 keys plain Ed25519. Returns
    False, never raises, for a bad signature, unparsable SPKI or an unsupported key type.
    """
    if not all(isinstance(v, _BYTES_LIKE) for v in (spki, signature, data)):
        return False
    try:
        public_key = serialization.load_der_public_key(bytes(spki))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return _verify(public_key, bytes(signature), bytes(data))


def verify_certificate_signature(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """``verify_signature`` against the public key of ``cert``, without serialising it to an
    SPKI and parsing that again: the gateway checks an enrollment proof with the key of the
    certificate its TLS handshake just verified (``cryptography`` keeps that key once built).
    The same keys are accepted and the same answers given; False, never raises."""
    if not isinstance(cert, x509.Certificate) or not all(
        isinstance(v, _BYTES_LIKE) for v in (signature, data)
    ):
        return False
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return _verify(public_key, bytes(signature), bytes(data))


def _verify(public_key: object, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
            public_key.curve, ec.SECP256R1
        ):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
