"""The per-connection handler: a message the session's phase does not allow is a Violation.

A raw TLS client drives a real gateway into each of the gateway's receiving phases (waiting for
Hello, waiting for the enrollment proof, established) and then sends every device->gateway
message that phase does not allow. Each must end the same way: an Error(UNEXPECTED_MESSAGE)
frame, a closed connection, a "violation" event and one more `protocol_errors`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.gateway import EventLog, GatewayConfig, GatewayStore
from wasmbed_hil.gateway.handler import ConnectionHandler, SessionServices
from wasmbed_hil.gateway.registry import DeviceRegistry
from wasmbed_hil.pki import Credentials, FleetCA, client_ssl_context
from wasmbed_hil.protocol import (
    CATALOGUE,
    ENROLL_CONTEXT,
    AppState,
    AppSummary,
    ChunkAck,
    DeployAck,
    DeployReady,
    DeviceInfo,
    DeviceInfoReport,
    DeviceSession,
    Direction,
    EnrollChallenge,
    EnrollProof,
    Error,
    ErrorCode,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Message,
    Outcome,
    ProtocolError,
    Received,
    StartAck,
    StopAck,
    Violation,
    Welcome,
    decode_envelope,
    encode_envelope,
    frame,
)
from wasmbed_hil.protocol.types import DevicePhase
from wasmbed_hil.protocol.vectors import session_in, valid_messages

INFO = DeviceInfo("x86_64", "raw", "test", 1 << 20, 1 << 20, 1 << 16, 16384, 4, 1)

DEVICE_TO_GATEWAY = [
    cls for cls in CATALOGUE.values() if cls.DIRECTION is Direction.DEVICE_TO_GATEWAY
]


def _sample(cls: type[Message]) -> Message:
    """One valid instance of a message class, from the protocol's test vectors."""
    return next(msg for _, _, msg in valid_messages() if type(msg) is cls)


# ====================================================================== a phase refuses
class ProtocolClient:
    """A blocking TLS client that speaks the protocol through a DeviceSession where it obeys
    the rules, and writes raw frames where it means to break them."""

    def __init__(self, endpoint: tuple[str, int], creds: Credentials, creds_dir: Path) -> None:
        creds.write(creds_dir)
        self.creds = creds
        raw = socket.create_connection(endpoint, timeout=10)
        self.sock = client_ssl_context(creds_dir).wrap_socket(raw, server_hostname="localhost")
        self.session = DeviceSession(16384)
        self.inbox: list[Message] = []

    def send(self, message: Message) -> None:
        self.session.send(message)
        self.sock.sendall(self.session.data_to_send())

    def send_raw(self, message: Message, message_id: int = 7) -> None:
        """Frame a message the session would refuse to send in its state."""
        self.sock.sendall(frame(encode_envelope(message_id, message)))

    def receive(self) -> Message:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the gateway closed the connection")
            for event in self.session.receive_data(data):
                assert isinstance(event, Received), event
                self.inbox.append(event.message)
        return self.inbox.pop(0)

    def enroll_or_welcome(self) -> Welcome:
        self.send(Hello(None, INFO))
        reply = self.receive()
        if isinstance(reply, EnrollChallenge):
            signature = self.creds.sign(ENROLL_CONTEXT + reply.nonce)
            self.send(EnrollProof(self.creds.spki_der, signature))
            reply = self.receive()
        assert isinstance(reply, Welcome), reply
        return reply

    def read_error(self) -> Error:
        """Frames until an Error (raw: the session may already count the phase as broken)."""
        buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed without an Error frame (had {buf!r})")
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                n = int.from_bytes(buf[:4], "big")
                env = decode_envelope(buf[4 : 4 + n])
                buf = buf[4 + n :]
                if isinstance(env.message, Error):
                    return env.message

    def assert_closed(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            return
        assert data == b"", f"expected the gateway to close, got {data!r}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(gateway, fleet_ca: FleetCA, tmp_path: Path) -> Iterator:
    made: list[ProtocolClient] = []

    def make(name: str, creds: Credentials | None = None) -> ProtocolClient:
        creds = creds or fleet_ca.issue_device(name)
        made.append(ProtocolClient(gateway.endpoint, creds, tmp_path / f"{name}-{len(made)}"))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _assert_violation(gateway, client: ProtocolClient, before: int, cls: type[Message]) -> None:
    error = client.read_error()
    assert error.code is ErrorCode.UNEXPECTED_MESSAGE, error
    assert cls.__name__ in error.reason
    client.assert_closed()
    event = gateway.wait_event(
        "violation", lambda e: e.data.get("code") == "UNEXPECTED_MESSAGE", timeout=5
    )
    assert cls.__name__ in event.data["reason"]
    assert gateway.metrics()["protocol_errors"] == before + 1


@pytest.mark.parametrize(
    "cls", [c for c in DEVICE_TO_GATEWAY if c is not Hello], ids=lambda c: c.__name__
)
def test_awaiting_hello_anything_but_hello_is_a_violation(gateway, client, cls):
    before = gateway.metrics().get("protocol_errors", 0)
    raw = client("early")
    raw.send_raw(_sample(cls))
    _assert_violation(gateway, raw, before, cls)
    assert gateway.devices() == []


@pytest.mark.parametrize(
    "cls", [c for c in DEVICE_TO_GATEWAY if c is not EnrollProof], ids=lambda c: c.__name__
)
def test_awaiting_the_proof_anything_but_the_proof_is_a_violation(gateway, client, cls):
    before = gateway.metrics().get("protocol_errors", 0)
    raw = client("prover")
    raw.send(Hello(None, INFO))
    assert isinstance(raw.receive(), EnrollChallenge)
    raw.send_raw(_sample(cls))
    _assert_violation(gateway, raw, before, cls)
    assert gateway.devices() == []  # nothing enrolled


@pytest.mark.parametrize("cls", [Hello, EnrollProof], ids=lambda c: c.__name__)
def test_established_a_handshake_message_is_a_violation(gateway, client, fleet_ca, cls):
    creds = fleet_ca.issue_device("settled")
    first = client("settled", creds)
    welcome = first.enroll_or_welcome()
    device_id = welcome.device_id.hex()
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
    before = gateway.metrics().get("protocol_errors", 0)
    first.send_raw(_sample(cls))
    _assert_violation(gateway, first, before, cls)
    gateway.wait_phase(device_id, DevicePhase.DISCONNECTED)
    # The device stays enrolled: the next connection is welcomed without a challenge.
    again = client("settled", creds)
    assert again.enroll_or_welcome().enrolled_now is False
    gateway.wait_phase(device_id, DevicePhase.CONNECTED)
