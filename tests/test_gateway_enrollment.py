"""Enrollment at the gateway: what a device is told, the gateway keeps.

A device that got its Welcome for a new enrollment must be known to the next incarnation of the
gateway, even when the gateway dies the moment the Welcome has left it: the enrollment is in
the local cache (committed to SQLite, not only in memory or in an open transaction) before the
Welcome is sent. The proof checks (the key the device proves must be its certificate's, and
the signature must verify) are made with the certificate the TLS handshake verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_clients import INFO, ProtocolClient

from wasmbed_hil.gateway.handler import ConnectionHandler
from wasmbed_hil.protocol import (
    ENROLL_CONTEXT,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    ErrorCode,
    Hello,
    ProtocolError,
    Welcome,
)
from wasmbed_hil.protocol.types import DevicePhase


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


_DIRS = itertools.count()


def _client(gateway, fleet_ca, tmp_path: Path, stack, name: str, creds=None) -> ProtocolClient:
    creds = creds if creds is not None else fleet_ca.issue_device(name)
    client = ProtocolClient(gateway.endpoint, creds, tmp_path / f"{name}-{next(_DIRS)}")
    stack.callback(client.close)
    return client


def test_a_welcomed_enrollment_survives_the_gateway_dying_right_after(
    gateway, fleet_ca, tmp_path, closing,
):
    creds = fleet_ca.issue_device("told")
    # The gateway dies (as in SIGKILL: its task cancelled on the spot, connections aborted,
    # an open SQLite transaction rolled back) at the event it logs once the Welcome is sent.
    died = gateway.crash_when("connection", lambda e: e.data.get("state") == "open")
    first = _client(gateway, fleet_ca, tmp_path, closing, "told", creds)
    welcome = first.enroll_or_welcome()
    assert welcome.enrolled_now
    assert died.result(timeout=10).device_id == welcome.device_id.hex()
    gateway.crash()
    # What the dead incarnation left on disk, read as another process would read it.
    db = sqlite3.connect(gateway.workdir / "state" / "gateway.sqlite3")
    try:
        rows = db.execute("SELECT device_id, name FROM devices").fetchall()
    finally:
        db.close()
    assert rows == [(welcome.device_id.hex(), "told")]

    gateway.start()  # the next incarnation, on the same local cache
    again = _client(gateway, fleet_ca, tmp_path, closing, "told", creds)
    second = again.enroll_or_welcome()
    assert second.enrolled_now is False  # no challenge: it is known
    assert second.device_id == welcome.device_id
    gateway.wait_phase(welcome.device_id.hex(), DevicePhase.CONNECTED)


def _prove(client: ProtocolClient, public_key: bytes, signature_of) -> object:
    client.send_message(Hello(None, INFO))
    challenge = client.receive()
    assert isinstance(challenge, EnrollChallenge)
    client.send_message(EnrollProof(public_key, signature_of(ENROLL_CONTEXT + challenge.nonce)))
    return client.receive()


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
def test_the_proof_must_be_made_with_the_certificates_key(
    gateway, fleet_ca, tmp_path, closing, key_type,
):
    mine = fleet_ca.issue_device("mine", key_type=key_type)
    other = fleet_ca.issue_device("other", key_type=key_type)
    # Another key, properly signed with it: not the certificate's key.
    reply = _prove(_client(gateway, fleet_ca, tmp_path, closing, "mine", mine),
                   other.spki_der, other.sign)
    assert isinstance(reply, EnrollReject) and reply.code is ErrorCode.KEY_MISMATCH
    # The certificate's key named, but the signature made with another key.
    reply = _prove(_client(gateway, fleet_ca, tmp_path, closing, "mine", mine),
                   mine.spki_der, other.sign)
    assert isinstance(reply, EnrollReject) and reply.code is ErrorCode.BAD_PROOF
    # The certificate's key, a signature of something else than the challenge.
    reply = _prove(_client(gateway, fleet_ca, tmp_path, closing, "mine", mine),
                   mine.spki_der, lambda data: mine.sign(data + b"!"))
    assert isinstance(reply, EnrollReject) and reply.code is ErrorCode.BAD_PROOF
    assert gateway.devices() == []
    assert gateway.metrics()["enrollments_rejected"] == 3
    # The real proof gets in.
    reply = _prove(_client(gateway, fleet_ca, tmp_path, closing, "mine", mine),
                   mine.spki_der, mine.sign)
    assert isinstance(reply, Welcome) and reply.enrolled_now



@pytest.mark.hil_gateway(max_devices=1)
def test_devices_enrolling_at_once_never_take_the_gateway_past_max_devices(
    gateway, fleet_ca, tmp_path, closing,
):
    """Both devices say Hello while the gateway has room for one, so both are challenged;
    the first proof takes the place, the second is refused for capacity (it was enrolled
    too, past max_devices, when the limit was checked at the Hello only)."""
    first = _client(gateway, fleet_ca, tmp_path, closing, "first")
    second = _client(gateway, fleet_ca, tmp_path, closing, "second")
    challenges = []
    for client in (first, second):
        client.send_message(Hello(None, INFO))
        challenges.append(client.receive())
    assert all(isinstance(c, EnrollChallenge) for c in challenges)
    for client, challenge in zip((first, second), challenges, strict=True):
        creds = client.creds
        client.send_message(EnrollProof(creds.spki_der,
                                        creds.sign(ENROLL_CONTEXT + challenge.nonce)))
    welcome, refused = first.receive(), second.receive()
    assert isinstance(welcome, Welcome) and welcome.enrolled_now
    assert isinstance(refused, EnrollReject) and refused.code is ErrorCode.CAPACITY
    assert "during enrollment" in refused.reason
    assert [d.device_id for d in gateway.devices()] == [welcome.device_id.hex()]

@pytest.mark.parametrize("how", ["identity", "crl"])
def test_a_device_revoked_while_it_proves_its_key_is_refused_not_enrolled(
    gateway, fleet_ca, tmp_path, closing, how,
):
    """Revoked (its identity, or a CRL listing its certificate) after its admission, while
    the gateway waits for its proof: it gets Error(REVOKED), as at the admission, and is not
    enrolled. revoke() and load_crl() end the welcomed connections only, and this one was
    welcomed and enrolled, revoked certificate and all, when revocation was checked at the
    admission only."""
    client = _client(gateway, fleet_ca, tmp_path, closing, "revoked-meanwhile")
    client.send_message(Hello(None, INFO))
    challenge = client.receive()
    assert isinstance(challenge, EnrollChallenge)  # admitted: the gateway awaits the proof
    if how == "identity":
        gateway.revoke(client.creds.identity)
    else:
        fleet_ca.revoke(client.creds)
        gateway.load_crl(fleet_ca.crl_pem())
    client.send_message(EnrollProof(client.creds.spki_der,
                                    client.creds.sign(ENROLL_CONTEXT + challenge.nonce)))
    reply = client.receive()
    assert isinstance(reply, Error) and reply.code is ErrorCode.REVOKED, reply
    client.assert_closed()
    assert gateway.devices() == []
    assert gateway.metrics().get("enrollments", 0) == 0
    assert gateway.metrics()["refused_revoked"] == 1


def test_a_crl_loaded_while_a_connection_is_being_torn_down_still_revokes_the_others(
    gateway, fleet_ca, tmp_path, closing,
):
    """A connection reset by its peer releases its socket at once, and stays registered
    until its handler runs again. A CRL loaded in between reached it, read its certificate
    from the closed socket (AttributeError), and stopped there: the CRL was in force, but
    the connected devices it listed after that one kept their sessions, and the SIGHUP
    reload died with the error instead of saying "crl loaded"."""
    reset, listed = (_client(gateway, fleet_ca, tmp_path, closing, name)
                     for name in ("reset", "listed"))
    reset_id = reset.enroll_or_welcome().device_id.hex()  # first: iterated first
    listed.enroll_or_welcome()
    fleet_ca.revoke(listed.creds)
    crl = fleet_ca.crl_pem()

    def reset_then_load() -> frozenset[int]:  # one loop callback: no handler runs between
        gw = gateway.gateway
        gw.connections[reset_id].stream.abort()  # as a reset does: the socket is released
        return gw.load_crl(crl, fleet_ca.cert)

    assert listed.creds.serial in gateway.loop.call(reset_then_load)
    reply = listed.receive()
    assert isinstance(reply, Error) and reply.code is ErrorCode.REVOKED, reply
    listed.assert_closed()


@pytest.mark.hil_gateway(enrollment_timeout_s=0.3)
def test_a_device_that_never_proves_is_dropped_after_the_enrollment_timeout(
    gateway, fleet_ca, tmp_path, closing,
):
    client = _client(gateway, fleet_ca, tmp_path, closing, "silent")
    client.send_message(Hello(None, INFO))
    assert isinstance(client.receive(), EnrollChallenge)
    started = time.monotonic()
    error = client.read_error()  # no proof sent: the gateway gives up on its own
    waited = time.monotonic() - started
    assert error.code is ErrorCode.TIMEOUT
    assert error.reason == "no message within 0.3s"
    assert 0.25 <= waited < 5.0  # the enrollment timeout, not the Hello's nor a frame's
    client.assert_closed()
    assert gateway.devices() == []
    assert gateway.metrics().get("enrollments", 0) == 0


def test_only_the_enrollment_deadline_becomes_a_timeout_error_frame() -> None:
    """`_expect` turns its own deadline into ProtocolError TIMEOUT; a TimeoutError from below
    it (a socket's ETIMEDOUT) is no deadline of the protocol's and goes up as it is."""
    handler = object.__new__(ConnectionHandler)  # only _expect and _next_message are used

    async def never() -> None:
        await asyncio.Event().wait()

    async def timed_out_socket() -> None:
        raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    async def scenario() -> None:
        handler._next_message = never  # type: ignore[method-assign]
        with pytest.raises(ProtocolError) as raised:
            await handler._expect(0.05)
        assert raised.value.code is ErrorCode.TIMEOUT
        handler._next_message = timed_out_socket  # type: ignore[method-assign]
        with pytest.raises(TimeoutError) as lower:
            await handler._expect(10.0)
        assert lower.value.errno == errno.ETIMEDOUT

    asyncio.run(scenario())


def test_a_socket_timing_out_ends_the_connection_as_a_link_failure() -> None:
    """A socket's own ETIMEDOUT (a TimeoutError from the TLS layer's read) goes up from the
    read as it is, and run() ends the connection with it as the reason, as it does for any
    other failure of the link: it neither escapes run() nor turns into another error."""
    timed_out = TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    class Link:  # the parts of DeviceConnection that _next_message and run() touch
        device = None
        asked: set[object] = set()
        pending: list[object] = []
        close_reason: str | None = None

        async def read(self, frame_timeout: float) -> bytes:
            raise timed_out

        def close(self, reason: str) -> None:
            if self.close_reason is None:
                self.close_reason = reason

    class Registry:
        detached: list[object] = []

        def detach(self, conn: object) -> None:
            self.detached.append(conn)

    handler = object.__new__(ConnectionHandler)
    link, registry = Link(), Registry()
    handler.conn, handler.registry, handler._liveness = link, registry, None  # type: ignore[assignment]
    handler.config = type("Config", (), {"frame_timeout_s": 1.0, "hello_timeout_s": 5.0})()  # type: ignore[assignment]

    async def scenario() -> None:
        with pytest.raises(TimeoutError) as raised:
            await handler._next_message()
        assert raised.value is timed_out
        await handler.run()  # the handshake's first read fails the same way: no exception

    asyncio.run(scenario())
    assert link.close_reason == "TimeoutError: [Errno 110] Connection timed out"
    assert registry.detached == [link]
