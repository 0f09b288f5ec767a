"""Tests for wasmbed_hil.pki: identities, issuance, signatures, revocation, files and TLS."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wasmbed_hil.pki import (
    Credentials,
    FleetCA,
    PkiError,
    client_ssl_context,
    device_certificate_problem,
    device_identity,
    load_certificate,
    read_crl,
    server_ssl_context,
    spki_der,
    verify_certificate_signature,
    verify_signature,
)

pytestmark = pytest.mark.filterwarnings("error")

KEY_TYPES = ["p256", "ed25519"]
IO_TIMEOUT = 10.0


@pytest.fixture
def ca() -> FleetCA:
    return FleetCA.create()


@pytest.fixture
def other_ca() -> FleetCA:
    # Same (default) subject name as `ca`: only the signature tells them apart.
    return FleetCA.create()


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Check the certificate signature with the issuer's public key directly."""
    public_key = issuer.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    hash_algorithm = cert.signature_hash_algorithm
    assert isinstance(hash_algorithm, hashes.SHA256)
    try:
        public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature:
        return False
    return True


# -- identities ------------------------------------------------------------------------------


def test_identity_is_sha256_of_spki_der(ca: FleetCA) -> None:
    creds = ca.issue_device("dev-1")
    expected = hashlib.sha256(_spki(creds.cert)).hexdigest()
    assert device_identity(creds.cert) == expected
    assert device_identity(_spki(creds.cert)) == expected
    assert creds.identity == expected
    assert spki_der(creds.cert) == _spki(creds.cert) == creds.spki_der
    assert len(expected) == 64 and expected == expected.lower()
    assert ca.issue_device("dev-2").identity != expected


def test_identity_and_files_survive_write_read(ca: FleetCA, tmp_path: Path) -> None:
    creds = ca.issue_device("dev-io")
    directory = tmp_path / "nested" / "dev-io"
    creds.write(directory)

    names = {p.name for p in directory.iterdir()}
    assert names == {"key.pem", "key.der", "cert.pem", "cert.der", "ca.pem", "ca.der"}
    assert _mode(directory / "key.pem") == 0o600
    assert _mode(directory / "key.der") == 0o600
    assert (directory / "cert.der").read_bytes() == creds.cert_der
    assert (directory / "ca.pem").read_bytes() == ca.cert_pem

    loaded = Credentials.read(directory)
    assert loaded.identity == creds.identity
    assert loaded.serial == creds.serial == creds.cert.serial_number
    assert loaded.name == "dev-io"
    assert loaded.key_der == creds.key_der
    assert loaded.ca_cert == ca.cert
    assert loaded == creds
    assert Credentials.read(directory, name="alias").name == "alias"


def test_key_file_mode_is_tightened_on_rewrite(ca: FleetCA, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(b"old")
    os.chmod(tmp_path / "key.pem", 0o644)
    ca.issue_device("dev").write(tmp_path)
    assert _mode(tmp_path / "key.pem") == 0o600


def test_pem_and_der_accessors_agree(ca: FleetCA) -> None:
    creds = ca.issue_device("dev", key_type="ed25519")
    assert load_certificate(creds.cert_pem) == load_certificate(creds.cert_der) == creds.cert
    assert load_certificate(creds.ca_pem) == load_certificate(creds.ca_der) == ca.cert
    assert load_certificate(ca.cert_pem) == load_certificate(ca.cert_der) == ca.cert
    assert creds.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_der_private_key(creds.key_der, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert _spki(creds.cert) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- issuance --------------------------------------------------------------------------------


def test_ca_certificate_shape(ca: FleetCA) -> None:
    cert = ca.cert
    assert cert.issuer == cert.subject
    assert _common_name(cert) == "wasmbed fleet CA"
    assert _signed_by(cert, cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert _common_name(FleetCA.create("lab CA", valid_days=1).cert) == "lab CA"


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_device_cert_chains_to_ca_with_client_auth(
    ca: FleetCA, other_ca: FleetCA, key_type: str
) -> None:
    creds = ca.issue_device("sensor-7", key_type=key_type)  # type: ignore[arg-type]
    cert = creds.cert
    assert _signed_by(cert, ca.cert)
    assert not _signed_by(cert, other_ca.cert)
    cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(other_ca.cert)
    assert cert.issuer == ca.cert.subject
    assert _common_name(cert) == "sensor-7" == creds.name
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert creds.ca_cert == ca.cert
    expected_key = ec.EllipticCurvePrivateKey if key_type == "p256" else ed25519.Ed25519PrivateKey
    assert isinstance(creds.key, expected_key)


def test_device_default_validity(ca: FleetCA) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    cert = ca.issue_device("dev").cert
    after = datetime.now(UTC)
    assert before - timedelta(minutes=5) <= cert.not_valid_before_utc
    assert cert.not_valid_before_utc <= after - timedelta(minutes=5)
    assert before + timedelta(days=825) <= cert.not_valid_after_utc
    assert cert.not_valid_after_utc <= after + timedelta(days=825)


def test_expired_device_has_requested_not_after(ca: FleetCA) -> None:
    not_after = datetime.now(UTC) - timedelta(days=1, microseconds=123)
    cert = ca.issue_device("stale", not_after=not_after).cert
    assert cert.not_valid_after_utc == not_after.replace(microsecond=0)
    assert cert.not_valid_before_utc <= cert.not_valid_after_utc < datetime.now(UTC)


def test_explicit_validity_window_and_naive_utc(ca: FleetCA) -> None:
    not_before = datetime(2030, 1, 2, 3, 4, 5)  # naive: taken as UTC
    not_after = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert = ca.issue_device("future", not_before=not_before, not_after=not_after).cert
    assert cert.not_valid_before_utc == not_before.replace(tzinfo=UTC)
    assert cert.not_valid_after_utc == not_after
    with pytest.raises(PkiError, match="before"):
        ca.issue_device("backwards", not_before=not_after, not_after=not_before)
    # Only a future not_before: the default length counts from it.
    later = ca.issue_device("later", not_before=not_after).cert
    assert later.not_valid_before_utc == not_after
    assert later.not_valid_after_utc == not_after + timedelta(days=825)


def test_reissue_with_same_key_keeps_identity(ca: FleetCA) -> None:
    first = ca.issue_device("dev", key_type="ed25519")
    second = ca.issue_device("dev", key=first.key)
    assert second.identity == first.identity
    assert second.serial != first.serial
    assert second.key is first.key
    with pytest.raises(PkiError, match="curve"):
        ca.issue_device("p384", key=ec.generate_private_key(ec.SECP384R1()))


def test_gateway_sans_and_server_auth(ca: FleetCA) -> None:
    hosts = ("gw.lab.example", "localhost", "10.0.0.7", "::1")
    creds = ca.issue_gateway("gateway-a", hosts)
    cert = creds.cert
    assert _signed_by(cert, ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.lab.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _common_name(cert) == "gateway-a"
    assert isinstance(creds.key, ec.EllipticCurvePrivateKey)
    assert isinstance(creds.key.curve, ec.SECP256R1)


def test_gateway_default_hosts(ca: FleetCA) -> None:
    san = ca.issue_gateway("gw").cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


@pytest.mark.parametrize("hosts", ["localhost", (), ("",), ("bücher.example",)])
def test_gateway_rejects_bad_hosts(ca: FleetCA, hosts: object) -> None:
    with pytest.raises(PkiError):
        ca.issue_gateway("gw", hosts)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_rejects_bad_names(ca: FleetCA, name: str) -> None:
    with pytest.raises(PkiError):
        ca.issue_device(name)


# -- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_sign_verify_round_trip_and_rejections(ca: FleetCA, key_type: str) -> None:
    creds = ca.issue_device("signer", key_type=key_type)  # type: ignore[arg-type]
    other = ca.issue_device("other", key_type=key_type)  # type: ignore[arg-type]
    message = b"enroll:" + bytes(range(32))
    signature = creds.sign(message)
    if key_type == "ed25519":
        assert len(signature) == 64
    else:
        assert signature[0] == 0x30  # DER SEQUENCE
    assert verify_signature(creds.spki_der, signature, message)
    assert not verify_signature(creds.spki_der, signature, message + b"!")
    assert not verify_signature(
        creds.spki_der, signature[:-1] + bytes([signature[-1] ^ 1]), message
    )
    assert not verify_signature(other.spki_der, signature, message)
    assert not verify_signature(b"not an spki", signature, message)
    assert not verify_signature(b"", signature, message)
    assert not verify_signature(creds.spki_der, b"", message)
    assert not verify_signature("text", signature, message)  # type: ignore[arg-type]
    assert not verify_signature(creds.spki_der, signature, 12)  # type: ignore[arg-type]


def test_verify_signature_rejects_other_key_types() -> None:
    message = b"data"
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_spki = p384.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # A valid ECDSA/SHA-256 signature, but P-384 is not a supported device key.
    assert not verify_signature(p384_spki, p384.sign(message, ec.ECDSA(hashes.SHA256())), message)


def test_verify_signature_does_not_confuse_key_types(ca: FleetCA) -> None:
    ed = ca.issue_device("ed", key_type="ed25519")
    p256 = ca.issue_device("p256", key_type="p256")
    assert not verify_signature(p256.spki_der, ed.sign(b"m"), b"m")
    assert not verify_signature(ed.spki_der, p256.sign(b"m"), b"m")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_verify_certificate_signature_answers_as_verify_signature_on_its_spki(
    ca: FleetCA, key_type: str
) -> None:
    """The gateway checks enrollment proofs with the certificate's key object rather than
    its SPKI parsed again: the same answer for every signature, valid or not."""
    creds = ca.issue_device("signer", key_type=key_type)  # type: ignore[arg-type]
    others = [ca.issue_device("other", key_type=t) for t in KEY_TYPES]  # type: ignore[arg-type]
    message = b"enroll:" + bytes(range(32))
    good = creds.sign(message)
    cases = [
        (good, message),
        (good, message + b"!"),
        (good[:-1] + bytes([good[-1] ^ 1]), message),
        (b"", message),
        (b"\x30\x00", message),
        *((o.sign(message), message) for o in others),
    ]
    answers = [verify_certificate_signature(creds.cert, sig, data) for sig, data in cases]
    assert answers == [verify_signature(creds.spki_der, sig, data) for sig, data in cases]
    assert answers == [True] + [False] * (len(cases) - 1)
    assert not verify_certificate_signature(creds.cert, "text", message)  # type: ignore[arg-type]
    assert not verify_certificate_signature(creds.cert, good, 12)  # type: ignore[arg-type]
    assert not verify_certificate_signature(creds.cert_der, good, message)  # type: ignore[arg-type]


def test_verify_certificate_signature_refuses_other_key_types() -> None:
    """A P-384 certificate with a valid ECDSA/SHA-256 signature: not a device key."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p384")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    message = b"data"
    assert not verify_certificate_signature(
        cert, key.sign(message, ec.ECDSA(hashes.SHA256())), message)


# -- revocation ------------------------------------------------------------------------------


def test_revocation_is_listed_in_a_signed_crl(ca: FleetCA, other_ca: FleetCA) -> None:
    revoked = ca.issue_device("bad")
    kept = ca.issue_device("good", key_type="ed25519")
    assert not ca.is_revoked(revoked)
    ca.revoke(revoked)
    ca.revoke(revoked.cert)  # idempotent
    assert ca.is_revoked(revoked)
    assert ca.is_revoked(revoked.cert)
    assert ca.is_revoked(revoked.serial)
    assert not ca.is_revoked(kept)
    assert ca.revoked_serials == frozenset({revoked.serial})

    crl = ca.crl()
    assert crl.issuer == ca.cert.subject
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
    assert ca.verify_crl(crl)
    assert not other_ca.verify_crl(crl)
    assert not ca.verify_crl(other_ca.crl())

    assert read_crl(ca.crl_pem(), ca.cert).serials == {revoked.serial}
    crl_der = crl.public_bytes(serialization.Encoding.DER)
    assert read_crl(crl_der, ca.cert).serials == {revoked.serial}


def test_crl_of_another_ca_or_garbage_is_rejected(ca: FleetCA, other_ca: FleetCA) -> None:
    other_ca.revoke(other_ca.issue_device("x"))
    with pytest.raises(PkiError, match="not signed"):
        read_crl(other_ca.crl_pem(), ca.cert)
    with pytest.raises(PkiError, match="CRL"):
        read_crl(b"garbage", ca.cert)
    with pytest.raises(PkiError):
        read_crl(
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", ca.cert
        )


def test_empty_crl_and_crl_numbers_increase(ca: FleetCA) -> None:
    first, second = ca.crl(), ca.crl()
    assert len(first) == 0
    assert (
        read_crl(first.public_bytes(serialization.Encoding.PEM), ca.cert).serials == set()
    )
    numbers = [
        c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for c in (first, second)
    ]
    assert numbers[0] < numbers[1]
    older = read_crl(first.public_bytes(serialization.Encoding.PEM), ca.cert)
    newer = read_crl(second.public_bytes(serialization.Encoding.DER), ca.cert)
    assert (older.number, newer.number) == tuple(numbers)
    assert older.next_update is not None and not older.stale()
    assert older.stale(older.next_update + timedelta(seconds=1))
    assert newer.older_than(older) is None
    assert older.older_than(newer) == (
        f"CRL number {numbers[0]} is older than the loaded CRL's {numbers[1]}")
    assert older.older_than(older) is None  # the same CRL again: a reload


def test_cannot_revoke_another_cas_certificate(ca: FleetCA, other_ca: FleetCA) -> None:
    foreign = other_ca.issue_device("foreign")
    with pytest.raises(PkiError, match="not issued by this CA"):
        ca.revoke(foreign)
    assert ca.revoked_serials == frozenset()
    assert not ca.is_revoked(FleetCA.create("elsewhere").issue_device("x").cert)


# -- persistence -----------------------------------------------------------------------------


def test_ca_save_load_round_trip(ca: FleetCA, tmp_path: Path) -> None:
    devices = [ca.issue_device(f"d{i}") for i in range(3)]
    ca.revoke(devices[0])
    ca.revoke(devices[2].cert)
    ca.save(tmp_path / "ca")

    assert _mode(tmp_path / "ca" / "ca-key.pem") == 0o600
    loaded = FleetCA.load(tmp_path / "ca")
    assert loaded.cert == ca.cert
    assert loaded.cert_pem == ca.cert_pem
    assert loaded.revoked_serials == {devices[0].serial, devices[2].serial}
    assert loaded.is_revoked(devices[0]) and not loaded.is_revoked(devices[1])
    assert ca.verify_crl(loaded.crl())
    assert loaded.verify_crl(ca.crl())
    assert read_crl(loaded.crl_pem(), ca.cert).serials == loaded.revoked_serials

    fresh = loaded.issue_device("after-load")
    assert _signed_by(fresh.cert, ca.cert)
    loaded.revoke(fresh)
    loaded.save(tmp_path / "ca")
    assert FleetCA.load(tmp_path / "ca").revoked_serials == {
        devices[0].serial,
        devices[2].serial,
        fresh.serial,
    }


def test_ca_load_errors(ca: FleetCA, other_ca: FleetCA, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="does not exist"):
        FleetCA.load(tmp_path / "missing")
    ca.save(tmp_path / "ca")
    (tmp_path / "ca" / "revoked.json").write_text("{not json")
    with pytest.raises(PkiError, match=r"revoked\.json"):
        FleetCA.load(tmp_path / "ca")
    (tmp_path / "ca" / "revoked.json").unlink()
    assert FleetCA.load(tmp_path / "ca").revoked_serials == frozenset()
    (tmp_path / "ca" / "ca.pem").write_bytes(other_ca.cert_pem)
    with pytest.raises(PkiError, match="does not match"):
        FleetCA.load(tmp_path / "ca")
    (tmp_path / "ca" / "ca-key.pem").write_bytes(b"garbage")
    with pytest.raises(PkiError, match=r"ca-key\.pem"):
        FleetCA.load(tmp_path / "ca")


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x01",
    ],
)
def test_load_certificate_rejects_garbage(data: bytes) -> None:
    with pytest.raises(PkiError, match="certificate"):
        load_certificate(data)


def test_device_identity_rejects_garbage() -> None:
    with pytest.raises(PkiError):
        device_identity(b"not der")
    with pytest.raises(PkiError):
        device_identity("text")  # type: ignore[arg-type]


def test_credentials_read_errors(ca: FleetCA, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="does not exist"):
        Credentials.read(tmp_path / "missing")
    creds = ca.issue_device("dev")
    creds.write(tmp_path / "dev")
    (tmp_path / "dev" / "cert.pem").unlink()
    with pytest.raises(PkiError, match=r"cert\.pem"):
        Credentials.read(tmp_path / "dev")
    (tmp_path / "dev" / "cert.pem").write_bytes(ca.issue_device("other").cert_pem)
    with pytest.raises(PkiError, match="does not match"):
        Credentials.read(tmp_path / "dev")
    (tmp_path / "dev" / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(PkiError, match=r"key\.pem"):
        Credentials.read(tmp_path / "dev")


def test_credentials_reject_wrong_key_type(ca: FleetCA) -> None:
    creds = ca.issue_device("dev")
    with pytest.raises(PkiError, match="curve"):
        Credentials("dev", ec.generate_private_key(ec.SECP384R1()), creds.cert, ca.cert)
    with pytest.raises(PkiError, match="key type"):
        Credentials("dev", b"key", creds.cert, ca.cert)  # type: ignore[arg-type]


# -- TLS -------------------------------------------------------------------------------------


@dataclass
class ServerSide:
    peer_der: bytes | None = None
    request: bytes | None = None
    version: str | None = None
    error: BaseException | None = None


@dataclass
class ClientSide:
    reply: bytes | None = None
    error: BaseException | None = None


def _serve_once(listener: socket.socket, context: ssl.SSLContext) -> ServerSide:
    result = ServerSide()
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(IO_TIMEOUT)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                result.peer_der = tls.getpeercert(binary_form=True)
                result.version = tls.version()
                result.request = tls.recv(4)
                tls.sendall(b"pong")
        except (ssl.SSLError, OSError) as exc:
            result.error = exc
    return result


def _connect(port: int, context: ssl.SSLContext, hostname: str) -> ClientSide:
    result = ClientSide()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            tls.sendall(b"ping")
            result.reply = tls.recv(4)
    except (ssl.SSLError, OSError) as exc:
        result.error = exc
    return result


def _exchange(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[ServerSide, ClientSide]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(IO_TIMEOUT)
        port = listener.getsockname()[1]
        with ThreadPoolExecutor(max_workers=1) as pool:
            server_future = pool.submit(_serve_once, listener, server)
            client_side = _connect(port, client, hostname)
            server_side = server_future.result(timeout=IO_TIMEOUT)
    return server_side, client_side


@pytest.fixture
def gateway_dir(ca: FleetCA, tmp_path: Path) -> Path:
    directory = tmp_path / "gateway"
    ca.issue_gateway("gateway").write(directory)
    return directory


def test_ssl_context_settings(ca: FleetCA, gateway_dir: Path, tmp_path: Path) -> None:
    ca.issue_device("dev").write(tmp_path / "dev")
    server = server_ssl_context(gateway_dir)
    client = client_ssl_context(tmp_path / "dev")
    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.maximum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.cert_store_stats()["x509_ca"] == 1
    assert server.protocol == ssl.PROTOCOL_TLS_SERVER
    assert server.num_tickets == 0
    assert client.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert client.check_hostname


def test_ssl_context_errors(ca: FleetCA, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="does not exist"):
        server_ssl_context(tmp_path / "missing")
    creds = ca.issue_device("dev")
    creds.write(tmp_path / "dev")
    (tmp_path / "dev" / "ca.pem").unlink()
    with pytest.raises(PkiError, match=r"ca\.pem"):
        client_ssl_context(tmp_path / "dev")
    (tmp_path / "dev" / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "dev" / "key.pem").write_bytes(ca.issue_device("other").key_pem)
    with pytest.raises(PkiError, match="cannot load"):
        client_ssl_context(tmp_path / "dev")


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_mutual_tls13_handshake(
    ca: FleetCA, gateway_dir: Path, tmp_path: Path, key_type: str, hostname: str
) -> None:
    device = ca.issue_device(f"dev-{key_type}", key_type=key_type)  # type: ignore[arg-type]
    device.write(tmp_path / "dev")
    server_side, client_side = _exchange(
        server_ssl_context(gateway_dir), client_ssl_context(tmp_path / "dev"), hostname
    )
    assert server_side.error is None, server_side.error
    assert client_side.error is None, client_side.error
    assert server_side.version == "TLSv1.3"
    assert server_side.request == b"ping"
    assert client_side.reply == b"pong"
    assert server_side.peer_der is not None
    assert device_identity(load_certificate(server_side.peer_der)) == device.identity


def test_server_refuses_client_cert_from_another_ca(
    ca: FleetCA, other_ca: FleetCA, gateway_dir: Path, tmp_path: Path
) -> None:
    rogue = other_ca.issue_device("rogue")
    # The rogue trusts the real CA (so it accepts the gateway) but presents a foreign cert.
    Credentials(rogue.name, rogue.key, rogue.cert, ca.cert).write(tmp_path / "rogue")
    server_side, client_side = _exchange(
        server_ssl_context(gateway_dir), client_ssl_context(tmp_path / "rogue")
    )
    assert isinstance(server_side.error, ssl.SSLError)
    assert "certificate verify failed" in str(server_side.error)
    assert server_side.request is None
    assert client_side.reply != b"pong"


def test_client_refuses_gateway_of_another_ca_or_wrong_host(
    ca: FleetCA, other_ca: FleetCA, gateway_dir: Path, tmp_path: Path
) -> None:
    other_ca.issue_device("dev").write(tmp_path / "foreign")
    ca.issue_device("dev").write(tmp_path / "dev")
    for creds_dir, hostname in (
        (tmp_path / "foreign", "localhost"),
        (tmp_path / "dev", "gw.other"),
    ):
        server_side, client_side = _exchange(
            server_ssl_context(gateway_dir), client_ssl_context(creds_dir), hostname
        )
        assert isinstance(client_side.error, ssl.SSLCertVerificationError), client_side.error
        assert server_side.error is not None
        assert server_side.request is None


def test_device_certificate_problem_accepts_issued_devices_only(ca: FleetCA) -> None:
    for key_type in KEY_TYPES:
        assert device_certificate_problem(ca.issue_device("d", key_type=key_type).cert) is None
    gateway = device_certificate_problem(ca.issue_gateway("gw").cert)
    assert gateway is not None and "serverAuth" in gateway and "lacks clientAuth" in gateway
    ca_problem = device_certificate_problem(ca.cert)
    assert ca_problem is not None and "CA:TRUE" in ca_problem
