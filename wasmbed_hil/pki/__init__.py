"""Fleet PKI: a CA issuing gateway and device certificates, identities, revocation, TLS contexts.

A device identity is the lowercase hex SHA-256 of its certificate's SubjectPublicKeyInfo DER.
"""

from __future__ import annotations

from ._files import write_file
from .ca import FleetCA, VerifiedCrl, read_crl
from .credentials import Credentials
from .errors import PkiError
from .identity import (
    PrivateKey,
    device_certificate_problem,
    device_identity,
    load_certificate,
    load_private_key,
    spki_der,
    verify_certificate_signature,
    verify_signature,
)
from .tls import client_ssl_context, server_ssl_context

__all__ = [
    "Credentials",
    "FleetCA",
    "PkiError",
    "PrivateKey",
    "VerifiedCrl",
    "client_ssl_context",
    "device_certificate_problem",
    "device_identity",
    "load_certificate",
    "load_private_key",
    "read_crl",
    "server_ssl_context",
    "spki_der",
    "verify_certificate_signature",
    "verify_signature",
    "write_file",
]
