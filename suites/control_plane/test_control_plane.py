"""Control plane: Device, Application and Gateway resources drive the fleet end to end.

Each test gets the whole platform (`control_plane`): the emulated API server, the kopf
controllers, the REST API and in-process gateways with their agents. Devices are emulated
machines on the chosen backend (--hil-backend), started by the device manager because their
Device resource asks for emulation.
"""

from __future__ import annotations

import pytest

TIMEOUT = 30.0


def status(obj):
    return obj.get("status") or {}


@pytest.mark.hil_platform(rest=False)
def test_device_resource_gets_a_machine_that_enrolls_and_connects(control_plane):
    cp = control_plane
    cp.create_device("dev-a", labels={"room": "lab"}, backend=cp.backend)
    dev = cp.wait_phase("devices", "dev-a", "Connected", TIMEOUT)
    assert status(dev)["deviceId"]
    assert status(dev)["gateway"]["name"] == "gateway-0"
    dev = cp.wait("devices", "dev-a", lambda o: any(
        c["type"] == "Emulated" for c in status(o).get("conditions", [])),
        "to have the Emulated condition", TIMEOUT)
    emulated = {c["type"]: c for c in status(dev)["conditions"]}["Emulated"]
    assert emulated["status"] == "True", emulated
    assert emulated["message"] == f"{cp.backend} machine wired to gateway gateway-0"
    gw = cp.wait("gateways", "gateway-0",
                 lambda o: status(o).get("connectedDevices") == 1, "to count 1 device", TIMEOUT)
    assert status(gw)["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status(gw)["conditions"]} == {"Ready": "True"}


@pytest.mark.hil_platform(rest=False)
def test_application_runs_on_its_devices_and_results_flow_back(control_plane, wasm):
    cp = control_plane
    for name in ("dev-a", "dev-b"):
        cp.create_device(name, backend=cp.backend)
    for name in ("dev-a", "dev-b"):
        cp.wait_phase("devices", name, "Connected", TIMEOUT)
    cp.create_application("adder", wasm("add"), device_names=["dev-a", "dev-b"],
                          args=[40, 2])
    app = cp.wait_phase("applications", "adder", "Running", TIMEOUT)
    rows = {r["device"]: r for r in status(app)["deviceStatuses"]}
    assert set(rows) == {"dev-a", "dev-b"}
    for row in rows.values():
        assert row["outcome"] == "RETURNED" and row["values"] == [42], row
    assert status(app)["statistics"]["running"] == 2
    device_apps = status(cp.get("devices", "dev-a"))["apps"]
    assert [(a["appId"], a["runs"]) for a in device_apps] == [("adder", 1)]


@pytest.mark.hil_platform(rest=False)
def test_selector_reaches_devices_that_join_later(control_plane, wasm):
    cp = control_plane
    cp.create_device("early", labels={"fleet": "blue"}, backend=cp.backend)
    cp.create_device("other", labels={"fleet": "red"}, backend=cp.backend)
    cp.wait_phase("devices", "early", "Connected", TIMEOUT)
    cp.create_application("blue-adder", wasm("add"),
                          selector={"matchLabels": {"fleet": "blue"}}, args=[1, 2])
    app = cp.wait_phase("applications", "blue-adder", "Running", TIMEOUT)
    assert [r["device"] for r in status(app)["deviceStatuses"]] == ["early"]
    cp.create_device("late", labels={"fleet": "blue"}, backend=cp.backend)
    app = cp.wait("applications", "blue-adder",
                  lambda o: status(o).get("phase") == "Running"
                  and status(o)["statistics"]["running"] == 2,
                  "to run on the late device too", TIMEOUT)
    rows = {r["device"]: r for r in status(app)["deviceStatuses"]}
    assert set(rows) == {"early", "late"}
    assert rows["late"]["values"] == [3]
    other = cp.wait_phase("devices", "other", "Connected", TIMEOUT)
    assert status(other).get("apps", []) == []


@pytest.mark.hil_platform(rest=False)
def test_one_failing_device_gives_partially_running(control_plane, wasm):
    cp = control_plane
    cp.create_device("roomy-1", backend=cp.backend)
    cp.create_device("roomy-2", backend=cp.backend)
    # A machine whose flash takes modules of at most 4 KiB: the 8 KiB module fails there.
    cp.create_device("cramped", backend=cp.backend, options={"max_module_size": 4096})
    for name in ("roomy-1", "roomy-2", "cramped"):
        cp.wait_phase("devices", name, "Connected", TIMEOUT)
    cp.create_application("data", wasm.data(8192), all_devices=True, entry="checksum")
    app = cp.wait_phase("applications", "data", "PartiallyRunning", TIMEOUT)
    rows = {r["device"]: r for r in status(app)["deviceStatuses"]}
    assert {d: r["phase"] for d, r in rows.items()} == {
        "roomy-1": "Running", "roomy-2": "Running", "cramped": "Failed"}
    assert rows["roomy-1"]["values"] == [wasm.data_checksum(8192)]
    assert "exceeds" in rows["cramped"]["error"], rows["cramped"]
    assert status(app)["statistics"] == {
        "targets": 3, "deployed": 2, "running": 2, "failed": 1, "stopped": 0}
    assert "cramped" in status(app)["error"]


@pytest.mark.hil_platform(rest=False)
def test_trap_on_every_device_fails_the_application(control_plane, wasm):
    cp = control_plane
    for name in ("t-1", "t-2"):
        cp.create_device(name, backend=cp.backend)
    cp.create_application("trapper", wasm("trap"), device_names=["t-1", "t-2"])
    app = cp.wait_phase("applications", "trapper", "Failed", TIMEOUT)
    assert status(app)["statistics"]["failed"] == 2
    assert all(r["outcome"] == "TRAPPED" for r in status(app)["deviceStatuses"])
    assert "TRAPPED" in status(app)["error"]
