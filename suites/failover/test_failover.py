"""Failover: a gateway dies; its devices go on at another with the same enrollment.

Two gateways behind one load balancer (the seed's Service), enrollments shared through the
control plane (Device status.enrollment). The gateway serving a device dies in the middle
of a deployment to it, at a chosen protocol point (after the first chunk it has
acknowledged); the device reconnects through the balancer to the other gateway, which
admits it with the same device id without pairing (pairing is off), finishes the
deployment, runs it once and records exactly one result; a device revoked at the dead
gateway stays refused at the survivor. Runs on every backend (--hil-backend).
"""

from __future__ import annotations

import pytest

from wasmbed_hil.bench.platform import DEVICES
from wasmbed_hil.gateway import GatewayStore

TIMEOUT = 60.0
SIZE = 40_000  # several chunks on every backend; fits the firmware's module store


def status(obj):
    return obj.get("status") or {}


# No way in but a shared enrollment. Heartbeats every second, not the harness's 0.2 s: a
# device drops a link it hears nothing on for 3 intervals, and on a loaded machine (load 17)
# the loop stalled past 0.6 s, roamer-0 moved to the other gateway before the deployment, and
# the victim never saw the chunk it was to die at. Nothing here waits on a heartbeat.
@pytest.mark.hil_gateway(pairing=False, heartbeat_interval_s=1.0, heartbeat_timeout_s=4.0)
@pytest.mark.hil_platform(rest=False, gateways=2, balancer=True, agent_refresh_s=0.5)
@pytest.mark.parametrize("kill_at", ["first-chunk-acked", "last-chunk-acked"])
def test_devices_of_a_killed_gateway_continue_on_another_with_the_same_ids(
        control_plane, wasm, kill_at):
    """`kill_at`: the victim dies when it has the first chunk's ChunkAck (the device holds a
    part of the module), or the last one's (the device holds all of it, installed, and the
    run was never started)."""
    cp = control_plane
    module = wasm.data(SIZE, seed=3)
    names = ["roamer-0", "roamer-1", "outcast"]
    for name in names:
        cp.create_device(name, backend=cp.backend)
    devices = {n: cp.wait_phase("devices", n, "Connected", TIMEOUT) for n in names}
    ids = {n: status(d)["deviceId"] for n, d in devices.items()}
    victim = status(devices["roamer-0"])["gateway"]["name"]
    survivor = next(g for g in cp.gateways if g != victim)
    # Every gateway takes in every enrollment, whichever gateway published it.
    for gw in cp.gateways.values():
        for name in names:
            if gw.enrolled(ids[name]) is None:
                gw.wait_event("adopted", lambda e, n=name: e.data["name"] == n,
                              timeout=TIMEOUT)
            assert gw.device(ids[name]).device_id == ids[name]
    # A revocation made at the victim alone reaches the survivor through the control plane.
    outcast = cp.gateways[victim].device(ids["outcast"]).identity
    cp.gateways[victim].revoke(outcast)
    cp.wait("devices", "outcast", lambda o: status(o).get("enrollment", {}).get("revoked"),
            "to publish its revocation", TIMEOUT)
    cp.gateways[survivor].wait_event("revoked", lambda e: e.data["identity"] == outcast,
                                     timeout=TIMEOUT)

    # A deployment in flight when the victim dies, after the first chunk it acknowledged.
    def chosen_point(event):
        return event.device_id == ids["roamer-0"] and (
            kill_at == "first-chunk-acked" or event.data["offset"] == len(module))

    killed = cp.kill_gateway_when(victim, "chunk_acked", chosen_point)
    cp.create_application("summer", module, device_names=["roamer-0"], entry="checksum")
    killed.result(TIMEOUT)
    cp.kill_gateway(victim)

    dev = cp.wait("devices", "roamer-0", lambda o: status(o).get("phase") == "Connected"
                  and status(o)["gateway"]["name"] == survivor,
                  f"to be Connected at {survivor}", TIMEOUT)
    assert status(dev)["deviceId"] == ids["roamer-0"]
    app = cp.wait("applications", "summer", lambda o: any(
        "outcome" in r for r in status(o).get("deviceStatuses", [])),
        "to have a result", TIMEOUT)
    row = status(app)["deviceStatuses"][0]
    assert (row["device"], row["outcome"], row["values"]) == (
        "roamer-0", "RETURNED", [wasm.data_checksum(SIZE, seed=3)])

    alive = cp.gateways[survivor]
    results = alive.results(ids["roamer-0"], "summer")
    assert len(results) == 1, results  # exactly one run, recorded once
    # No new pairing at the survivor: it welcomed the known device, never enrolled it anew.
    assert not alive.events("enrolled", ids["roamer-0"])
    assert cp.wait("devices", "roamer-0", lambda o: status(o)["apps"][0].get("runs") == 1,
                   "to report 1 run", TIMEOUT)
    # The victim's cache: the deployment it had in flight, unfinished, and no result.
    dead = GatewayStore(cp.gateways[victim].workdir / "state" / "gateway.sqlite3")
    try:
        assert [d.app_id for d in dead.unfinished_deployments()] == ["summer"]
        assert dead.results(ids["roamer-0"]) == []
    finally:
        dead.close()
    # roamer-1 is (still, or now) connected with the same id; the outcast stays refused.
    dev = cp.wait("devices", "roamer-1", lambda o: status(o).get("phase") == "Connected"
                  and status(o)["gateway"]["name"] == survivor,
                  f"to be Connected at {survivor}", TIMEOUT)
    assert status(dev)["deviceId"] == ids["roamer-1"]
    alive.wait_event("rejected", lambda e: e.data["name"] == "outcast"
                     and e.data["code"] == "REVOKED", timeout=TIMEOUT)
    # The victim comes back (the fault healed): it gives up the deployment it had in flight
    # for a device served elsewhere now, instead of resuming it and running it again.
    fault, _kill, heal = cp.gateway_crash_fault(victim)
    assert fault == f"gateway-crash-{victim}"
    heal()
    back = cp.gateways[victim]
    given_up = back.wait_event("deploy", lambda e: e.device_id == ids["roamer-0"]
                               and e.data["state"] == "failed", timeout=TIMEOUT)
    assert given_up.data["reason"] == f"device moved to gateway {survivor}"
    assert back.results(ids["roamer-0"]) == []
    assert len(alive.results(ids["roamer-0"], "summer")) == 1


@pytest.mark.hil_gateway(pairing=False, heartbeat_interval_s=1.0, heartbeat_timeout_s=4.0)
@pytest.mark.hil_platform(rest=False, gateways=2, balancer=True, agent_refresh_s=0.5)
def test_the_result_of_a_run_whose_gateway_died_is_taken_by_the_next(control_plane, wasm):
    """The victim dies the moment the device acknowledged a StartApp, before the result:
    the run was never listed (its id was within the run ids the Device's enrollment
    reserved), yet the device, reconnected to the survivor, has its one result accepted
    there, and the Application has it."""
    cp = control_plane
    cp.create_device("runner", backend=cp.backend)
    dev = cp.wait_phase("devices", "runner", "Connected", TIMEOUT)
    device_id, victim = status(dev)["deviceId"], status(dev)["gateway"]["name"]
    survivor = next(g for g in cp.gateways if g != victim)
    alive = cp.gateways[survivor]
    if alive.enrolled(device_id) is None:
        alive.wait_event("adopted", lambda e: e.data["name"] == "runner", timeout=TIMEOUT)
    # From here the victim writes no status (a pass could list the run in openRuns while
    # the StartApp is under way): what the API server holds of the run is only the
    # reservation published when the device connected.
    cp.wait("devices", "runner", lambda o: status(o).get("enrollment", {}).get(
        "enrolledBy") == victim, "to hold the victim's enrollment", TIMEOUT)

    async def no_status_write(*_args: object) -> None:
        return None

    cp.loop.call(setattr, cp.agents[victim], "_write_device_status", no_status_write)
    killed = cp.kill_gateway_when(victim, "started", lambda e: e.device_id == device_id)
    cp.create_application("adder", wasm("add"), device_names=["runner"], args=[20, 22])
    run_id = killed.result(TIMEOUT).data["run_id"]
    cp.kill_gateway(victim)
    app = cp.wait("applications", "adder", lambda o: any(
        "outcome" in r for r in status(o).get("deviceStatuses", [])),
        "to have a result", TIMEOUT)
    row = status(app)["deviceStatuses"][0]
    assert (row["device"], row["outcome"], row["values"]) == ("runner", "RETURNED", [42])
    [result] = alive.results(device_id, "adder")
    assert result.run_id == run_id  # the victim's run, not one of the survivor's
    pass


@pytest.mark.hil_platform(rest=False)
def test_a_run_is_held_by_the_api_server_before_its_start_goes_out(control_plane, wasm):
    """What makes a result survive its gateway: when the StartApp leaves, the Device's
    status.enrollment already holds the run: listed in openRuns, or within the run ids it
    reserved (from unlistedFrom up to nextRunId), so another gateway the device moves to
    would accept that run's result and never hand its id out again. A run within the
    reservation needs no write of its own."""
    cp = control_plane
    cp.create_device("runner", backend=cp.backend)
    device_id = status(cp.wait_phase("devices", "runner", "Connected", TIMEOUT))["deviceId"]
    handle = cp.gateways["gateway-0"]
    assert handle.deploy(device_id, wasm("add"), "adder").state == "installed"
    gateway = handle.gateway
    held = []

    async def record_what_the_api_server_holds(dev: str) -> None:
        await publish(dev)  # the agent's publication, if the run needs one
        obj = await cp.harness_kube.get(DEVICES, "runner", cp.namespace)
        held.append(status(obj).get("enrollment"))

    publish = gateway.on_run_recorded
    assert publish is not None
    cp.loop.call(setattr, gateway, "on_run_recorded", record_what_the_api_server_holds)
    run_ids = []
    for i in range(2):
        # One run at a time: a device refuses to start an app still running (306), which the
        # second StartApp met when it went out before the first run's result came back.
        run_ids.append(handle.start_app(device_id, "adder", args=(i, 2)))
        assert handle.wait_result(device_id, "adder", run_ids[-1],
                                  timeout=TIMEOUT).values == (i + 2,)
    assert len(held) == 2
    for enrollment, run_id in zip(held, run_ids, strict=True):
        assert enrollment["deviceId"] == device_id
        assert run_id < enrollment["nextRunId"]
        assert (enrollment["unlistedFrom"] <= run_id
                or {"appId": "adder", "runId": run_id} in enrollment["openRuns"])
    # Once answered, no run is left open.
    cp.wait("devices", "runner", lambda o: status(o).get("enrollment", {}).get(
        "openRuns", []) == [], "to have no unanswered run", TIMEOUT)
