"""The firmware contract's checks, one or two per clause (docs/firmware-contract.md, C1..C8).

Run against your image: ``pytest --pyargs wasmbed_hil.conformance --hil-backend=qemu
--hil-firmware=my.elf``. Every wait is bounded by --hil-timeout (default 10 s) or by a bound
derived from the heartbeat interval below; a failure names the clause it checks.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from wasmbed_hil.bench.device import DeviceHandle, Lifecycle
from wasmbed_hil.bench.link.impairments import Bandwidth
from wasmbed_hil.bench.message_faults import Drop
from wasmbed_hil.conformance.contract import clause
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import DevicePhase, ErrorCode, Outcome

#: The Welcome's heartbeat interval in these checks, and the gateway's liveness timeout.
HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 2.5
#: Heartbeats the gateway must see in a row (C3).
HEARTBEATS = 6

pytestmark = pytest.mark.hil_gateway(
    heartbeat_interval_s=HEARTBEAT_INTERVAL_S, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
)


def _wait_console_event(device: DeviceHandle, state: Lifecycle, timeout: float) -> None:
    """Wait until the device's console has shown lifecycle `state` at least once (lifecycle
    events come from the console lines of bench.console: the device may be past it)."""
    log = device.lifecycle_events

    def seen() -> bool:
        return any(e.data.get("state") == state.value for e in log.events("lifecycle"))

    device.loop.run(log.wait_for(seen, timeout, f"a console line meaning {state.value!r}"),
                    timeout + 5)


def test_c1_boots_and_prints_the_connecting_line(device_factory, hil_timeout):
    device = device_factory("c1", online=False)
    with clause("C1", device):
        _wait_console_event(device, Lifecycle.CONNECTING, hil_timeout)
        assert any("connecting to " in line for line in device.console), (
            "no console line `connecting to HOST:PORT`")


def test_c2_enrolls_and_prints_online_as_its_id(gateway, device_factory, hil_timeout):
    device = device_factory("c2", online=False)
    with clause("C2", device):
        device_id = device.wait_online(hil_timeout)
        assert len(device_id) == 32, f"device id {device_id!r} is not 32 hex digits"
        status = gateway.wait_phase(device, DevicePhase.CONNECTED, hil_timeout)
        assert status.device_id == device_id, (
            f"the console says `online as {device_id}`, the gateway enrolled "
            f"{status.device_id}")


def test_c3_heartbeats_arrive_at_the_configured_interval(gateway, device, hil_timeout):
    bound = HEARTBEATS * HEARTBEAT_INTERVAL_S * 4 + hil_timeout
    with clause("C3", device):
        since = gateway.events("heartbeat", device)[-1].seq if gateway.events(
            "heartbeat", device) else 0
        status = gateway.wait_heartbeats(device, HEARTBEATS, timeout=bound)
        assert status.phase is DevicePhase.CONNECTED, f"phase {status.phase.value}"
        beats = [e for e in gateway.events("heartbeat", device) if e.seq > since]
        mean = (beats[-1].at - beats[0].at) / (len(beats) - 1)
        gaps = [round(b.at - a.at, 3) for a, b in pairwise(beats)]
        assert mean >= HEARTBEAT_INTERVAL_S / 2, (
            f"heartbeats every {mean:.3f}s on average, the Welcome asked for one every "
            f"{HEARTBEAT_INTERVAL_S}s (gaps {gaps})")
        assert status.uptime_ms > 0 and status.memory_free > 0, (
            f"a heartbeat's uptime_ms={status.uptime_ms}, memory_free={status.memory_free}")


def test_c4_a_module_deploys_runs_and_its_result_is_acknowledged(gateway, device, wasm,
                                                                 hil_timeout):
    with clause("C4", device):
        result = gateway.run(device, wasm("add"), "adder", args=(40, 2),
                             timeout=hil_timeout * 2)
        assert result.outcome is Outcome.RETURNED, f"outcome {result.outcome}: {result.detail}"
        assert result.values == (42,), f"add(40, 2) returned {result.values}"
        # The result is acknowledged, and once acknowledged not sent again: two heartbeats
        # later the gateway has seen it exactly once.
        gateway.wait_heartbeats(device, 2, timeout=hil_timeout)
        trace = gateway.trace(device)
        sent = [e for e in trace if e[1] == "in" and e[3] == "ExecutionResult"
                and e[4].get("run_id") == result.run_id]
        acked = [e for e in trace if e[1] == "out" and e[3] == "ResultAck"
                 and e[4].get("run_id") == result.run_id]
        assert acked, f"the gateway sent no ResultAck for run {result.run_id}"
        assert len(sent) == 1, (
            f"the ExecutionResult of run {result.run_id} came {len(sent)} times: it must stop "
            "once the ResultAck arrives")
        app = [a for a in gateway.device(device).apps if a.app_id == "adder"]
        assert app, "the installed application is missing from the device's heartbeats"


def test_c4_an_unacknowledged_result_comes_again_first_on_the_next_connection(
        gateway, device, wasm, hil_timeout):
    """The gateway's ResultAck is lost and the link cut: on the next connection the result
    comes again, before the device's first heartbeat there."""
    device_id = device.device_id
    with clause("C4", device):
        assert gateway.deploy(device, wasm("add"), "adder").state == "installed"
        with gateway.message_faults(Drop(reply_to="ExecutionResult", nth=1)):
            run_id = gateway.start_app(device, "adder", "main", (40, 2))
            gateway.wait_result(device, "adder", run_id, timeout=hil_timeout * 2)
            fault = gateway.wait_event("message_fault", timeout=hil_timeout)
            device.faults.cut_link()
            closed = gateway.wait_event("connection", lambda e: e.device_id == device_id
                                        and e.data.get("state") == "closed",
                                        since=fault.seq, timeout=hil_timeout)
            gateway.wait_event("connection", lambda e: e.device_id == device_id
                               and e.data.get("state") == "open", since=closed.seq,
                               timeout=hil_timeout * 3)
            gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        trace = gateway.trace(device)
        welcome = max(i for i, e in enumerate(trace) if e[1] == "out" and e[3] == "Welcome")
        first = [e for e in trace[welcome + 1:] if e[1] == "in"
                 and e[3] in ("ExecutionResult", "Heartbeat")]
        assert first and first[0][3] == "ExecutionResult" and first[0][4].get(
            "run_id") == run_id, (
            f"after the Welcome the device sent {[e[3] for e in first[:3]]}: the result of run "
            f"{run_id}, never acknowledged, must come again before the first heartbeat")


def test_c5_a_revoked_certificate_is_refused_and_the_console_says_so(
        gateway, device_factory, fleet_ca, hil_timeout):
    creds = fleet_ca.issue_device("c5-revoked")
    gateway.revoke(creds.identity)
    device = device_factory("c5-revoked", credentials=creds, online=False)
    with clause("C5", device):
        code, _ = device.wait_rejected(hil_timeout)
        assert code is ErrorCode.REVOKED, f"refused with {code.name}, not REVOKED"
        assert any("REVOKED" in line for line in device.console), (
            "no console line names the refusal (REVOKED)")
        assert gateway.devices() == [], "a revoked device was enrolled"


def test_c5_an_unknown_certificate_is_refused_and_the_device_backs_off(
        gateway, device_factory, fleet_ca, hil_timeout):
    stray = FleetCA.create("conformance rogue CA").issue_device("c5-stray")
    creds = replace(stray, ca_cert=fleet_ca.cert)  # it trusts the real gateway
    device = device_factory("c5-stray", credentials=creds, online=False)
    with clause("C5", device):
        first = gateway.wait_event("handshake_failed", timeout=hil_timeout)
        gateway.wait_event("handshake_failed", since=first.seq, timeout=hil_timeout)
        _wait_console_event(device, Lifecycle.BACKOFF, hil_timeout)
        assert device.lifecycle is not Lifecycle.ONLINE, "online with an unknown certificate"
        assert gateway.devices() == [], "a device of another CA was enrolled"


def test_c6_silence_command_stops_and_resumes_heartbeats(gateway, device, hil_timeout):
    with clause("C6", device):
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        device.faults.silence(True)  # types `silent 1` on the console
        gateway.wait_phase(device, DevicePhase.UNREACHABLE, HEARTBEAT_TIMEOUT_S + hil_timeout)
        device.faults.silence(False)  # `silent 0`
        gateway.wait_phase(device, DevicePhase.CONNECTED, hil_timeout)
        gateway.wait_heartbeats(device, 2, timeout=hil_timeout)
        assert device.stats()["connections"] == 1, (
            "the session was not kept through the silence (the device reconnected)")


def test_c7_reconnects_after_a_link_cut_as_the_same_device(gateway, device, hil_timeout):
    device_id = device.device_id
    with clause("C7", device):
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        device.faults.cut_link()
        closed = gateway.wait_event("connection", lambda e: e.device_id == device_id
                                    and e.data.get("state") == "closed", timeout=hil_timeout)
        gateway.wait_event("connection", lambda e: e.device_id == device_id
                           and e.data.get("state") == "open", since=closed.seq,
                           timeout=hil_timeout * 3)
        assert device.wait_online(hil_timeout * 3) == device_id, "came back as another device"
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        assert len(gateway.devices()) == 1, "the gateway enrolled it a second time"


def test_c7_a_record_slower_than_the_dead_link_limit_keeps_the_session(
        gateway, device, wasm, hil_timeout):
    """Bytes count as they arrive, not when their TLS record is whole: one deployment
    chunk's record crosses a line paced to take twice the dead-link limit (three intervals),
    and the device keeps its session through it."""
    with clause("C7", device):
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        info = gateway.device(device).info
        assert info is not None, "the gateway has no DeviceInfo from the Hello"
        frame = min(info.max_frame_size, gateway.config.max_frame_size)
        dead_after = 3 * HEARTBEAT_INTERVAL_S
        line = Bandwidth(frame / (2 * dead_after))  # one record: twice the limit
        module = wasm.data(frame + frame // 2, seed=7)  # two chunks, the first one whole
        mark = gateway.events()[-1].seq
        with device.link.impair(line):
            dep = gateway.deploy(device, module, "trickle",
                                 timeout=len(module) / line.bytes_per_s * 3 + hil_timeout)
        assert dep.state == "installed", f"deployment {dep.state}: {dep.error}"
        closed = [e.describe() for e in gateway.events("connection", device)
                  if e.seq > mark and e.data.get("state") == "closed"]
        assert not closed, (
            f"the device dropped its session while a {frame}-byte record took "
            f"{frame / line.bytes_per_s:.1f}s to arrive (dead-link limit {dead_after}s): "
            "count the link's bytes as they arrive, before TLS")


def test_c8_comes_back_as_itself_after_a_reset(gateway, device, hil_timeout):
    device_id = device.device_id
    with clause("C8", device):
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        device.reset()
        assert device.wait_online(hil_timeout) == device_id, "came back as another device"
        gateway.wait_heartbeats(device, 1, timeout=hil_timeout)
        assert len(gateway.devices()) == 1, "the gateway enrolled it a second time"
