"""A holder's private key, certificate and CA certificate, with file round trip."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ._files import make_dir, read_file, write_file
from .errors import PkiError
from .identity import (
    PrivateKey,
    check_private_key,
    load_certificate,
    load_private_key,
    public_spki_der,
)
from .identity import spki_der as _spki_der

KEY_PEM = "key.pem"
CERT_PEM = "cert.pem"
CA_PEM = "ca.pem"

_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class Credentials:
    """Private key, leaf certificate and issuing CA certificate of a device or gateway.

    Equality compares name, certificates and key material.
    """

    name: str
    key: PrivateKey
    cert: x509.Certificate
    ca_cert: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise PkiError(f"name must be a str, not {type(self.name).__name__}")
        check_private_key(self.key)
        for field, value in (("cert", self.cert), ("ca_cert", self.ca_cert)):
            if not isinstance(value, x509.Certificate):
                raise PkiError(f"{field} must be an x509.Certificate, not {type(value).__name__}")

    def __repr__(self) -> str:
        return f"Credentials(name={self.name!r}, identity={self.identity}, serial={self.serial:#x})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (
            self.name == other.name
            and self.cert == other.cert
            and self.ca_cert == other.ca_cert
            and self.key_der == other.key_der
        )

    def __hash__(self) -> int:
        return hash((self.name, self.cert))

    @cached_property
    def spki_der(self) -> bytes:
        """DER SubjectPublicKeyInfo of the certificate."""
        return _spki_der(self.cert)

    @cached_property
    def identity(self) -> str:
        """Device identity: lowercase hex SHA-256 of the certificate's SPKI DER."""
        return hashlib.sha256(self.spki_der).hexdigest()

    @property
    def serial(self) -> int:
        """Serial number of the certificate."""
        return self.cert.serial_number

    @property
    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM of the private key."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def key_der(self) -> bytes:
        """Unencrypted PKCS#8 DER of the private key."""
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> bytes:
        """PEM of the certificate."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        """DER of the certificate."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def ca_pem(self) -> bytes:
        """PEM of the CA certificate."""
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def ca_der(self) -> bytes:
        """DER of the CA certificate."""
        return self.ca_cert.public_bytes(serialization.Encoding.DER)

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``: ECDSA P-256/SHA-256 (DER signature) or Ed25519, by key type."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def write(self, directory: Path) -> None:
        """Write key.pem (0600), cert.pem, ca.pem and their .der twins into ``directory``.

        The directory is created if needed; each file is replaced atomically.
        """
        directory = make_dir(Path(directory))
        write_file(directory / KEY_PEM, self.key_pem, 0o600)
        write_file(directory / "key.der", self.key_der, 0o600)
        write_file(directory / CERT_PEM, self.cert_pem)
        write_file(directory / "cert.der", self.cert_der)
        write_file(directory / CA_PEM, self.ca_pem)
        write_file(directory / "ca.der", self.ca_der)

    @classmethod
    def read(cls, directory: Path, name: str | None = None) -> Credentials:
        """Read credentials written by ``write``.

        ``name`` defaults to the certificate's common name, else the directory name.
        PkiError if the directory or a file is missing, unparsable, or the key does not
        match the certificate.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise PkiError(f"credentials directory {directory} does not exist")
        key = _parse(directory / KEY_PEM, load_private_key)
        cert = _parse(directory / CERT_PEM, load_certificate)
        ca_cert = _parse(directory / CA_PEM, load_certificate)
        if public_spki_der(key) != _spki_der(cert):
            raise PkiError(f"{directory / KEY_PEM} does not match {directory / CERT_PEM}")
        if name is None:
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            name = str(cns[0].value) if cns else directory.name
        return cls(name=name, key=key, cert=cert, ca_cert=ca_cert)


def _parse(path: Path, parser: Callable[[bytes], _T]) -> _T:
    data = read_file(path)
    try:
        return parser(data)
    except PkiError as exc:
        raise PkiError(f"{path}: {exc}") from exc
