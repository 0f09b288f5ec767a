"""Enrollments shared through the control plane: the local cache's side (GatewayStore.adopt,
merge_runs) and the agent's (what it takes from a Device's status.enrollment, and what it
refuses). The end-to-end failover is in suites/failover."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.controlplane.agent import GatewayAgent
from wasmbed_hil.gateway import Gateway, GatewayConfig, GatewayStore
from wasmbed_hil.gateway.store import MAX_UNLISTED_RUNS, RunRecord
from wasmbed_hil.kube.client import KubeClient, KubeConfig
from wasmbed_hil.pki import FleetCA, server_ssl_context
from wasmbed_hil.protocol import DevicePhase

ID_A = "a" * 32
ID_B = "b" * 32
IDENTITY_1 = "1" * 64
IDENTITY_2 = "2" * 64


def test_an_adopted_enrollment_keeps_its_device_id_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    assert store.adopt(ID_A, IDENTITY_1, "dev", 1000.0)
    assert not store.adopt(ID_B, IDENTITY_1, "dev", 1000.0)  # identity enrolled already
    assert not store.adopt(ID_A, IDENTITY_2, "other", 1000.0)  # device id taken already
    store.close()
    reopened = GatewayStore(path)
    dev = reopened.by_identity(IDENTITY_1)
    assert dev is not None and (dev.device_id, dev.enrolled_at) == (ID_A, 1000.0)
    assert reopened.by_id(ID_B) is None and reopened.by_identity(IDENTITY_2) is None
    # Enrolling the identity again (the handler's path) returns the adopted record.
    assert reopened.enroll(IDENTITY_1, "dev") == (dev, False)
    reopened.close()


def test_merged_runs_raise_the_counter_and_are_accepted_as_started(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "gw.sqlite3")
    assert store.next_run_id(ID_A) == 1
    assert store.new_run(ID_A, "app") == 1
    store.merge_runs(ID_A, 10, [("app", 8), ("other", 9)])
    assert store.run_record(ID_A, "app", 8) is RunRecord.STARTED
    assert store.run_record(ID_A, "other", 9) is RunRecord.STARTED
    assert store.run_record(ID_A, "app", 9) is not RunRecord.STARTED
    assert store.open_runs(ID_A, 10) == [("app", 1), ("app", 8), ("other", 9)]
    assert store.open_runs(ID_A, 2) == [("app", 8), ("other", 9)]  # the last ones
    store.merge_runs(ID_A, 4, [])  # a counter only goes up
    assert store.next_run_id(ID_A) == 10
    assert store.new_run(ID_A, "app") == 10
    with pytest.raises(ValueError, match="at or above"):
        store.merge_runs(ID_A, 12, [("app", 12)])
    with pytest.raises(ValueError, match="out of range"):
        store.merge_runs(ID_A, 2**32 + 1, [])
    assert store.next_run_id(ID_A) == 11  # nothing changed by the refused merges
    store.close()


def test_a_reservation_goes_ahead_of_the_counter_and_only_up(tmp_path: Path) -> None:
    """What the serving gateway publishes: run ids reserved ahead of its counter (extended
    once fewer than half remain), the unlisted ones from the counter on; kept on reopen."""
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    assert store.reservation(ID_A, 16) == (1, 17)
    for _ in range(8):
        store.new_run(ID_A, "app")  # runs 1..8: 8 ids of 16 left, not extended yet
    assert store.reservation(ID_A, 16) == (9, 17)
    store.new_run(ID_A, "app")  # run 9: fewer than half left
    assert store.reservation(ID_A, 16) == (10, 26)
    store.close()
    reopened = GatewayStore(path)
    assert reopened.reservation(ID_A, 4) == (10, 26)  # never lowered
    with pytest.raises(ValueError, match="ahead"):
        reopened.reservation(ID_A, MAX_UNLISTED_RUNS + 1)
    reopened.close()


def test_unlisted_runs_of_another_gateway_are_accepted_once_each(tmp_path: Path) -> None:
    """merge_runs with `unlisted_from`: each id in the range is UNLISTED until a run or a
    result takes it; the range is kept (widened by a later merge, at most MAX_UNLISTED_RUNS
    below the counter) and published on by this gateway; a bad range changes nothing."""
    store = GatewayStore(tmp_path / "gw.sqlite3")
    store.merge_runs(ID_A, 17, [("app", 3)], unlisted_from=4)
    assert store.next_run_id(ID_A) == 17
    assert store.run_record(ID_A, "app", 3) is RunRecord.STARTED  # listed
    assert store.run_record(ID_A, "app", 4) is RunRecord.UNLISTED
    assert store.run_record(ID_A, "other", 16) is RunRecord.UNLISTED
    assert store.run_record(ID_A, "app", 17) is RunRecord.UNKNOWN  # not reserved there
    assert store.run_record(ID_A, "app", 2) is RunRecord.UNKNOWN  # below the range
    store.record_unlisted_run(ID_A, "app", 4)
    assert store.run_record(ID_A, "app", 4) is RunRecord.STARTED
    assert store.run_record(ID_A, "other", 4) is RunRecord.UNKNOWN  # one run per id
    # This gateway publishes the range on (with its own reservation above the counter).
    assert store.reservation(ID_A, 16) == (4, 33)
    for bad in ({"unlisted_from": 18}, {"unlisted_from": 17 - MAX_UNLISTED_RUNS - 1}):
        with pytest.raises(ValueError, match="unlisted"):
            store.merge_runs(ID_A, 17, [], **bad)
    store.merge_runs(ID_A, 100, [], unlisted_from=90)  # widened, then bounded
    assert store.run_record(ID_A, "app", 5) is RunRecord.UNKNOWN
    assert store.run_record(ID_A, "app", 100 - MAX_UNLISTED_RUNS) is RunRecord.UNLISTED
    assert store.run_record(ID_A, "app", 99) is RunRecord.UNLISTED
    store.close()


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    ca = FleetCA.create("shared enrollment CA")
    ca.issue_gateway("gw-b", hosts=("127.0.0.1",)).write(tmp_path / "tls")
    gateway = Gateway(GatewayConfig.for_tests(name="gw-b"), server_ssl_context(tmp_path / "tls"))
    kube = KubeClient(KubeConfig(server="https://127.0.0.1:9"))  # never called here
    yield GatewayAgent(gateway, kube, namespace="ns", endpoint="127.0.0.1:1", name="gw-b")
    gateway.store.close()


def device(name: str, identity_key: bytes, enrollment: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wasmbed.github.io/v1", "kind": "Device",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {"publicKey": base64.b64encode(identity_key).decode()},
        "status": {"enrollment": enrollment},
    }


def spki(ca: FleetCA, name: str) -> bytes:
    return ca.issue_device(name).spki_der


def test_the_agent_takes_in_what_another_gateway_published(agent: Any) -> None:
    from wasmbed_hil.pki import device_identity

    key = spki(FleetCA.create("k"), "dev")
    identity = device_identity(key)
    agent._on_device("ADDED", device("dev", key, {
        "deviceId": ID_A, "enrolledAt": "2026-01-02T03:04:05Z", "enrolledBy": "gw-a",
        "nextRunId": 7, "openRuns": [{"appId": "app", "runId": 6}], "revoked": True}))
    gateway = agent.gateway
    dev = gateway.store.by_identity(identity)
    assert dev is not None and dev.device_id == ID_A
    assert gateway.device(ID_A).phase.value == "Enrolled"  # the registry knows it too
    assert gateway.store.next_run_id(ID_A) == 7
    assert gateway.store.run_record(ID_A, "app", 6) is RunRecord.STARTED
    assert identity in gateway.store.revoked
    assert [e.kind for e in gateway.events.events()][-2:] == ["adopted", "revoked"]


def test_the_agent_refuses_a_bad_or_contradicting_enrollment(
        agent: Any, caplog: pytest.LogCaptureFixture) -> None:
    from wasmbed_hil.pki import device_identity

    ca = FleetCA.create("k")
    gateway = agent.gateway
    bad = spki(ca, "bad")
    caplog.set_level(logging.WARNING)
    for i, enrollment in enumerate([
        {"deviceId": "not-hex", "enrolledBy": "gw-a"},
        {"deviceId": ID_A, "enrolledBy": "gw-a", "nextRunId": 2**40},
        {"deviceId": ID_A, "enrolledBy": "gw-a", "openRuns": [{"appId": "", "runId": 1}]},
        {"deviceId": ID_A, "enrolledBy": "gw-a", "surprise": 1},
        "a string",
    ]):
        agent._on_device("ADDED", device(f"bad-{i}", bad, enrollment))
    assert gateway.store.by_identity(device_identity(bad)) is None
    assert caplog.text.count("ignoring the enrollment of Device bad-") == 5
    # Our own publication is not taken back in.
    own = spki(ca, "own")
    agent._on_device("ADDED", device("own", own, {"deviceId": ID_A, "enrolledBy": "gw-b"}))
    assert gateway.store.by_identity(device_identity(own)) is None
    # A device enrolled here keeps its local id; another identity cannot take a used id.
    local_key = spki(ca, "local")
    local, _ = gateway.store.enroll(device_identity(local_key), "local")
    agent._on_device("ADDED", device("local", local_key, {
        "deviceId": ID_B, "enrolledBy": "gw-a"}))
    thief = spki(ca, "thief")
    agent._on_device("ADDED", device("thief", thief, {
        "deviceId": local.device_id, "enrolledBy": "gw-a"}))
    assert gateway.store.by_id(ID_B) is None
    assert gateway.store.by_identity(device_identity(thief)) is None
    assert gateway.metrics["enrollment_conflicts"] == 2
    # Runs published with ids at or above the published counter are refused, not merged.
    fresh = spki(ca, "fresh")
    agent._on_device("ADDED", device("fresh", fresh, {
        "deviceId": ID_A, "enrolledBy": "gw-a", "nextRunId": 3,
        "openRuns": [{"appId": "app", "runId": 5}]}))
    assert gateway.store.by_identity(device_identity(fresh)).device_id == ID_A
    assert gateway.store.run_record(ID_A, "app", 5) is not RunRecord.STARTED
    assert gateway.store.next_run_id(ID_A) == 1


def test_a_gateway_gives_up_its_deployments_to_a_device_served_elsewhere(
        agent: Any, tmp_path: Path) -> None:
    """A gateway that comes back after its devices moved on must not resume (and run again)
    what it had in flight for them: taking in another gateway's enrollment abandons it, in
    the local cache too."""
    from wasmbed_hil.pki import device_identity

    key = spki(FleetCA.create("k"), "mover")
    gateway = agent.gateway

    async def scenario() -> list[str]:
        dev, _ = gateway.store.enroll(device_identity(key), "mover")
        gateway.registry.status_for(dev, DevicePhase.ENROLLED)
        dep = gateway.deploy(dev.device_id, b"\0asm\1\0\0\0", app_id="app")
        assert not dep.done.done()  # the device is offline: waiting for it
        agent._on_device("ADDED", device("mover", key, {
            "deviceId": dev.device_id, "enrolledBy": "gw-a", "nextRunId": 1}))
        await asyncio.wait_for(asyncio.shield(dep.done), 5)
        await gateway.deployments.close()
        return [dep.state, dep.error]

    assert asyncio.run(scenario()) == ["failed", "device moved to gateway gw-a"]
    assert gateway.store.unfinished_deployments() == []  # nothing left to resume


@pytest.mark.parametrize(("known", "deployed"), [
    ("nothing", True),  # installed, never run (its gateway died before the StartApp)
    ("run in the local cache", False),  # e.g. deployed and run before a gateway restart
    ("run in the Device status", False),  # run by the gateway that served it before
])
def test_a_module_the_device_holds_is_deployed_again_only_if_it_never_ran(
        agent: Any, known: str, deployed: bool) -> None:
    import hashlib

    from wasmbed_hil.controlplane.agent import GatewayDeviceStatus
    from wasmbed_hil.kube.resources import Application
    from wasmbed_hil.protocol import AppState, AppSummary

    module = b"\0asm\1\0\0\0"
    application = Application.from_dict({
        "apiVersion": "wasmbed.github.io/v1", "kind": "Application",
        "metadata": {"name": "app"},
        "spec": {"wasmBytes": base64.b64encode(module).decode(),
                 "targetDevices": {"allDevices": True}}})
    digest = hashlib.sha256(module).digest()
    st = GatewayDeviceStatus(ID_A, "dev", IDENTITY_1, DevicePhase.CONNECTED,
                             apps=(AppSummary("app", digest, AppState.INSTALLED),))
    if known == "run in the local cache":
        agent.gateway.store.new_run(ID_A, "app")
    elif known == "run in the Device status":
        agent.devices.objects["dev"] = {"metadata": {"name": "dev"}, "status": {"apps": [
            {"appId": "app", "digest": digest.hex(), "runId": 3, "runs": 1}]}}
    calls: list[str] = []
    agent._deploy = lambda _st, name, _app: calls.append(name)
    agent._reconcile_apps(st, "dev", {}, {"app": (application, False)})
    assert calls == (["app"] if deployed else [])
