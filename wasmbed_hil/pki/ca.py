"""The fleet certificate authority: issues gateway and device certificates, keeps revocations."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._files import make_dir, read_file, write_file
from .credentials import Credentials
from .errors import PkiError
from .identity import PrivateKey, check_private_key, load_certificate
from .identity import spki_der as _spki_der

CA_CERT_PEM = "ca.pem"
CA_KEY_PEM = "ca-key.pem"
REVOKED_JSON = "revoked.json"

LEAF_VALIDITY = timedelta(days=825)
BACKDATE = timedelta(minutes=5)
CRL_VALIDITY = timedelta(days=7)
_MAX_SERIAL = 1 << 159  # RFC 5280: at most 20 octets, positive

CaKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _subject(name: str) -> x509.Name:
    if not isinstance(name, str) or not name:
        raise PkiError(f"name must be a non-empty str, got {name!r}")
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    except ValueError as exc:
        raise PkiError(f"invalid common name {name!r}: {exc}") from exc


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise PkiError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _validity(
    not_before: datetime | None, not_after: datetime | None, length: timedelta
) -> tuple[datetime, datetime]:
    """Resolve a validity window; omitted ends default around now, keeping before <= after."""
    now = datetime.now(UTC)
    nb = None if not_before is None else _utc(not_before, "not_before")
    na = None if not_after is None else _utc(not_after, "not_after")
    if nb is None:
        nb = (now if na is None else min(now, na)) - BACKDATE
    if na is None:
        na = max(now, nb) + length
    if na < nb:
        raise PkiError(f"not_after {na.isoformat()} is before not_before {nb.isoformat()}")
    return nb, na


def _hash_for(key: CaKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _serial_of(item: x509.Certificate | Credentials | int) -> int:
    if isinstance(item, Credentials):
        return item.cert.serial_number
    if isinstance(item, x509.Certificate):
        return item.serial_number
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    raise PkiError(f"expected a certificate, Credentials or serial, not {type(item).__name__}")


class FleetCA:
    """A self-signed fleet CA that issues gateway (serverAuth) and device (clientAuth) certs.

    Safe to share between threads.
    """

    def __init__(
        self,
        key: CaKey,
        cert: x509.Certificate,
        revoked: Mapping[int, datetime] | Iterable[int] = (),
    ) -> None:
        """Wrap an existing CA key and certificate; ``revoked`` maps serials to revocation times."""
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise PkiError(f"unsupported CA key type {type(key).__name__}; use EC or Ed25519")
        if not isinstance(cert, x509.Certificate):
            raise PkiError(f"cert must be an x509.Certificate, not {type(cert).__name__}")
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != _spki_der(cert):
            raise PkiError("CA key does not match the CA certificate")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PkiError("CA certificate lacks BasicConstraints(ca=True)")
        self._key = key
        self._cert = cert
        self._hash = _hash_for(key)
        self._lock = threading.Lock()
        self._crl_number = 0
        self._revoked: dict[int, datetime] = {}
        if isinstance(revoked, Mapping):
            items = [(_serial_of(s), _utc(t, "revocation time")) for s, t in revoked.items()]
        else:
            when = datetime.now(UTC)
            items = [(_serial_of(s), when) for s in revoked]
        self._revoked.update(items)

        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
        leaf = (
            x509.CertificateBuilder()
            .issuer_name(cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(self._aki, critical=False)
        )
        self._device_base = leaf.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        self._gateway_base = leaf.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )

    def __repr__(self) -> str:
        return f"FleetCA(subject={self._cert.subject.rfc4514_string()!r})"

    # -- construction and persistence -------------------------------------------------------

    @classmethod
    def create(cls, name: str = "wasmbed fleet CA", *, valid_days: int = 3650) -> FleetCA:
        """Create a new self-signed ECDSA P-256 CA valid from now-5min for ``valid_days``."""
        if not isinstance(valid_days, int) or valid_days <= 0:
            raise PkiError(f"valid_days must be a positive int, got {valid_days!r}")
        subject = _subject(name)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path) -> FleetCA:
        """Load a CA saved by ``save``; a missing revoked.json means no revocations."""
        directory = Path(directory)
        if not directory.is_dir():
            raise PkiError(f"CA directory {directory} does not exist")
        cert_path, key_path = directory / CA_CERT_PEM, directory / CA_KEY_PEM
        try:
            cert = load_certificate(read_file(cert_path))
        except PkiError as exc:
            raise PkiError(f"{cert_path}: {exc}") from exc
        key = _load_ca_key(read_file(key_path), key_path)
        revoked: dict[int, datetime] = {}
        revoked_path = directory / REVOKED_JSON
        if revoked_path.exists():
            revoked = _parse_revoked(read_file(revoked_path), revoked_path)
        return cls(key, cert, revoked)

    def save(self, directory: Path) -> None:
        """Write ca.pem, ca-key.pem (0600) and revoked.json into ``directory`` (created)."""
        directory = make_dir(Path(directory))
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._lock:
            revoked = sorted(self._revoked.items())
        document = {
            "revoked": [{"serial": s, "revoked_at": t.isoformat()} for s, t in revoked],
        }
        write_file(directory / CA_KEY_PEM, key_pem, 0o600)
        write_file(directory / CA_CERT_PEM, self.cert_pem)
        write_file(directory / REVOKED_JSON, (json.dumps(document, indent=1) + "\n").encode())

    # -- certificate -------------------------------------------------------------------------

    @property
    def cert(self) -> x509.Certificate:
        """The CA certificate."""
        return self._cert

    @property
    def key(self) -> CaKey:
        """The CA private key (for tests that need to craft unusual certificates)."""
        return self._key

    @property
    def cert_pem(self) -> bytes:
        """PEM of the CA certificate."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        """DER of the CA certificate."""
        return self._cert.public_bytes(serialization.Encoding.DER)

    # -- issuance ----------------------------------------------------------------------------

    def _issue(
        self,
        base: x509.CertificateBuilder,
        name: str,
        key: PrivateKey,
        not_before: datetime,
        not_after: datetime,
        extra: Iterable[x509.ExtensionType] = (),
    ) -> Credentials:
        public = key.public_key()
        builder = (
            base.subject_name(_subject(name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        try:
            cert = builder.sign(self._key, self._hash)
        except ValueError as exc:
            raise PkiError(f"cannot issue certificate for {name!r}: {exc}") from exc
        return Credentials(name=name, key=key, cert=cert, ca_cert=self._cert)

    def issue_gateway(
        self,
        name: str,
        hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
        *,
        valid_days: int = 825,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Credentials:
        """Issue a P-256 serverAuth certificate, CN=name, SAN = DNS names and IP literals.

        Validity: now-5min for ``valid_days``, unless ``not_before``/``not_after`` say
        otherwise (as for issue_device; tests use them for expired or future certificates).
        """
        if isinstance(hosts, str | bytes):
            raise PkiError("hosts must be a sequence of host names, not a single string")
        if not isinstance(valid_days, int) or valid_days <= 0:
            raise PkiError(f"valid_days must be a positive int, got {valid_days!r}")
        names: list[x509.GeneralName] = []
        for host in hosts:
            if not isinstance(host, str) or not host:
                raise PkiError(f"host must be a non-empty str, got {host!r}")
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                try:
                    names.append(x509.DNSName(host))
                except ValueError as exc:
                    raise PkiError(f"invalid host name {host!r}: {exc}") from exc
        if not names:
            raise PkiError("a gateway certificate needs at least one host")
        names = list(dict.fromkeys(names))
        not_before, not_after = _validity(not_before, not_after, timedelta(days=valid_days))
        key = ec.generate_private_key(ec.SECP256R1())
        return self._issue(
            self._gateway_base,
            name,
            key,
            not_before,
            not_after,
            [x509.SubjectAlternativeName(names)],
        )

    def issue_device(
        self,
        name: str,
        *,
        key_type: Literal["p256", "ed25519"] = "p256",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key: PrivateKey | None = None,
    ) -> Credentials:
        """Issue a clientAuth device certificate with CN=name.

        Validity defaults to now-5min .. now+825 days; naive datetimes are UTC and are
        stored to the second. When only one bound is given the other is placed so the
        window stays ordered (e.g. a past ``not_after`` alone gives an expired cert).
        ``key`` reuses an existing P-256 or Ed25519 key and then decides the key type.
        """
        if key is None:
            if key_type == "p256":
                key = ec.generate_private_key(ec.SECP256R1())
            elif key_type == "ed25519":
                key = ed25519.Ed25519PrivateKey.generate()
            else:
                raise PkiError(f"key_type must be 'p256' or 'ed25519', got {key_type!r}")
        else:
            check_private_key(key)
        nb, na = _validity(not_before, not_after, LEAF_VALIDITY)
        return self._issue(self._device_base, name, key, nb, na)

    # -- revocation --------------------------------------------------------------------------

    def _issued_here(self, cert: x509.Certificate) -> bool:
        return cert.issuer == self._cert.subject

    def revoke(self, cert: x509.Certificate | Credentials | int) -> None:
        """Revoke a certificate issued by this CA (or a serial); revoking twice is a no-op."""
        if isinstance(cert, Credentials):
            cert = cert.cert
        if isinstance(cert, x509.Certificate):
            try:
                cert.verify_directly_issued_by(self._cert)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
                raise PkiError(
                    f"certificate {cert.serial_number:#x} was not issued by this CA"
                ) from exc
        serial = _serial_of(cert)
        if not 0 < serial < _MAX_SERIAL:
            raise PkiError(f"serial {serial} is out of range")
        with self._lock:
            self._revoked.setdefault(serial, datetime.now(UTC))

    def is_revoked(self, cert: x509.Certificate | Credentials | int) -> bool:
        """True if the certificate (issued by this CA) or serial has been revoked."""
        if isinstance(cert, Credentials):
            cert = cert.cert
        if isinstance(cert, x509.Certificate) and not self._issued_here(cert):
            return False
        return _serial_of(cert) in self._revoked

    @property
    def revoked_serials(self) -> frozenset[int]:
        """Serials revoked so far."""
        with self._lock:
            return frozenset(self._revoked)

    def crl(self) -> x509.CertificateRevocationList:
        """A CRL signed by this CA listing every revoked serial, valid for 7 days."""
        now = datetime.now(UTC)
        with self._lock:
            revoked = sorted(self._revoked.items())
            self._crl_number = max(self._crl_number + 1, int(now.timestamp()))
            number = self._crl_number
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now)
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self._aki, critical=False)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self._key, self._hash)

    def crl_pem(self) -> bytes:
        """PEM of a fresh ``crl()``."""
        return self.crl().public_bytes(serialization.Encoding.PEM)

    def verify_crl(self, crl: x509.CertificateRevocationList) -> bool:
        """True if ``crl`` names this CA as issuer and carries a valid signature by it."""
        if not isinstance(crl, x509.CertificateRevocationList):
            return False
        if crl.issuer != self._cert.subject:
            return False
        try:
            return crl.is_signature_valid(self._key.public_key())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False


@dataclass(frozen=True)
class VerifiedCrl:
    """A CRL whose signature by the fleet CA was checked: what a gateway keeps of it.

    ``number`` is its CRLNumber extension (RFC 5280 5.2.3: it only ever increases for one
    issuer), None when absent; ``this_update``/``next_update`` its validity, in UTC."""

    serials: frozenset[int]
    number: int | None
    this_update: datetime
    next_update: datetime | None

    def stale(self, now: datetime | None = None) -> bool:
        """Past its nextUpdate: a newer CRL should exist."""
        return self.next_update is not None and (now or datetime.now(UTC)) > self.next_update

    def older_than(self, loaded: VerifiedCrl) -> str | None:
        """Why this CRL must not replace ``loaded`` (a replay of an older CRL would reinstate
        what was revoked since), or None when it may. Same number and same serials: a reload
        of the same CRL, allowed."""
        if self.number is not None and loaded.number is not None:
            if self.number < loaded.number:
                return f"CRL number {self.number} is older than the loaded CRL's {loaded.number}"
            if self.number == loaded.number and self.serials != loaded.serials:
                return f"CRL number {self.number} is loaded already with other serials"
            return None
        if self.this_update < loaded.this_update:
            return (f"CRL issued {self.this_update.isoformat()} is older than the loaded CRL "
                    f"issued {loaded.this_update.isoformat()}")
        return None


def read_crl(crl_data: bytes, ca_cert: x509.Certificate) -> VerifiedCrl:
    """A PEM or DER CRL; PkiError unless it parses and ``ca_cert`` signed it."""
    if not isinstance(crl_data, bytes | bytearray | memoryview):
        raise PkiError(f"CRL data must be bytes, not {type(crl_data).__name__}")
    if not isinstance(ca_cert, x509.Certificate):
        raise PkiError(f"ca_cert must be an x509.Certificate, not {type(ca_cert).__name__}")
    raw = bytes(crl_data)
    try:
        if b"-----BEGIN X509 CRL-----" in raw:
            crl = x509.load_pem_x509_crl(raw)
        else:
            crl = x509.load_der_x509_crl(raw)
    except ValueError as exc:
        raise PkiError(f"not a PEM or DER CRL: {exc}") from exc
    try:
        valid = crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise PkiError(f"CRL is not signed by {ca_cert.subject.rfc4514_string()}")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        serials = frozenset(revoked.serial_number for revoked in crl)
    except x509.ExtensionNotFound:
        number, serials = None, frozenset(revoked.serial_number for revoked in crl)
    except ValueError as exc:  # a malformed extension or entry, signed or not
        raise PkiError(f"malformed CRL: {exc}") from exc
    return VerifiedCrl(serials, number, crl.last_update_utc, crl.next_update_utc)


def _load_ca_key(data: bytes, path: Path) -> CaKey:
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{path}: not an unencrypted private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(f"{path}: unsupported CA key type {type(key).__name__}")
    return key


def _parse_revoked(data: bytes, path: Path) -> dict[int, datetime]:
    try:
        document = json.loads(data)
        entries = document["revoked"] if isinstance(document, dict) else document
        revoked: dict[int, datetime] = {}
        for entry in entries:
            if isinstance(entry, dict):
                serial, when = entry["serial"], datetime.fromisoformat(entry["revoked_at"])
            else:
                serial, when = entry, datetime.now(UTC)
            if not isinstance(serial, int) or isinstance(serial, bool):
                raise TypeError(f"serial {serial!r} is not an integer")
            revoked[serial] = _utc(when, "revoked_at")
    except (ValueError, TypeError, KeyError, PkiError) as exc:
        raise PkiError(f"{path}: not a revocation list: {exc}") from exc
    return revoked
