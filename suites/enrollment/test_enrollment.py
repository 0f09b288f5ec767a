"""Enrollment: who may join the fleet, and how the refusals read."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.pki import FleetCA, PkiError
from wasmbed_hil.protocol import DevicePhase, ErrorCode


def test_pairing_on_enrolls_and_connects(gateway, device):
    status = gateway.wait_phase(device, DevicePhase.CONNECTED)
    assert status.device_id == device.device_id
    assert status.name == device.name
    assert status.identity == device.identity
    assert status.history[:3] == [
        DevicePhase.ENROLLING,
        DevicePhase.ENROLLED,
        DevicePhase.CONNECTED,
    ]
    enrolled = gateway.events("enrolled", device)
    assert [e.data["new"] for e in enrolled] == [True]


@pytest.mark.hil_gateway(pairing=False)
def test_pairing_off_rejects_unknown_device_with_reason(gateway, device_factory):
    dev = device_factory("stranger", online=False)
    code, reason = dev.wait_rejected()
    assert code is ErrorCode.PAIRING_DISABLED
    assert "pairing" in reason
    assert gateway.devices() == []
    assert dev.device_id is None


@pytest.mark.hil_gateway(pairing=False)
def test_pairing_turned_on_admits_a_waiting_device(gateway, device_factory):
    dev = device_factory("patient", online=False)
    dev.wait_rejected()
    gateway.pairing = True
    dev.wait_online()
    assert gateway.device(dev).phase is DevicePhase.CONNECTED


def test_certificate_from_another_ca_is_refused_at_handshake(gateway, device_factory, fleet_ca):
    rogue = FleetCA.create("rogue CA").issue_device("rogue")
    # It trusts the real gateway, but its own certificate comes from another CA.
    creds = replace(rogue, ca_cert=fleet_ca.cert)
    dev = device_factory("rogue", credentials=creds, online=False)
    event = gateway.wait_event("handshake_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in event.data["reason"].upper()
    assert dev.lifecycle is not Lifecycle.ONLINE
    assert gateway.devices() == []


def test_device_refuses_a_gateway_from_another_ca(gateway, device_factory):
    dev = device_factory(
        "wary", credentials=FleetCA.create("other").issue_device("wary"), online=False
    )
    dev.wait_lifecycle(Lifecycle.BACKOFF)
    # Both devices say so on their console: "CERTIFICATE_VERIFY_FAILED" (Python ssl) or
    # "Certificate verification failed" (mbedTLS).
    assert any(re.search(r"(?i)certificate.?verif", line) for line in dev.console), (
        dev.console_tail()
    )
    assert gateway.devices() == []


def test_expired_certificate_is_refused(gateway, device_factory, fleet_ca):
    now = datetime.now(UTC)
    creds = fleet_ca.issue_device(
        "expired", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    device_factory("expired", credentials=creds, online=False)
    event = gateway.wait_event("handshake_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in event.data["reason"].upper()
    assert gateway.devices() == []


def test_revoked_identity_is_dropped_and_refused(gateway, device):
    gateway.revoke(device.identity)
    code, _ = device.wait_rejected()
    assert code is ErrorCode.REVOKED
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
    # It keeps trying and keeps being refused before any message is read.
    gateway.wait_event("rejected", lambda e: e.data["code"] == "REVOKED")
    assert gateway.device(device).phase is DevicePhase.DISCONNECTED


def test_certificate_listed_in_crl_is_refused(gateway, device_factory, fleet_ca):
    creds = fleet_ca.issue_device("listed")
    fleet_ca.revoke(creds)
    gateway.load_crl(fleet_ca.crl_pem())
    dev = device_factory("listed", credentials=creds, online=False)
    code, _ = dev.wait_rejected()
    assert code is ErrorCode.REVOKED
    assert gateway.devices() == []


def test_crl_revocations_survive_a_gateway_restart(gateway, device_factory, fleet_ca):
    creds = fleet_ca.issue_device("listed-then-restarted")
    dev = device_factory("listed-then-restarted", credentials=creds)
    fleet_ca.revoke(creds)
    gateway.load_crl(fleet_ca.crl_pem())
    gateway.wait_phase(dev, DevicePhase.DISCONNECTED)  # its live session is dropped
    gateway.restart()
    # The restarted gateway (same local cache) still refuses it.
    gateway.wait_event("rejected", lambda e: e.data["code"] == "REVOKED")
    code, _ = dev.wait_rejected()
    assert code is ErrorCode.REVOKED
    assert DevicePhase.CONNECTED not in gateway.device(dev).history


def test_an_older_crl_cannot_replace_a_newer_one(gateway, device_factory, fleet_ca):
    """A replayed older CRL would reinstate what was revoked since: it is refused, also after
    a restart (the loaded CRL's number is kept in the local cache)."""
    stale = fleet_ca.crl_pem()  # issued before the revocation: lists nothing
    creds = fleet_ca.issue_device("revoked-later")
    fleet_ca.revoke(creds)
    gateway.load_crl(fleet_ca.crl_pem())
    with pytest.raises(PkiError, match="older than the loaded CRL"):
        gateway.load_crl(stale)
    gateway.restart()
    with pytest.raises(PkiError, match="older than the loaded CRL"):
        gateway.load_crl(stale)
    assert gateway.metrics()["crl_refused"] == 1  # this incarnation's count
    dev = device_factory("revoked-later", credentials=creds, online=False)
    code, _ = dev.wait_rejected()
    assert code is ErrorCode.REVOKED


def test_a_crl_not_signed_by_the_fleet_ca_is_refused_and_changes_nothing(
    gateway, device_factory, fleet_ca
):
    creds = fleet_ca.issue_device("kept")
    fleet_ca.revoke(creds)
    gateway.load_crl(fleet_ca.crl_pem())
    other = FleetCA.create("other")
    other.revoke(other.issue_device("stranger"))
    with pytest.raises(PkiError, match="not signed by"):
        gateway.load_crl(other.crl_pem())
    with pytest.raises(PkiError, match="not a PEM or DER CRL"):
        gateway.load_crl(b"garbage")
    gateway.restart()
    dev = device_factory("kept", credentials=creds, online=False)
    code, _ = dev.wait_rejected()
    assert code is ErrorCode.REVOKED


def test_enrolling_twice_is_idempotent(gateway, device):
    first_id = device.device_id
    device.power_off()
    device.forget_enrollment()
    device.power_on()
    assert device.wait_online() == first_id
    assert len(gateway.devices()) == 1
    assert len(gateway.events("enrolled", device)) == 1
    welcomes = [fields for _, d, _, kind, fields in gateway.trace(device) if kind == "Welcome"]
    assert [w["enrolled_now"] for w in welcomes] == [True, False]


LYING_DEVICE = "needs a device that lies during enrollment (a virtual-device fault hook); the " \
    "firmware cannot be told to, and the gateway's check is the same for every device"


@pytest.mark.backend_specific("virtual", reason=LYING_DEVICE)
def test_public_key_differing_from_certificate_is_refused(gateway, device_factory, fleet_ca):
    dev = device_factory("impostor", start=False)
    dev.faults.enroll_with(fleet_ca.issue_device("someone-else"))
    dev.power_on()
    code, reason = dev.wait_rejected()
    assert code is ErrorCode.KEY_MISMATCH
    assert "certificate" in reason
    assert gateway.devices() == []


@pytest.mark.backend_specific("virtual", reason=LYING_DEVICE)
def test_bad_enrollment_signature_is_refused(gateway, device_factory):
    dev = device_factory("forger", start=False)
    dev.faults.corrupt_proof()
    dev.power_on()
    code, _ = dev.wait_rejected()
    assert code is ErrorCode.BAD_PROOF
    assert gateway.devices() == []


@pytest.mark.backend_specific(
    "virtual", reason="mbedTLS, the firmware's TLS, cannot use Ed25519 certificates"
)
def test_ed25519_device_enrolls(gateway, device_factory):
    dev = device_factory("ed-device", key_type="ed25519")
    assert gateway.device(dev).phase is DevicePhase.CONNECTED


def test_enrolled_device_reconnects_without_pairing(gateway, device):
    device_id = device.device_id
    gateway.pairing = False
    device.reboot()
    assert device.wait_online() == device_id
    assert [e.data["new"] for e in gateway.events("enrolled", device)] == [True]


@pytest.mark.hil_gateway(pairing=True, pairing_timeout_s=0.3)
def test_pairing_mode_turns_itself_off(gateway, device_factory):
    gateway.wait_event("pairing", lambda e: e.data["enabled"] is False)
    assert gateway.pairing is False
    code, _ = device_factory("late", online=False).wait_rejected()
    assert code is ErrorCode.PAIRING_DISABLED


@pytest.mark.hil_gateway(max_devices=2)
def test_full_gateway_refuses_new_devices_but_keeps_enrolled_ones(gateway, fleet, device_factory):
    first, _second = fleet(2)
    code, reason = device_factory("third", online=False).wait_rejected()
    assert code is ErrorCode.CAPACITY
    assert "2" in reason
    first.reboot()
    first.wait_online()
    assert len(gateway.devices()) == 2


def test_device_reports_its_info_on_request(gateway, device):
    hello_info = gateway.device(device).info
    info = gateway.device_info(device)
    assert info.runtime in ("wasmtime", "wasm3")
    assert info.max_frame_size >= 1024 and info.window >= 1
    # The same device answers the same, but for its free memory.
    assert info.architecture == hello_info.architecture
    assert info.max_module_size == hello_info.max_module_size
    assert gateway.device(device).info == info
