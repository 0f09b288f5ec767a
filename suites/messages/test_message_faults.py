"""Message faults at the gateway: each fault on deploy, heartbeat and run, and the outcome
docs/protocol.md states for it (section 12, "Repeated, lost, late and reordered messages").

The faults act in the gateway's session layer (plaintext), so the same scenarios run on the
virtual device and on the real firmware under QEMU.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from wasmbed_hil.bench.backends import get_backend
from wasmbed_hil.bench.message_faults import Corrupt, Delay, Drop, Duplicate, Reorder
from wasmbed_hil.gateway import ConnectionLost, RunRequest
from wasmbed_hil.protocol import DevicePhase, ErrorCode

# A lost message costs one reply timeout before the gateway gives up the connection and the
# device reconnects: shorter than the default (30 s) so that those scenarios stay quick, long
# enough that no answer comes after it on a loaded machine (a spurious timeout would show as
# one connection more than the case expects). The firmware under QEMU must hash and validate
# a module within it: 8 s. A backend that states how fast its devices answer
# (Backend.answers_within_s: 3 s for the virtual device) uses that instead.
FIRMWARE_REPLY_TIMEOUT_S = 8.0
LARGE = 20_000  # with 4 KiB frames: six chunks


@pytest.fixture
def gateway_config(gateway_config, hil_backend_name):
    within = get_backend(hil_backend_name).answers_within_s
    return replace(gateway_config, reply_timeout_s=within or FIRMWARE_REPLY_TIMEOUT_S)


def _deploy_and_run(gateway, dev, module: bytes, app_id: str, entry: str,
                    args: tuple[int, ...] = (), timeout: float = 40.0):
    dep = gateway.deploy(dev, module, app_id, run=RunRequest(entry, args), timeout=timeout)
    assert dep.state == "installed", f"{dep.error_code} {dep.error}"
    run_id = gateway.wait_run_started(dep, timeout)
    return dep, gateway.wait_result(dev, app_id, run_id, timeout)


def _window(gateway, dev) -> int:
    info = gateway.device(dev).info
    assert info is not None
    return info.window


@pytest.fixture
def narrow(device_factory):
    """A device with 4 KiB frames, so that a 20 kB module travels in several chunks."""
    return device_factory("narrow", max_frame_size=4096)


# ------------------------------------------------------------------- deploy, several chunks
# (rule, connections the transfer needs: 1 nothing lost, 2 resumed once; a pair: with a
# window of several chunks, with a window of 1)
DEPLOY_CASES = {
    "duplicated-chunk": (Duplicate("DeployChunk", nth=2), 1),
    "duplicated-last-chunk": (Duplicate("DeployChunk", nth=5), 1),
    "delayed-chunk": (Delay("DeployChunk", 0.5, nth=2), 1),
    "dropped-chunk": (Drop("DeployChunk", nth=2), 2),
    # window > 1: the 3rd chunk is a gap (BAD_OFFSET); window 1: the 2nd comes late, in order
    "reordered-chunk": (Reorder("DeployChunk", nth=2, hold_s=0.5), (2, 1)),
    "corrupt-chunk-envelope": (Corrupt("DeployChunk", nth=3), 2),
    # window > 1: the 2nd ack covers the 1st; window 1: the reply timeout, then a resume
    "dropped-chunk-ack": (Drop("ChunkAck", nth=1), (1, 2)),
    "dropped-last-chunk-ack": (Drop("ChunkAck", nth=5), 1),
    "duplicated-chunk-ack": (Duplicate("ChunkAck", nth=2), 1),
    "reordered-chunk-ack": (Reorder("ChunkAck", nth=1, hold_s=0.5), 1),
    "corrupt-chunk-ack": (Corrupt("ChunkAck", nth=2), 2),
    "duplicated-deploy-ready": (Duplicate("DeployReady", nth=1), 1),
    "dropped-deploy-ack": (Drop("DeployAck", nth=1), 2),
    "duplicated-deploy-ack": (Duplicate("DeployAck", nth=1), 1),
    "dropped-reply-to-begin": (Drop(reply_to="DeployBegin", nth=1), 2),
    "duplicated-begin": (Duplicate("DeployBegin", nth=1), 1),
    "dropped-begin": (Drop("DeployBegin", nth=1), 2),
}


@pytest.mark.parametrize("case", sorted(DEPLOY_CASES))
def test_deployment_of_several_chunks_survives(gateway, narrow, wasm, case):
    rule, connections = DEPLOY_CASES[case]
    module = wasm.data(LARGE, seed=3)
    with gateway.message_faults(rule) as faults:
        dep, result = _deploy_and_run(gateway, narrow, module, "data", "checksum")
    assert faults.count() == 1, faults.applied()
    assert dep.chunks_sent >= 5
    window = _window(gateway, narrow)
    if isinstance(connections, tuple):
        connections = connections[0] if window > 1 else connections[1]
    closed = [e.data for e in gateway.events("connection", narrow) if e.data["state"] == "closed"]
    assert dep.attempts == connections, (window, closed)
    assert result.values == (wasm.data_checksum(LARGE, seed=3),)
    assert len(gateway.results(narrow, "data")) == 1
    assert gateway.metrics().get("duplicate_results", 0) == 0


def test_corrupt_chunk_data_fails_with_digest_mismatch_then_redeploys(gateway, narrow, wasm):
    module = wasm.data(LARGE, seed=4)
    with gateway.message_faults(Corrupt("DeployChunk", nth=2, mode="last-byte")) as faults:
        dep = gateway.deploy(narrow, module, "data", timeout=30)
    assert faults.count("corrupt", "DeployChunk") == 1
    assert dep.state == "failed" and dep.error_code is ErrorCode.DIGEST_MISMATCH
    again = gateway.deploy(narrow, module, "data", timeout=30)
    assert again.state == "installed" and again.resumed_from == []  # started again at 0


# ------------------------------------------------------------------- deploy, one chunk
SMALL_CASES = {
    "dropped-chunk": (Drop("DeployChunk", nth=1), 2),
    "duplicated-chunk": (Duplicate("DeployChunk", nth=1, copies=2), 1),
    "reordered-chunk": (Reorder("DeployChunk", nth=1, hold_s=0.3), 1),
    "dropped-chunk-ack": (Drop("ChunkAck", nth=1), 1),
}


@pytest.mark.parametrize("case", sorted(SMALL_CASES))
def test_deployment_of_one_chunk_survives(gateway, device, wasm, case):
    rule, connections = SMALL_CASES[case]
    with gateway.message_faults(rule) as faults:
        dep, result = _deploy_and_run(gateway, device, wasm("add"), "adder", "main", (40, 2))
    assert faults.count() == 1
    assert dep.chunks_sent >= 1 and dep.attempts == connections
    assert result.values == (42,)
    assert len(gateway.results(device, "adder")) == 1


# ------------------------------------------------------------------- heartbeats
HEARTBEAT_CASES = {
    "dropped-ack": Drop("HeartbeatAck", nth=2),
    "duplicated-ack": Duplicate("HeartbeatAck", nth=2),
    "late-ack": Delay("HeartbeatAck", 0.15, nth=2),
    "dropped-heartbeat": Drop("Heartbeat", nth=2),
    "duplicated-heartbeat": Duplicate("Heartbeat", nth=2),
    "reordered-ack": Reorder(reply_to="Heartbeat", nth=2),
}


@pytest.mark.parametrize("case", sorted(HEARTBEAT_CASES))
def test_heartbeat_faults_leave_the_session_up(gateway, device, case):
    accepted = gateway.metrics().get("connections_accepted", 0)
    with gateway.message_faults(HEARTBEAT_CASES[case]) as faults:
        gateway.wait_event("message_fault", timeout=10)
        gateway.wait_heartbeats(device, 4)
    assert faults.count() == 1
    assert gateway.device(device).phase is DevicePhase.CONNECTED
    assert gateway.metrics().get("connections_accepted", 0) == accepted  # never reconnected
    assert gateway.events("violation") == []


def test_duplicates_at_a_seeded_rate_leave_the_session_up(gateway, device):
    accepted = gateway.metrics().get("connections_accepted", 0)
    rule = Duplicate("HeartbeatAck", rate=0.5, limit=4)
    with gateway.message_faults(rule, seed=7) as faults:
        gateway.wait_heartbeats(device, 12)
    assert 1 <= faults.count("duplicate") <= 4  # about half of the acks, at most `limit`
    assert gateway.metrics().get("connections_accepted", 0) == accepted
    assert gateway.device(device).phase is DevicePhase.CONNECTED


@pytest.mark.parametrize("rule", [Corrupt("Heartbeat", nth=2), Corrupt("HeartbeatAck", nth=2)],
                         ids=["corrupt-heartbeat", "corrupt-ack"])
def test_corrupt_heartbeat_ends_the_connection_and_the_device_returns(gateway, device, rule):
    accepted = gateway.metrics().get("connections_accepted", 0)
    with gateway.message_faults(rule) as faults:
        fault = gateway.wait_event("message_fault", timeout=10)
        # Whoever received the broken frame answers Error(MALFORMED) and closes ...
        closed = gateway.wait_event(
            "connection", lambda e: e.data["state"] == "closed", since=fault.seq)
        assert "MALFORMED" in closed.data["reason"]
        # ... and the device comes back.
        gateway.wait_event("connection", lambda e: e.data["state"] == "open", since=closed.seq,
                           timeout=20)
    assert faults.count("corrupt") == 1
    assert gateway.metrics().get("connections_accepted", 0) == accepted + 1


# ------------------------------------------------------------------- runs and results
def _install(gateway, dev, wasm) -> None:
    dep = gateway.deploy(dev, wasm("add"), "adder")
    assert dep.state == "installed"


def test_duplicated_start_runs_once(gateway, device, wasm):
    _install(gateway, device, wasm)
    with gateway.message_faults(Duplicate("StartApp", nth=1)) as faults:
        run_id = gateway.start_app(device, "adder", "main", (2, 3))
        assert gateway.wait_result(device, "adder", run_id).values == (5,)
        # the repeat is answered with a second StartAck of code 0 (a late reply)
        gateway.wait_heartbeats(device, 2)
    assert faults.count("duplicate", "StartApp") == 1
    # the fault is in the protocol trace and the event log, where a failure report shows it
    marks = [(e[3], e[4]["action"]) for e in gateway.trace(device) if e[1] == "fault"]
    assert marks == [("StartApp", "duplicate")]
    assert [e.data["message"] for e in gateway.events("message_fault")] == ["StartApp"]
    assert gateway.metrics()["message_faults"] == 1
    acks = [e for e in gateway.trace(device) if e[1] == "in" and e[3] == "StartAck"]
    assert [a[4]["code"] for a in acks] == [0, 0]
    assert len(gateway.results(device, "adder")) == 1
    assert gateway.metrics().get("duplicate_results", 0) == 0  # no second run, no second result


def test_duplicated_result_is_recorded_once(gateway, device, wasm):
    _install(gateway, device, wasm)
    with gateway.message_faults(Duplicate("ExecutionResult", nth=1)) as faults:
        run_id = gateway.start_app(device, "adder", "main", (2, 3))
        gateway.wait_result(device, "adder", run_id)
        gateway.wait_heartbeats(device, 1)
    assert faults.count() == 1
    assert len(gateway.results(device, "adder")) == 1
    assert gateway.metrics().get("duplicate_results", 0) == 1


def test_delayed_result_arrives(gateway, device, wasm):
    _install(gateway, device, wasm)
    with gateway.message_faults(Delay("ExecutionResult", 0.3, nth=1)) as faults:
        run_id = gateway.start_app(device, "adder", "main", (4, 5))
        assert gateway.wait_result(device, "adder", run_id).values == (9,)
    assert faults.count("delay") == 1


def test_dropped_start_ack_still_records_the_result(gateway, device, wasm):
    _install(gateway, device, wasm)
    # The StartAck never comes: the start is reported failed after the reply timeout, but
    # the device did start the run, and its result is recorded (section 11).
    with gateway.message_faults(Drop("StartAck", nth=1)) as faults, \
            pytest.raises(TimeoutError):
        gateway.start_app(device, "adder", "main", (1, 1))
    assert faults.count() == 1
    result = gateway.wait_event("result")
    assert result.data["values"] == [2]
    assert len(gateway.results(device, "adder")) == 1


@pytest.mark.parametrize("rule", [Drop("StartApp", nth=1), Corrupt("StartApp", nth=1)],
                         ids=["dropped", "corrupt"])
def test_lost_start_fails_and_nothing_runs(gateway, device, wasm, rule):
    _install(gateway, device, wasm)
    # Dropped: no StartAck within the reply timeout. Corrupt: the device answers
    # Error(MALFORMED) and the connection ends. Either way the start fails.
    with gateway.message_faults(rule) as faults, \
            pytest.raises((TimeoutError, ConnectionLost)):
        gateway.start_app(device, "adder", "main", (1, 1))
    assert faults.count() == 1
    if isinstance(rule, Corrupt):  # the device comes back on a new connection
        fault = gateway.wait_event("message_fault")
        gateway.wait_event("connection", lambda e: e.data["state"] == "open", since=fault.seq,
                           timeout=20)
    run_id = gateway.start_app(device, "adder", "main", (3, 3))
    assert gateway.wait_result(device, "adder", run_id).values == (6,)
    assert [r.run_id for r in gateway.results(device, "adder")] == [run_id]  # nothing else ran


def _reconnect(gateway, dev, since: int) -> None:
    """Cut the device's link and wait for a heartbeat of its next session: the device sends
    its unacknowledged results right after the Welcome, so they are handled by then."""
    device_id = dev.device_id
    dev.faults.cut_link()
    closed = gateway.wait_event("connection", lambda e: e.device_id == device_id
                                and e.data.get("state") == "closed", timeout=20, since=since)
    gateway.wait_event("connection", lambda e: e.device_id == device_id
                       and e.data.get("state") == "open", since=closed.seq, timeout=30)
    gateway.wait_heartbeats(dev, 1, timeout=20)


def _first_after_the_last_welcome(trace, *kinds: str) -> list[str]:
    """The device's messages of `kinds` on its current connection, in order."""
    welcome = max(i for i, e in enumerate(trace) if e[1] == "out" and e[3] == "Welcome")
    return [e[3] for e in trace[welcome + 1:] if e[1] == "in" and e[3] in kinds]


def test_dropped_result_is_sent_again_after_the_next_welcome(gateway, device, wasm):
    """The device keeps each result until its ResultAck (section 11): one the gateway lost
    after TLS delivered it comes again on the next connection and is stored once."""
    _install(gateway, device, wasm)
    with gateway.message_faults(Drop("ExecutionResult", nth=1)) as faults:
        run_id = gateway.start_app(device, "adder", "main", (1, 1))
        fault = gateway.wait_event("message_fault")
        assert gateway.results(device, "adder") == []  # lost on this connection
        _reconnect(gateway, device, since=fault.seq)
        assert gateway.wait_result(device, "adder", run_id).values == (2,)
    assert faults.count("drop", "ExecutionResult") == 1
    assert [r.run_id for r in gateway.results(device, "adder")] == [run_id]
    assert gateway.metrics().get("duplicate_results", 0) == 0
    run_id = gateway.start_app(device, "adder", "main", (2, 2))  # the next run is unaffected
    assert gateway.wait_result(device, "adder", run_id).values == (4,)


def test_dropped_result_ack_leaves_one_result(gateway, device, wasm):
    """The gateway stored the result but its ResultAck is lost: the device sends the result
    again after the next Welcome, the gateway keeps the first and acknowledges the copy."""
    _install(gateway, device, wasm)
    with gateway.message_faults(Drop(reply_to="ExecutionResult", nth=1)) as faults:
        run_id = gateway.start_app(device, "adder", "main", (1, 2))
        assert gateway.wait_result(device, "adder", run_id).values == (3,)
        fault = gateway.wait_event("message_fault")
        _reconnect(gateway, device, since=fault.seq)
    assert faults.count("drop", "ResultAck") == 1
    assert [r.run_id for r in gateway.results(device, "adder")] == [run_id]
    # Before its first heartbeat on the new connection (protocol section 11): a gateway's
    # control-plane agent deploys nothing before that heartbeat, so it knows of the run.
    assert _first_after_the_last_welcome(
        gateway.trace(device), "ExecutionResult", "Heartbeat")[0] == "ExecutionResult"
    metrics = gateway.metrics()
    assert metrics["duplicate_results"] == 1 and metrics["result_acks"] == 2
    assert gateway.events("violation") == []


def test_duplicated_stop_with_remove_is_harmless(gateway, device, wasm):
    _install(gateway, device, wasm)
    with gateway.message_faults(Duplicate("StopApp", nth=1)) as faults:
        gateway.stop_app(device, "adder", remove=True)
        # the copy finds nothing installed: StopAck(UNKNOWN_APP), a late reply at the gateway
        gateway.wait_heartbeats(device, 2)
    assert faults.count() == 1
    acks = [e[4]["code"] for e in gateway.trace(device) if e[1] == "in" and e[3] == "StopAck"]
    assert acks == [0, int(ErrorCode.UNKNOWN_APP)]
    assert gateway.device(device).apps == ()
    assert gateway.events("violation") == []
