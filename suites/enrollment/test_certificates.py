"""Certificates and identities, on every backend: the firmware gets its identity and the
gateway's expected name from its per-device blob, the virtual device from its flash.

What the gateway refuses (expired, not yet valid, another CA, revoked) it refuses at the TLS
handshake or with Error(REVOKED), and the device backs off before trying again; what the
device refuses (a gateway certificate from another CA or for another name) it refuses itself.
Validity dates of the gateway's certificate are checked only by a device with a clock
(docs/protocol.md section 3; firmware/README.md).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import DevicePhase, ErrorCode

# Both backends run with a 1 s reject backoff in the harness (the firmware's blob
# configuration HARNESS_TIMING, VirtualDeviceConfig.reject_backoff_s) and reconnect after other
# failures from 50 ms, doubling. The bounds below are lower bounds: load only lengthens gaps.
REJECT_BACKOFF_S = 1.0
BACKOFF_INITIAL_S = 0.05


def has_clock(device) -> bool:
    """The virtual device reads the host's clock; the MPS2-AN385 has no real-time clock."""
    return device.backend == "virtual"


def gaps_between(gateway, kind: str, count: int, predicate=None) -> list[float]:
    """Wait for `count` gateway events of `kind` and return the times between them."""
    events, since = [], 0
    for _ in range(count):
        event = gateway.wait_event(kind, predicate, timeout=15, since=since)
        events.append(event)
        since = event.seq
    return [b.at - a.at for a, b in pairwise(events)]


def test_device_certificate_not_yet_valid_is_refused_and_the_device_backs_off(
    gateway, device_factory, fleet_ca
):
    now = datetime.now(UTC)
    creds = fleet_ca.issue_device(
        "early", not_before=now + timedelta(days=1), not_after=now + timedelta(days=30)
    )
    dev = device_factory("early", credentials=creds, online=False)
    gaps = gaps_between(gateway, "handshake_failed", 3)
    reasons = {e.data["reason"].upper() for e in gateway.events("handshake_failed")}
    assert reasons == {"CERTIFICATE_VERIFY_FAILED"}
    assert min(gaps) >= BACKOFF_INITIAL_S * 0.9, gaps
    assert dev.lifecycle is not Lifecycle.ONLINE
    assert gateway.devices() == []


def test_device_certificate_expired_is_refused_and_the_device_backs_off(
    gateway, device_factory, fleet_ca
):
    now = datetime.now(UTC)
    creds = fleet_ca.issue_device(
        "late", not_before=now - timedelta(days=30), not_after=now - timedelta(seconds=1)
    )
    dev = device_factory("late", credentials=creds, online=False)
    gaps = gaps_between(gateway, "handshake_failed", 3)
    assert min(gaps) >= BACKOFF_INITIAL_S * 0.9, gaps
    assert dev.lifecycle is not Lifecycle.ONLINE
    assert gateway.devices() == []


def test_device_certificate_from_another_ca_is_refused_and_the_device_backs_off(
    gateway, device_factory, fleet_ca
):
    rogue = FleetCA.create("rogue CA").issue_device("stray")
    creds = replace(rogue, ca_cert=fleet_ca.cert)  # it trusts the real gateway
    dev = device_factory("stray", credentials=creds, online=False)
    gaps = gaps_between(gateway, "handshake_failed", 3)
    assert min(gaps) >= BACKOFF_INITIAL_S * 0.9, gaps
    assert dev.lifecycle is not Lifecycle.ONLINE
    assert gateway.devices() == []


def test_revoked_while_connected_is_dropped_and_waits_the_reject_backoff(gateway, device):
    gateway.wait_phase(device, DevicePhase.CONNECTED)
    gateway.revoke(device.identity)
    code, _ = device.wait_rejected()
    assert code is ErrorCode.REVOKED
    gateway.wait_event("phase", lambda e: e.device_id == device.device_id
                       and e.data["phase"] == DevicePhase.DISCONNECTED.value
                       and "REVOKED" in e.data["why"])
    # Each later attempt is refused before any message is read, a reject backoff apart.
    gaps = gaps_between(gateway, "rejected", 3, lambda e: e.data["code"] == "REVOKED")
    assert min(gaps) >= REJECT_BACKOFF_S * 0.9, gaps
    assert gateway.device(device).phase is DevicePhase.DISCONNECTED


def test_device_refuses_a_gateway_certificate_for_another_name(gateway, device_factory):
    gateway.reissue_certificate(hosts=("gateway.elsewhere.example",))
    dev = device_factory("careful", online=False)
    dev.wait_lifecycle(Lifecycle.BACKOFF)
    # Python ssl: "Hostname mismatch"; mbedTLS: "...Common Name (CN) does not match...".
    pattern = re.compile(r"(?i)hostname mismatch|CN\) does not match")
    assert any(pattern.search(line) for line in dev.console), dev.console_tail()
    assert gateway.devices() == []
    # The same device, the same blob: a certificate for the name it expects is accepted.
    gateway.reissue_certificate()
    dev.wait_online(15)


def test_gateway_certificate_dates_are_checked_by_a_device_with_a_clock_only(
    gateway, device_factory
):
    now = datetime.now(UTC)
    gateway.reissue_certificate(not_before=now - timedelta(days=30),
                                not_after=now - timedelta(days=1))
    dev = device_factory("dated", online=False)
    if has_clock(dev):
        dev.wait_lifecycle(Lifecycle.BACKOFF)
        assert any("expired" in line for line in dev.console), dev.console_tail()
        assert gateway.devices() == []
    else:  # no real-time clock: trust rests on the CA and the name (firmware/README.md)
        dev.wait_online(15)
        gateway.wait_phase(dev, DevicePhase.CONNECTED)
