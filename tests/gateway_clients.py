"""Blocking TLS clients for tests against a real gateway: one that speaks bytes, one that
speaks the protocol where it obeys the rules (and writes raw frames where it means to break
them)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from wasmbed_hil.pki import Credentials, client_ssl_context
from wasmbed_hil.protocol import (
    ENROLL_CONTEXT,
    DeviceInfo,
    DeviceSession,
    EnrollChallenge,
    EnrollProof,
    Error,
    Hello,
    Message,
    Received,
    Welcome,
    decode_envelope,
    encode_envelope,
    frame,
)

INFO = DeviceInfo("x86_64", "raw", "test", 1 << 20, 1 << 20, 1 << 16, 16384, 4, 1)


class RawClient:
    """A blocking TLS client that speaks bytes, not the protocol."""

    def __init__(self, endpoint: tuple[str, int], creds_dir: Path) -> None:
        raw = socket.create_connection(endpoint, timeout=10)
        self.sock = client_ssl_context(creds_dir).wrap_socket(raw, server_hostname="localhost")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_error(self) -> Error:
        """Read frames until an Error arrives (raw: a session may already count the phase as
        broken); the connection must then close."""
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


class ProtocolClient(RawClient):
    """Speaks the protocol through a DeviceSession; `send_raw` frames what it would refuse."""

    def __init__(self, endpoint: tuple[str, int], creds: Credentials, creds_dir: Path) -> None:
        creds.write(creds_dir)
        super().__init__(endpoint, creds_dir)
        self.creds = creds
        self.session = DeviceSession(16384)
        self.inbox: list[Message] = []

    def send_message(self, message: Message) -> None:
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
        self.send_message(Hello(None, INFO))
        reply = self.receive()
        if isinstance(reply, EnrollChallenge):
            signature = self.creds.sign(ENROLL_CONTEXT + reply.nonce)
            self.send_message(EnrollProof(self.creds.spki_der, signature))
            reply = self.receive()
        assert isinstance(reply, Welcome), reply
        return reply
