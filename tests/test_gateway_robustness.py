"""Hostile and broken clients against a real gateway over mutual TLS.

Each case must end in an Error frame or a closed connection, never a crash of the gateway,
a hang of other connections, or lost state; a well-behaved device keeps its session throughout.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gateway_clients import INFO, RawClient

from wasmbed_hil.pki import Credentials, FleetCA, client_ssl_context
from wasmbed_hil.protocol import (
    DeviceSession,
    ErrorCode,
    Hello,
    frame,
)
from wasmbed_hil.protocol.types import DevicePhase


@pytest.fixture
def raw_client(gateway, fleet_ca: FleetCA, tmp_path: Path) -> Iterator:
    made: list[RawClient] = []

    def make(name: str = "raw") -> RawClient:
        creds_dir = tmp_path / f"raw-{name}-{len(made)}"
        fleet_ca.issue_device(name).write(creds_dir)
        client = RawClient(gateway.endpoint, creds_dir)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def hello_frame() -> bytes:
    session = DeviceSession(16384)
    session.send(Hello(None, INFO))
    return session.data_to_send()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00\x00\x00\x03\xff\xff\xff", ErrorCode.MALFORMED),  # not CBOR
        (frame(cbor2.dumps([1, 0, [1]])), ErrorCode.UNSUPPORTED_VERSION),
        (frame(cbor2.dumps([0, 0, [99]])), ErrorCode.UNKNOWN_MESSAGE),
        (frame(cbor2.dumps([0, 0, [35]])), ErrorCode.UNKNOWN_MESSAGE),  # gateway->device tag
        (frame(cbor2.dumps([0, 0, [3, 1, 2, []]])), ErrorCode.UNEXPECTED_MESSAGE),  # no Hello
        (frame(cbor2.dumps([0, 0, [1, None, ["x", "y"]]])), ErrorCode.MALFORMED),  # wrong arity
        (frame(cbor2.dumps([0, 0, [1, True, []]])), ErrorCode.MALFORMED),  # wrong type
        ((1 << 30).to_bytes(4, "big"), ErrorCode.FRAME_TOO_LARGE),
        (b"\x00\x00\x00\x00", ErrorCode.MALFORMED),  # empty frame
        (frame(cbor2.dumps([0, 0, [1]]) + b"\x00"), ErrorCode.MALFORMED),  # trailing byte
    ],
    ids=[
        "garbage",
        "version",
        "unknown-tag",
        "wrong-direction",
        "heartbeat-first",
        "wrong-arity",
        "wrong-type",
        "huge-length",
        "empty-frame",
        "trailing",
    ],
)
def test_bad_input_gets_an_error_and_a_closed_connection(gateway, raw_client, payload, code):
    client = raw_client()
    client.send(payload)
    error = client.read_error()
    got, reason = error.code, error.reason
    assert got is code, reason
    client.assert_closed()
    assert gateway.metrics()["protocol_errors"] >= 1


def test_bad_clients_do_not_disturb_a_healthy_device(gateway, device, raw_client):
    gateway.wait_heartbeats(device, 1)
    for _ in range(5):
        client = raw_client()
        client.send(b"\x00\x00\x00\x02\xff\xff")
        client.read_error()
    slow = raw_client("slow")
    slow.send(b"\x00\x00")  # half a header, then nothing
    gateway.wait_heartbeats(device, 3)
    assert gateway.device(device).phase is DevicePhase.CONNECTED


@pytest.mark.hil_gateway(frame_timeout_s=0.3)
def test_a_client_trickling_bytes_is_cut_off(gateway, raw_client):
    client = raw_client()
    data = hello_frame()
    client.send(data[:3])  # a frame started, never finished in time
    error = client.read_error()
    code, reason = error.code, error.reason
    assert code is ErrorCode.TIMEOUT
    assert "incomplete" in reason


@pytest.mark.hil_gateway(hello_timeout_s=0.3)
def test_a_silent_client_is_dropped_after_the_hello_timeout(gateway, raw_client):
    client = raw_client()
    code = client.read_error().code
    assert code is ErrorCode.TIMEOUT


def test_truncated_frame_then_eof_leaves_no_state(gateway, raw_client):
    client = raw_client()
    client.send(hello_frame()[:10])
    client.sock.shutdown(socket.SHUT_WR)
    client.assert_closed()
    assert gateway.devices() == []


def test_plain_tcp_client_fails_the_handshake(gateway):
    with socket.create_connection(gateway.endpoint, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sock.recv(1024)  # a TLS alert or EOF; either way the gateway records the failure
    event = gateway.wait_event("handshake_failed")
    assert event.data["reason"]
    assert gateway.metrics()["handshake_failures"] >= 1


def test_client_without_certificate_is_refused(gateway, fleet_ca, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=fleet_ca.cert_pem.decode())
    with (
        socket.create_connection(gateway.endpoint, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        sock.sendall(hello_frame())
        if not sock.recv(1024):
            raise ConnectionError("closed")
    event = gateway.wait_event("handshake_failed")
    assert "CERTIFICATE" in event.data["reason"].upper()


def test_tls_below_1_3_is_refused(gateway, fleet_ca, tmp_path):
    creds_dir = tmp_path / "old"
    fleet_ca.issue_device("old").write(creds_dir)
    ctx = client_ssl_context(creds_dir)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(gateway.endpoint, timeout=10) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="localhost")


def test_second_connection_of_an_identity_supersedes_the_first(gateway, device, device_factory):
    twin = device_factory("twin", credentials=device.credentials)
    assert twin.device_id == device.device_id  # same identity, same device
    closed = gateway.wait_event(
        "connection",
        lambda e: e.data.get("state") == "closed" and "superseded" in e.data.get("reason", ""),
    )
    assert closed.device_id == device.device_id
    assert len(gateway.devices()) == 1
    twin.power_off()
    gateway.wait_phase(device, DevicePhase.CONNECTED)


def _crafted(ca: FleetCA, name: str, *, is_ca: bool | None, usages: list | None) -> Credentials:
    """A leaf the fleet CA signs as no issuer of this repository would: BasicConstraints
    CA:TRUE (or none), and the extended key usages given (None: no such extension)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if is_ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return Credentials(name, key, builder.sign(ca.key, hashes.SHA256()), ca.cert)


CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.mark.parametrize(
    ("is_ca", "usages", "why"),
    [
        (True, [CLIENT_AUTH], "CA:TRUE"),
        (None, None, "clientAuth"),
        (False, None, "clientAuth"),
        (True, None, "CA:TRUE"),
    ],
    ids=["ca-true", "no-extensions", "no-eku", "ca-true-no-eku"],
)
@pytest.mark.hil_gateway(pairing=True)
def test_a_fleet_signed_certificate_unfit_for_a_device_is_refused(
    gateway, fleet_ca, tmp_path, is_ca, usages, why
):
    creds_dir = tmp_path / "unfit"
    _crafted(fleet_ca, "unfit", is_ca=is_ca, usages=usages).write(creds_dir)
    before = gateway.metrics().get("refused_certificate", 0)
    client = RawClient(gateway.endpoint, creds_dir)
    try:
        client.send(hello_frame())
        error = client.read_error()
        assert error.code is ErrorCode.BAD_CERTIFICATE, error
        assert why in error.reason
        client.assert_closed()
    finally:
        client.close()
    event = gateway.wait_event("rejected", lambda e: e.data.get("code") == "BAD_CERTIFICATE")
    assert why in event.data["reason"] and event.data["name"] == "unfit"
    assert gateway.metrics()["refused_certificate"] == before + 1
    assert gateway.devices() == []  # pairing was on: nothing enrolled all the same


@pytest.mark.hil_gateway(pairing=True)
def test_usages_without_client_auth_fail_the_tls_handshake(gateway, fleet_ca, tmp_path):
    """An extended key usage without clientAuth OpenSSL refuses itself (it is the missing
    extension, and CA:TRUE, that it lets through)."""
    creds_dir = tmp_path / "signer"
    _crafted(fleet_ca, "signer", is_ca=False,
             usages=[ExtendedKeyUsageOID.CODE_SIGNING]).write(creds_dir)
    client = RawClient(gateway.endpoint, creds_dir)
    try:
        with pytest.raises((AssertionError, ssl.SSLError, ConnectionError)):
            client.send(hello_frame())
            client.read_error()
    finally:
        client.close()
    gateway.wait_event("handshake_failed")
    assert gateway.devices() == []


@pytest.mark.hil_gateway(pairing=True)
def test_a_device_certificate_as_the_fleet_ca_issues_it_is_admitted(gateway, fleet_ca, tmp_path):
    crafted = _crafted(fleet_ca, "fit", is_ca=False, usages=[CLIENT_AUTH])
    for creds in (fleet_ca.issue_device("issued"), crafted):
        creds_dir = tmp_path / creds.name
        creds.write(creds_dir)
        client = RawClient(gateway.endpoint, creds_dir)
        try:
            client.send(hello_frame())
            frame_len = int.from_bytes(client.sock.recv(4), "big")
            assert frame_len > 0  # an EnrollChallenge, not an Error and a close
        finally:
            client.close()
    assert gateway.metrics().get("refused_certificate", 0) == 0


@pytest.mark.hil_gateway(hello_timeout_s=0.3)
def test_stop_ends_the_handlers_still_closing_their_connection(gateway, raw_client):
    """A handler whose peer never answers the TLS close waits up to a second for it; stop()
    must end it too (it used to leave the handler running after the gateway stopped)."""
    client = raw_client()
    assert client.read_error().code is ErrorCode.TIMEOUT  # the gateway is closing it now
    gw = gateway.gateway
    gateway.stop()

    def handlers_left() -> list[str]:
        import asyncio

        return [repr(t) for t in asyncio.all_tasks()
                if getattr(t.get_coro(), "__qualname__", "") == "Gateway._accept"
                and not t.done()]

    try:
        assert gateway.loop.call(handlers_left) == []
        assert gw._handlers == set()
    finally:
        client.close()


def test_a_corrupted_record_from_a_device_closes_its_connection_quietly(gateway, device):
    """A flipped byte fails the record's MAC at the gateway: the connection is closed and
    counted as a TLS error, not logged as a handler bug; the device comes back."""
    from wasmbed_hil.bench.link.impairments import Corrupt

    gateway.wait_heartbeats(device, 1)
    with device.link.impair(Corrupt("up", offsets=[12])):
        gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    metrics = gateway.metrics()
    assert metrics.get("tls_errors") == 1
    assert metrics.get("handler_errors", 0) == 0
