"""Control-plane parts on their own: the Application phase rules, the device manager's
errors, the agent's per-device phase, and the fault proxy."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.devicemanager import (
    DEFAULT_MAX_MACHINES,
    DeviceManager,
    DeviceManagerError,
)
from wasmbed_hil.bench.link.faultproxy import FaultProxy
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.platform import PlatformConfig
from wasmbed_hil.controlplane.agent import GatewayAgent, dns_name
from wasmbed_hil.controlplane.controllers import (
    application_phase,
    application_status,
    device_app_statuses,
)
from wasmbed_hil.kube.resources import Application, DeploymentPhase
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import AppState, Outcome

MODULE = modules.build("add")
DIGEST = hashlib.sha256(MODULE).hexdigest()


def app(targets: dict[str, Any]) -> Application:
    return Application.from_dict({
        "apiVersion": "wasmbed.github.io/v1", "kind": "Application", "metadata": {"name": "a"},
        "spec": {"wasmBytes": base64.b64encode(MODULE).decode(), "targetDevices": targets},
    })


def device(phase: str = "Connected", labels: dict[str, str] | None = None,
           entry: dict[str, Any] | None = None) -> dict[str, Any]:
    apps = [{"appId": "a", "digest": DIGEST, **entry}] if entry is not None else []
    return {"labels": labels or {}, "status": {"phase": phase, "apps": apps}}


@pytest.mark.parametrize(("phases", "expected"), [
    ([], "Deploying"),
    (["Running", "Running"], "Running"),
    (["Running", "Pending"], "Deploying"),
    (["Running", "Installed"], "Deploying"),
    (["Running", "Failed"], "PartiallyRunning"),
    (["Running", "Unknown"], "PartiallyRunning"),
    (["Running", "Stopped"], "PartiallyRunning"),
    (["Failed", "Failed"], "Failed"),
    (["Failed", "Unknown"], "Failed"),
    (["Stopped", "Stopped"], "Stopped"),
    (["Unknown"], "Deploying"),
])
def test_application_phase_rules(phases: list[str], expected: str) -> None:
    assert application_phase([{"phase": p} for p in phases]).value == expected


def test_device_rows_cover_missing_stale_and_unreachable_devices() -> None:
    devices = {
        "ok": device(entry={"deployment": "Running", "runId": 3, "outcome": "RETURNED",
                            "values": [42]}),
        "old": device(entry={"deployment": "Running"}),
        "gone": device("Unreachable", entry={"deployment": "Running"}),
        "fresh": device(),
    }
    devices["old"]["status"]["apps"][0]["digest"] = "00" * 32
    rows = {r["device"]: r for r in device_app_statuses(
        app({"deviceNames": ["ok", "old", "gone", "fresh", "missing"]}), "a", devices)}
    assert rows["ok"] == {"device": "ok", "phase": "Running", "runId": 3,
                          "outcome": "RETURNED", "values": [42]}
    assert rows["old"]["phase"] == "Deploying"  # an older module is still there
    assert rows["gone"]["phase"] == "Unknown"
    assert rows["fresh"]["phase"] == "Pending"
    assert rows["missing"] == {"device": "missing", "phase": "Pending",
                               "error": "no such Device"}


def test_selector_targets_and_statistics() -> None:
    devices = {
        "b1": device(labels={"c": "blue"}, entry={"deployment": "Running"}),
        "b2": device(labels={"c": "blue"}, entry={"deployment": "Failed", "error": "boom"}),
        "r1": device(labels={"c": "red"}),
    }
    status = application_status(app({"selector": {"matchLabels": {"c": "blue"}}}), "a",
                                devices)
    assert [r["device"] for r in status["deviceStatuses"]] == ["b1", "b2"]
    assert status["phase"] == "PartiallyRunning"
    assert status["statistics"] == {"targets": 2, "deployed": 1, "running": 1, "failed": 1,
                                    "stopped": 0}
    assert status["error"] == "1 of 2 devices failed; first: b2: boom"


def _dep(state: str, error: str = "", run: bool = True, run_id: int | None = None) -> Any:
    return SimpleNamespace(dep=SimpleNamespace(state=state, error=error, run_id=run_id,
                                               run=object() if run else None), digest=DIGEST)


def _result(outcome: Outcome, detail: str = "") -> Any:
    return SimpleNamespace(outcome=outcome, run_id=7, detail=detail)


@pytest.mark.parametrize(("state", "record", "last", "expected"), [
    (None, None, None, DeploymentPhase.PENDING),
    (None, _dep("transferring"), None, DeploymentPhase.DEPLOYING),
    (None, _dep("installed", run=False), None, DeploymentPhase.INSTALLED),
    (None, _dep("failed", "too big"), None, DeploymentPhase.FAILED),
    (AppState.RUNNING, _dep("installed", run_id=7), None, DeploymentPhase.RUNNING),
    (AppState.INSTALLED, _dep("installed", run_id=7), _result(Outcome.RETURNED),
     DeploymentPhase.RUNNING),
    (AppState.FAILED, _dep("installed", run_id=7), _result(Outcome.TRAPPED, "unreachable"),
     DeploymentPhase.FAILED),
    (AppState.STOPPED, None, _result(Outcome.STOPPED), DeploymentPhase.STOPPED),
    (AppState.INSTALLED, None, None, DeploymentPhase.INSTALLED),
    # A heartbeat's RUNNING sent before the result of that very run arrived (regression:
    # `wasmbed-hil deploy` showed "Running TRAPPED"); an older run's result does not count.
    (AppState.RUNNING, _dep("installed", run_id=7), _result(Outcome.TRAPPED),
     DeploymentPhase.FAILED),
    (AppState.RUNNING, _dep("installed", run_id=8), _result(Outcome.TRAPPED),
     DeploymentPhase.RUNNING),
])
def test_agent_phase_of_one_app_on_one_device(state: AppState | None, record: Any, last: Any,
                                              expected: DeploymentPhase) -> None:
    phase, error = GatewayAgent._phase(state, record, last)
    assert phase == expected
    assert (error is not None) == (expected == DeploymentPhase.FAILED)


def test_dns_names_for_registered_devices() -> None:
    assert dns_name("Sensor_01 (lab)", "x") == "sensor-01-lab"
    assert dns_name("!!!", "device-abc") == "device-abc"
    assert len(dns_name("a" * 300, "x")) <= 63


@pytest.fixture(scope="module")
def ca() -> FleetCA:
    return FleetCA.create("parts CA")


def test_device_manager_refuses_what_it_cannot_start(ca: FleetCA, tmp_path: Path) -> None:
    loop = LoopThread("dm-test")
    try:
        manager = DeviceManager(loop, ca, tmp_path, lambda: {"gw": ("127.0.0.1", 9)})
        with pytest.raises(DeviceManagerError, match="not a lowercase DNS name"):
            manager.provision("Bad_Name")
        key = manager.provision("d1")
        assert manager.provision("d1") == key  # provisioning again keeps the key
        with pytest.raises(DeviceManagerError, match="no credentials for 'd2'"):
            manager.start("d2", "00" * 32, "virtual")
        with pytest.raises(DeviceManagerError, match="do not match"):
            manager.start("d1", "00" * 32, "virtual")
        from wasmbed_hil.pki import device_identity

        identity = device_identity(base64.b64decode(key))
        with pytest.raises(DeviceManagerError, match="unknown backend 'nope'"):
            manager.start("d1", identity, "nope")
        with pytest.raises(DeviceManagerError, match="preferred gateway 'other'"):
            manager.start("d1", identity, "virtual", preferred_gateway="other")
        with pytest.raises(DeviceManagerError, match="options refused"):
            manager.start("d1", identity, "virtual", options={"warp": 9})
        assert manager.machines == {}
        empty = DeviceManager(loop, ca, tmp_path / "e", dict)
        empty.provision("d3")
        with pytest.raises(DeviceManagerError, match="no gateway is running"):
            empty.start("d3", device_identity(base64.b64decode(empty.provision("d3"))),
                        "virtual")
    finally:
        loop.close()


@pytest.mark.parametrize("bad", [0, -5, 100_001, 2.0, True, "1000", None])
def test_the_machine_limit_is_validated(ca: FleetCA, tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"max_machines=.*integer in 1\.\.100000"):
        PlatformConfig(max_machines=bad)
    with pytest.raises(ValueError, match="max_machines="):
        DeviceManager(None, ca, tmp_path, dict, max_machines=bad)  # type: ignore[arg-type]


def test_the_machine_limit_is_enforced_and_permits_a_fleet_of_1000(ca: FleetCA,
                                                                   tmp_path: Path) -> None:
    assert DEFAULT_MAX_MACHINES >= 1000 and PlatformConfig().max_machines == DEFAULT_MAX_MACHINES
    from wasmbed_hil.pki import device_identity

    loop = LoopThread("dm-test-limit")
    try:
        manager = DeviceManager(loop, ca, tmp_path, lambda: {"gw": ("127.0.0.1", 9)},
                                max_machines=2)
        ids = {n: device_identity(base64.b64decode(manager.provision(n)))
               for n in ("a", "b", "c")}
        manager.start("a", ids["a"], "virtual", options={"relay": False})
        manager.start("b", ids["b"], "virtual", options={"relay": False})
        assert manager.start("a", ids["a"], "virtual").name == "a"  # idempotent: no new one
        with pytest.raises(DeviceManagerError, match="at most 2 machines are allowed"):
            manager.start("c", ids["c"], "virtual")
        manager.stop("a")
        manager.start("c", ids["c"], "virtual", options={"relay": False})  # room again
        assert sorted(manager.machines) == ["b", "c"]
        manager.close()
    finally:
        loop.close()


def test_a_started_machine_is_counted_once_against_the_limit(ca: FleetCA,
                                                             tmp_path: Path) -> None:
    """The moment a machine is recorded, it is no longer counted as being started: counted
    twice, it made the limit refuse the last Device of a fleet of exactly max_machines (one
    Device in a few dozen 20-device joins stayed Pending, "at most 20 machines are
    allowed"). A start is made here at that very moment (when the first machine is recorded)."""
    from wasmbed_hil.pki import device_identity

    loop = LoopThread("dm-test-count")
    try:
        manager = DeviceManager(loop, ca, tmp_path, lambda: {"gw": ("127.0.0.1", 9)},
                                max_machines=2)
        ids = {n: device_identity(base64.b64decode(manager.provision(n))) for n in ("a", "b")}
        seen: list[str] = []

        class Recording(dict):  # type: ignore[type-arg]
            def __setitem__(self, key: str, value: Any) -> None:
                super().__setitem__(key, value)
                if key == "a":  # "a" is recorded: start "b" before anything else happens
                    seen.append(manager.start("b", ids["b"], "virtual",
                                              options={"relay": False}).name)

        manager.machines = Recording()
        manager.start("a", ids["a"], "virtual", options={"relay": False})
        assert seen == ["b"] and sorted(manager.machines) == ["a", "b"]
        assert manager._starting == {}
        manager.close()
    finally:
        loop.close()


def test_a_machine_started_while_the_manager_closes_is_not_left_running(
        ca: FleetCA, tmp_path: Path) -> None:
    """kopf runs the Device handlers in threads that outlive the controllers' stop, so
    Platform.stop() can close the manager while a machine starts. The start recorded its
    machine after close() had powered the others off: left running, never closed. close()
    now waits for the start, which powers its machine off instead of recording it."""
    import threading

    from wasmbed_hil.pki import device_identity

    loop = LoopThread("dm-test-close")
    try:
        manager = DeviceManager(loop, ca, tmp_path, lambda: {"gw": ("127.0.0.1", 9)})
        identity = device_identity(base64.b64decode(manager.provision("a")))
        backend = manager.backend("virtual")
        create = backend.create
        handles: list[Any] = []
        closing = threading.Event()  # close() waits for the start, or has already returned
        wait_for = manager._start_ended.wait_for

        def waiting(predicate: Any, timeout: float | None = None) -> bool:
            closing.set()
            return wait_for(predicate, timeout)

        manager._start_ended.wait_for = waiting  # type: ignore[method-assign]
        closer = threading.Thread(target=lambda: (manager.close(), closing.set()))

        def creating(*args: Any, **kwargs: Any) -> Any:
            handles.append(create(*args, **kwargs))
            closer.start()  # the platform stops while this machine is being made
            assert closing.wait(30)
            return handles[0]

        backend.create = creating  # type: ignore[method-assign]
        with pytest.raises(DeviceManagerError, match="closed while the machine of 'a'"):
            manager.start("a", identity, "virtual", options={"relay": False})
        closer.join(30)
        assert not closer.is_alive()
        assert manager.machines == {} and not handles[0].powered
        with pytest.raises(DeviceManagerError, match="is closed"):
            manager.start("a", identity, "virtual", options={"relay": False})
    finally:
        loop.close()


def test_a_device_created_again_while_the_old_one_is_deleted_keeps_its_credentials(
        ca: FleetCA, tmp_path: Path) -> None:
    """DELETE then POST of the same emulated Device (a client retrying on 409): the REST API
    provisions the new Device, getting the key still kept, then the old one's deletion
    (manager.stop) removed those credentials before the new Device was created with that
    key. Its machine then never started: "no credentials for 'a'"."""
    from wasmbed_hil.pki import device_identity

    loop = LoopThread("dm-test-recreate")
    try:
        manager = DeviceManager(loop, ca, tmp_path, lambda: {"gw": ("127.0.0.1", 9)})
        key = manager.provision("a")
        identity = device_identity(base64.b64decode(key))
        manager.start("a", identity, "virtual", options={"relay": False})
        assert manager.provision("a") == key  # the REST API, for the Device made again
        assert manager.stop("a")  # the old Device's deletion, before that create
        machine = manager.start("a", identity, "virtual", options={"relay": False})
        assert machine.name == "a" and machine.handle.powered
        assert manager.stop("a")  # a deletion with nothing provisioned meanwhile forgets
        assert not (tmp_path / "credentials" / "a").exists()
        manager.close()
    finally:
        loop.close()


def test_provisioning_on_the_loop_never_waits_on_a_machine_start(ca: FleetCA,
                                                                  tmp_path: Path) -> None:
    """The REST API provisions on the harness loop while kopf's threads start machines,
    which wait on that loop. Provisioning used to take the manager's lock on the loop: with a
    start holding it and waiting on the loop, a fleet created through REST deadlocked (seen at
    1,000 devices, benchmarks/bench_controlplane.py)."""
    loop = LoopThread("dm-test-deadlock")
    try:
        manager = DeviceManager(loop, ca, tmp_path, dict)
        with manager._lock:  # as a controller thread does in the middle of a start
            future = loop.start_task_soon(manager.aprovision, "d1", "virtual", None)
            # the loop still turns (it would hang here, then time out, before the fix)
            assert loop.run(asyncio.sleep(0, "turns"), timeout=5) == "turns"
            assert not future.done()
        assert future.result(timeout=10)  # provisioned once the lock was free
        assert (tmp_path / "credentials" / "d1" / "cert.pem").exists()
    finally:
        loop.close()


def test_device_manager_refuses_an_unknown_backend_as_a_bad_request(ca: FleetCA,
                                                                    tmp_path: Path) -> None:
    """The Device resource takes any backend name; the manager resolves it in the registry.
    An unknown one is the request's fault: a ValueError, which the REST API answers with 422
    (and the controllers put in the Emulated condition), before any credentials exist."""
    loop = LoopThread("dm-test-unknown")
    try:
        manager = DeviceManager(loop, ca, tmp_path, dict)
        with pytest.raises(ValueError, match=r"unknown backend 'bochs'; available: .*virtual"
                           ) as info:
            loop.run(manager.aprovision("d1", "bochs", None))
        assert isinstance(info.value, DeviceManagerError)
        assert not (tmp_path / "credentials" / "d1").exists()
        closed: list[str] = []
        backend = manager.backend("virtual")
        backend.close = lambda: closed.append("virtual")  # type: ignore[method-assign]
        manager.close()
        assert closed == ["virtual"]
        assert manager.backend("virtual") is not backend  # a closed backend is not reused
        manager.close()
    finally:
        loop.close()


def test_fault_proxy_cuts_and_restores() -> None:
    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(100):
                writer.write(data)
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        proxy = FaultProxy(server.sockets[0].getsockname()[:2])
        host, port = await proxy.start()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            await proxy.cut()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # refused while cut
            writer.close()
            assert proxy.refused == 1
            proxy.restore()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"back")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"back"
            writer.close()
            await writer.wait_closed()
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_watcher_timeline_records_additions_deletions_and_phase_changes_only() -> None:
    from wasmbed_hil.bench.platform import Watcher

    async def scenario() -> list[tuple[str, str, str, str]]:
        watcher = Watcher(SimpleNamespace(), "ns")  # type: ignore[arg-type]
        record = watcher._recorder("devices")

        def obj(name: str, phase: str | None) -> dict[str, Any]:
            return {"metadata": {"name": name}, "status": {"phase": phase} if phase else {}}

        for event, name, phase in [
            ("ADDED", "a", None), ("MODIFIED", "a", None), ("ADDED", "b", None),
            ("MODIFIED", "a", "Connected"), ("MODIFIED", "b", "Enrolled"),
            ("MODIFIED", "a", "Connected"), ("MODIFIED", "b", "Connected"),
            ("DELETED", "a", "Connected"), ("ADDED", "a", None), ("MODIFIED", "a", None),
        ]:
            await record(event, obj(name, phase))
        apps = watcher._recorder("applications")
        await apps("MODIFIED", obj("a", "Running"))  # another kind, the same name
        return [t[1:] for t in watcher.timeline]

    assert asyncio.run(scenario()) == [
        ("ADDED", "devices", "a", "-"), ("ADDED", "devices", "b", "-"),
        ("MODIFIED", "devices", "a", "Connected"), ("MODIFIED", "devices", "b", "Enrolled"),
        ("MODIFIED", "devices", "b", "Connected"), ("DELETED", "devices", "a", "Connected"),
        ("ADDED", "devices", "a", "-"), ("MODIFIED", "applications", "a", "Running"),
    ]


def test_gateway_device_counts_follow_every_device_change() -> None:
    """The Gateway controller's counts are kept per change; after any sequence they equal
    a count over all Devices (a device moving between gateways, losing its connection,
    enrolling, being deleted, a status that names no gateway or a bad one)."""
    import random

    from wasmbed_hil.controlplane.controllers import _Shared

    shared = _Shared()
    rng = random.Random(14)

    def counted() -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for info in shared.devices.values():
            st = info["status"]
            gw = (st.get("gateway") or {}).get("name")
            if isinstance(gw, str):
                c = out.setdefault(gw, [0, 0])
                c[0] += st.get("phase") == "Connected"
                c[1] += bool(st.get("deviceId"))
        return {k: v for k, v in out.items() if v != [0, 0]}

    for _ in range(2000):
        name = f"d{rng.randrange(30)}"
        if rng.random() < 0.15:
            shared.drop_device(name)
            continue
        status: dict[str, Any] = {}
        if rng.random() < 0.9:
            status["gateway"] = {"name": rng.choice(["g0", "g1", 7])}
        status["phase"] = rng.choice(["Connected", "Disconnected", "Enrolled"])
        if rng.random() < 0.7:
            status["deviceId"] = "abc"
        shared.set_device(name, {}, status)
        assert shared.gateway_counts == counted()


def test_agent_deployments_by_device_follow_every_change() -> None:
    """The agent's index of deployments by device equals a scan of all of them after any
    sequence of additions, replacements, pops (also of absent keys) and deletions."""
    import random

    from wasmbed_hil.controlplane.agent import _DeployedIndex

    index = _DeployedIndex()
    rng = random.Random(3)
    for _ in range(3000):
        key = (f"dev{rng.randrange(12)}", f"app{rng.randrange(4)}")
        roll = rng.random()
        if roll < 0.5:
            index[key] = SimpleNamespace(digest="d")  # type: ignore[assignment]
        elif roll < 0.8:
            index.pop(key, None)
        elif key in index:
            del index[key]
        for device in {k[0] for k in index} | {key[0]}:
            assert index.apps_of(device) == {a for d, a in index if d == device}
    with pytest.raises(KeyError):
        index.pop(("nobody", "app"))


def test_an_agent_pass_starts_every_deployment_before_its_status_writes() -> None:
    """With more devices than writes in flight, every device's deployment starts before
    the pass's first status write ends (the deployments once waited for the writes before
    them, 16 at a time); each device is still written once per pass, and a failed write or
    plan leaves the others done."""
    from wasmbed_hil.controlplane import agent as agent_module
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.kube.client import KubeClient, KubeConfig
    from wasmbed_hil.protocol import DevicePhase

    count = agent_module.WRITE_CONCURRENCY + 9

    async def scenario() -> None:
        names = [f"d{i}" for i in range(count)]
        status = {f"id{i}": DeviceStatus(f"id{i}", n, f"identity{i}", DevicePhase.CONNECTED,
                                         connected_since=1.0, last_heartbeat=2.0)
                  for i, n in enumerate(names)}
        gateway = SimpleNamespace(status=status, connections=dict.fromkeys(status),
                                  config=SimpleNamespace(name="gw"))
        kube = KubeClient(KubeConfig(server="https://127.0.0.1:9"))  # never called here
        agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", name="gw")
        for i, n in enumerate(names):
            agent._identities[f"identity{i}"] = n
            agent.devices.objects[n] = {"apiVersion": "wasmbed.github.io/v1",
                                        "kind": "Device", "metadata": {"name": n},
                                        "spec": {"publicKey": "AAAA"}}
        agent.devices.synced.set()
        agent.applications.synced.set()
        order: list[tuple[str, str]] = []
        gate = asyncio.Event()

        async def no_gateway() -> None:
            return None

        def reconcile(st: Any, name: str, labels: Any, apps: Any) -> None:
            if name == "d3":
                raise RuntimeError("plan failed")
            order.append(("deploy", name))

        async def write(name: str, st: Any, apps: Any) -> None:
            order.append(("write", name))
            await gate.wait()
            if name == "d5":
                raise RuntimeError("write failed")
            order.append(("written", name))

        agent._sync_gateway = no_gateway  # type: ignore[method-assign]
        agent._device_models.get = lambda raw: object()  # type: ignore[method-assign]
        agent._reconcile_apps = reconcile  # type: ignore[method-assign]
        agent._write_device_status = write  # type: ignore[method-assign]
        task = asyncio.ensure_future(agent._pass(None))
        while sum(kind == "write" for kind, _ in order) < agent_module.WRITE_CONCURRENCY:
            await asyncio.sleep(0)
        deployed = [n for kind, n in order if kind == "deploy"]
        assert sorted(deployed) == sorted(set(names) - {"d3"})  # all, before any write ended
        gate.set()
        with pytest.raises(RuntimeError, match="plan failed"):
            await asyncio.wait_for(task, 5)
        written = [n for kind, n in order if kind == "written"]
        assert sorted(written) == sorted(set(names) - {"d3", "d5"})
        await kube.close()

    asyncio.run(scenario())


def test_a_deleted_application_shows_deleting_after_the_daemons_write_in_flight() -> None:
    """kopf signals the Application's daemon to stop as the deletion begins and runs the
    deletion handler meanwhile: the daemon's status write then in flight landed after the
    handler's Deleting, and the Application showed its old phase until it was gone. The
    handler now writes after that write, and a stopped daemon writes no more."""
    import kopf

    from wasmbed_hil.controlplane.controllers import ControllerSettings, build_registry
    from wasmbed_hil.kube.client import KubeConfig

    class Stopped:  # kopf's DaemonStopped, as far as the daemon uses it
        def __init__(self) -> None:
            self.event = asyncio.Event()

        def __bool__(self) -> bool:
            return self.event.is_set()

        async def wait(self) -> None:
            await self.event.wait()

    async def scenario() -> None:
        landed: list[str] = []  # the phases written, in the order the API server took them
        in_flight, release = asyncio.Event(), asyncio.Event()

        async def patch(kind: Any, name: str, body: Any, ns: str, status: bool) -> None:
            if not in_flight.is_set():  # the daemon's first write: held on its way
                in_flight.set()
                await release.wait()
            landed.append(body["status"]["phase"])

        kube = SimpleNamespace(patch=patch)
        registry = build_registry(KubeConfig(server="https://127.0.0.1:9"),
                                  ControllerSettings(), None, lambda: kube)  # type: ignore
        fns = {h.id: h.fn for h in [*registry._spawning.get_all_handlers(),
                                    *registry._changing.get_all_handlers()]}
        aggregate = next(fn for hid, fn in fns.items() if "aggregate" in hid)
        deleted = next(fn for hid, fn in fns.items() if "application_deleted" in hid)
        body = kopf.Body({"apiVersion": "wasmbed.github.io/v1", "kind": "Application",
                          "metadata": {"name": "a", "generation": 1},
                          "spec": {"wasmBytes": base64.b64encode(MODULE).decode(),
                                   "targetDevices": {"deviceNames": ["d"]}}})
        stopped = Stopped()
        daemon = asyncio.ensure_future(aggregate(name="a", body=body, stopped=stopped))
        await in_flight.wait()
        stopped.event.set()  # the deletion begins: kopf stops the daemon, then the handler
        deletion = asyncio.ensure_future(deleted(name="a", body=body))
        for _ in range(50):  # the handler's turns, up to its write (before the fix: done)
            await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(asyncio.gather(daemon, deletion), 10)
        assert landed == ["Deploying", "Deleting"]

    asyncio.run(scenario())


def test_devices_of_one_name_registering_at_once_get_a_device_each() -> None:
    """Two unknown devices whose certificates carry the same name enrol at once: the agent
    looked the name up in its informer (which had not seen the first one's Device yet),
    and the second create's 409 made it take the first device's Device as its own (both
    wrote their status there; the second never had a Device). Now a taken name is the
    device's only when that Device names its identity; else it gets the suffixed name.
    The same device registered by another gateway (a 409 on its own Device) is taken."""
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.kube.client import KubeError
    from wasmbed_hil.protocol import DevicePhase

    ids = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("one", "two", "moved")}

    async def scenario() -> None:
        status = {f"{n}0000000000": DeviceStatus(f"{n}0000000000", "sensor" if n != "moved"
                                                 else "moved", ids[n], DevicePhase.CONNECTED)
                  for n in ids}
        gateway = SimpleNamespace(status=status, connections=dict.fromkeys(status),
                                  config=SimpleNamespace(name="gw"))
        server: dict[str, dict[str, Any]] = {  # registered by another gateway before
            "moved": {"apiVersion": "wasmbed.github.io/v1", "kind": "Device",
                      "metadata": {"name": "moved"}, "spec": {"identity": ids["moved"]}}}

        async def create(kind: Any, body: dict[str, Any], ns: str) -> dict[str, Any]:
            name = body["metadata"]["name"]
            if name in server:
                raise KubeError(409, "AlreadyExists", f"{name} exists")
            server[name] = body
            return body

        async def get_or_none(kind: Any, name: str, ns: str) -> dict[str, Any] | None:
            return server.get(name)

        kube = SimpleNamespace(create=create, get_or_none=get_or_none)
        agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", name="gw")
        agent.devices.synced.set()  # the informer has seen none of these Devices
        agent.applications.synced.set()

        async def no_gateway() -> None:
            return None

        agent._sync_gateway = no_gateway  # type: ignore[method-assign]
        await agent._pass(None)
        assert agent._identities == {ids["one"]: "sensor", ids["two"]: "sensor-two00000",
                                     ids["moved"]: "moved"}
        assert {n: d["spec"]["identity"] for n, d in server.items()} == {
            "moved": ids["moved"], "sensor": ids["one"], "sensor-two00000": ids["two"]}

    asyncio.run(scenario())


def test_a_status_write_in_flight_never_lands_after_a_run_publication() -> None:
    """A pass computes a Device's status (its enrollment: run counter, open runs) and writes
    it; a run published meanwhile wrote the newer enrollment first, and the pass's older one
    landed after it, setting the counter back until the next pass: a gateway dying then left
    its successor to give that run id again. The two writes of one Device now go in turn,
    each computed when its turn comes."""
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.protocol import DevicePhase

    async def scenario() -> None:
        st = DeviceStatus("id0", "d0", "identity0", DevicePhase.CONNECTED)
        runs = {"next": 1, "open": []}
        store = SimpleNamespace(by_id=lambda _id: None, revoked=set(),
                                next_run_id=lambda _id: runs["next"],
                                # nothing reserved ahead: each run is published
                                reservation=lambda _id, _n: (runs["next"], runs["next"]),
                                open_runs=lambda _id, _n: list(runs["open"]))
        gateway = SimpleNamespace(status={"id0": st}, connections={"id0": None},
                                  config=SimpleNamespace(name="gw"), store=store)
        landed: list[int] = []
        entered, release = asyncio.Event(), asyncio.Event()

        async def patch(kind: Any, name: str, body: dict[str, Any], ns: str,
                        status: bool = False) -> dict[str, Any]:
            if not entered.is_set():  # the pass's write: held on its way to the server
                entered.set()
                await release.wait()
            landed.append(body["status"]["enrollment"]["nextRunId"])
            return body

        agent = GatewayAgent(gateway, SimpleNamespace(patch=patch),  # type: ignore[arg-type]
                             namespace="ns", endpoint="127.0.0.1:1", name="gw")
        agent._identities["identity0"] = "d0"
        write = asyncio.create_task(agent._write_device_status("d0", st, {}))
        await entered.wait()
        runs.update(next=2, open=[("app", 1)])  # run 1 starts: published before it runs
        publish = asyncio.create_task(agent._publish_run("id0"))
        for _ in range(50):  # turns of the loop (no time passes) for an unordered one to land
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(write, publish)
        assert landed == [1, 2]  # the run's publication last: the server keeps counter 2
        assert agent.unpublished_runs == 0

    asyncio.run(scenario())


def test_refresh_only_status_writes_are_rate_bounded_stalest_first() -> None:
    """Writes that would only refresh a Device's heartbeat go out at most refresh_rate a
    second (a bucket of refresh_rate * refresh_s), the stalest Devices first; a Device whose
    status changed is written whatever the bucket holds; a refresh not written now is
    written by a later pass."""
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.protocol import DevicePhase

    async def scenario() -> None:
        names = [f"d{i}" for i in range(6)]
        status = {f"id{i}": DeviceStatus(f"id{i}", n, f"identity{i}", DevicePhase.CONNECTED)
                  for i, n in enumerate(names)}
        store = SimpleNamespace(by_id=lambda _id: None, revoked=set(),
                                next_run_id=lambda _id: 1, open_runs=lambda _id, _n: [],
                                reservation=lambda _id, _n: (1, 17),
                                results=lambda *_a: [])
        gateway = SimpleNamespace(status=status, connections=dict.fromkeys(status),
                                  config=SimpleNamespace(name="gw"), store=store,
                                  deployments=SimpleNamespace(history=[]))
        patched: list[str] = []

        async def patch(kind: Any, name: str, body: Any, ns: str, status: bool) -> None:
            patched.append(name)

        async def close() -> None:
            return None

        kube = SimpleNamespace(patch=patch, close=close)
        with pytest.raises(ValueError, match="positive"):
            GatewayAgent(gateway, kube, namespace="ns", endpoint="h:1",  # type: ignore[arg-type]
                         refresh_rate=0)
        agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", name="gw", refresh_s=1.0, refresh_rate=2.0)
        for i, n in enumerate(names):
            agent._identities[f"identity{i}"] = n
            agent.devices.objects[n] = {"metadata": {"name": n}}
        agent.devices.synced.set()
        agent.applications.synced.set()

        async def no_gateway() -> None:
            return None

        agent._sync_gateway = no_gateway  # type: ignore[method-assign]
        agent._device_models.get = lambda raw: object()  # type: ignore[method-assign]
        await agent._pass(None)
        assert sorted(patched) == names  # first writes: no token needed
        for i, n in enumerate(names):  # all stale now; d4 the stalest, then d1
            core, _ = agent._written[n]
            agent._written[n] = (core, time.time() - {4: 500, 1: 400}.get(i, 100 + i))
        patched.clear()
        await agent._pass(None)
        assert patched == ["d4", "d1"]  # the bucket held 2
        status["id0"].phase = DevicePhase.DISCONNECTED
        patched.clear()
        await agent._pass(None)
        assert patched == ["d0"]  # a change goes out with the bucket empty
        agent._refresh_at -= 1.0  # a second later: two more tokens
        patched.clear()
        await agent._pass(None)
        assert patched == ["d5", "d3"]  # the stalest of those left

    asyncio.run(scenario())


def test_events_before_enrollment_wake_no_pass_over_every_device() -> None:
    """A device's connection before its enrollment (enrolling, a refusal, a failed handshake,
    a rejection, a violation: no device id) changes no device's status, so it wakes no pass
    over every device: one such pass per joining device, O(devices) each, took half of the
    harness loop in a 1,000-device join. Its enrollment wakes a pass over that device only;
    any other event without a device id (pairing, revocation, unknown kinds) still wakes a
    pass over all of them."""
    from wasmbed_hil.controlplane.agent import PRE_ENROLLMENT_EVENTS
    from wasmbed_hil.gateway.events import GatewayEvent

    async def scenario() -> None:
        gateway = SimpleNamespace(status={}, config=SimpleNamespace(name="gw"))
        kube = SimpleNamespace()
        agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", name="gw")

        def woken(kind: str, device_id: str | None) -> tuple[bool, set[str]]:
            agent._all, agent._dirty = False, set()
            agent._wake.clear()
            agent._on_gateway_event(GatewayEvent(1, time.time(), kind, device_id, {}))
            return (agent._all if agent._wake.is_set() else False), set(agent._dirty)

        pre = {"enrolling", "rejected", "connection_refused", "handshake_failed", "violation"}
        assert pre == PRE_ENROLLMENT_EVENTS
        for kind in pre:
            assert woken(kind, None) == (False, set()), kind
            assert not agent._wake.is_set(), kind
        assert woken("violation", "id1") == (False, {"id1"})  # an enrolled device's
        assert woken("enrolled", "id2") == (False, {"id2"})
        assert woken("connection", "id3") == (False, {"id3"})
        for kind in ("pairing", "revoked", "gateway", "crl_loaded", "something-new"):
            assert woken(kind, None) == (True, set()), kind


def test_a_device_just_connected_gets_nothing_deployed_before_its_first_heartbeat() -> None:
    """What a device holds and runs comes with its heartbeats, and the results it kept come
    before its first heartbeat on a connection: the agent reconciles a device's apps only
    once that heartbeat came (one from an earlier connection does not count), and that
    heartbeat wakes a pass over it even when its apps look unchanged."""
    from wasmbed_hil.gateway.events import GatewayEvent
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.kube.client import KubeClient, KubeConfig
    from wasmbed_hil.protocol import DevicePhase

    st = DeviceStatus("id0", "d0", "identity0", DevicePhase.CONNECTED, connected_since=10.0,
                      last_heartbeat=5.0, heartbeats=7)  # heard on an earlier connection
    gateway = SimpleNamespace(status={"id0": st}, connections={"id0": None},
                              config=SimpleNamespace(name="gw"))
    kube = KubeClient(KubeConfig(server="https://127.0.0.1:9"))  # never called here
    agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                         endpoint="127.0.0.1:1", name="gw")
    agent._identities["identity0"] = "d0"
    agent.devices.objects["d0"] = {"apiVersion": "wasmbed.github.io/v1", "kind": "Device",
                                   "metadata": {"name": "d0"}, "spec": {"publicKey": "AAAA"}}
    agent._device_models.get = lambda raw: object()  # type: ignore[method-assign]
    agent._written["d0"] = ({"apps": []}, 0.0)  # nothing in its apps changed since
    reconciled: list[str] = []
    agent._reconcile_apps = lambda st, name, *_: reconciled.append(name)  # type: ignore
    assert agent._plan_device(st, {}) is not None  # its status write still goes out
    assert reconciled == []
    agent._dirty.clear()
    st.last_heartbeat, st.heartbeats = 11.0, 8
    agent._on_gateway_event(GatewayEvent(1, 11.0, "heartbeat", "id0"))
    assert agent._dirty == {"id0"}
    agent._plan_device(st, {})
    assert reconciled == ["d0"]
    agent._dirty.clear()  # later heartbeats with the same apps wake nothing
    agent._on_gateway_event(GatewayEvent(2, 12.0, "heartbeat", "id0"))
    assert agent._dirty == set()


def test_a_run_within_the_published_reservation_starts_without_a_write() -> None:
    """A Device's enrollment reserves RESERVED_RUNS run ids beyond its counter: a run whose
    id the API server already holds as reserved (by a status write or an earlier
    publication of this agent's) is not published again; the first run beyond is, with a
    new reservation. A write that did not land covers nothing."""
    from wasmbed_hil.controlplane.agent import RESERVED_RUNS
    from wasmbed_hil.gateway import GatewayStore
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.kube.client import KubeError
    from wasmbed_hil.protocol import DevicePhase

    async def scenario() -> None:
        store = GatewayStore(None)
        dev, _ = store.enroll("i" * 64, "d0")
        st = DeviceStatus(dev.device_id, "d0", "i" * 64, DevicePhase.CONNECTED)
        gateway = SimpleNamespace(status={dev.device_id: st}, connections={},
                                  config=SimpleNamespace(name="gw"), store=store)
        landed: list[dict[str, Any]] = []
        refuse = [False]

        async def patch(kind: Any, name: str, body: Any, ns: str, status: bool) -> None:
            if refuse[0]:
                raise KubeError(500, "InternalError", "etcd is down")
            landed.append(body["status"]["enrollment"])

        agent = GatewayAgent(gateway, SimpleNamespace(patch=patch),  # type: ignore[arg-type]
                             namespace="ns", endpoint="127.0.0.1:1", name="gw")
        agent._identities["i" * 64] = "d0"
        agent.api_reachable = True
        await agent._write_device_status("d0", st, {})  # e.g. when the device connected
        assert (landed[-1]["unlistedFrom"], landed[-1]["nextRunId"]) == (1, 1 + RESERVED_RUNS)
        for _ in range(RESERVED_RUNS):  # runs 1..16: each inside what the server holds
            store.new_run(dev.device_id, "app")
            await agent._publish_run(dev.device_id)
        assert len(landed) == 1 and agent.covered_runs == RESERVED_RUNS
        run = store.new_run(dev.device_id, "app")  # 17: beyond; published before it starts
        await agent._publish_run(dev.device_id)
        assert len(landed) == 2
        assert landed[-1]["nextRunId"] == run + 1 + RESERVED_RUNS
        assert {"appId": "app", "runId": run} in landed[-1]["openRuns"]
        refuse[0] = True  # a reservation that never landed covers nothing
        for _ in range(RESERVED_RUNS):
            store.new_run(dev.device_id, "app")
        run = store.new_run(dev.device_id, "app")
        assert store.reservation(dev.device_id, RESERVED_RUNS)[1] > run  # reserved locally
        await agent._publish_run(dev.device_id)
        assert agent.unpublished_runs == 1 and agent.covered_runs == RESERVED_RUNS
        store.close()

    asyncio.run(scenario())


def test_a_run_waits_for_its_publication_while_the_api_server_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's publication is waited for up to the busy bound while the API server answered
    the last pass (at 1,000 devices a busy one took longer than the 1 s bound, and most runs
    started unpublished); after a publication failed for want of the API server, the next
    ones wait the short bound only, until a pass reaches it again. Not-yet-answering at
    start-up also means the short bound."""
    from wasmbed_hil.controlplane import agent as agent_module
    from wasmbed_hil.gateway.registry import DeviceStatus
    from wasmbed_hil.kube.client import KubeError
    from wasmbed_hil.protocol import DevicePhase

    monkeypatch.setattr(agent_module, "PUBLISH_RUN_TIMEOUT_S", 0.05)
    monkeypatch.setattr(agent_module, "PUBLISH_RUN_BUSY_TIMEOUT_S", 30.0)

    async def scenario() -> None:
        status = {"id0": DeviceStatus("id0", "d0", "identity0", DevicePhase.CONNECTED)}
        store = SimpleNamespace(by_id=lambda _id: None, revoked=set(),
                                # each run beyond what any publication reserved
                                next_run_id=lambda _id: 2**31, reservation=lambda _id, _n: (8, 8),
                                open_runs=lambda _id, _n: [("a", 7)])
        gateway = SimpleNamespace(status=status, connections=dict.fromkeys(status),
                                  config=SimpleNamespace(name="gw"), store=store)
        release = asyncio.Event()
        answer: list[BaseException | None] = [None]
        published: list[Any] = []

        async def patch(kind: Any, name: str, body: Any, ns: str, status: bool) -> None:
            await release.wait()
            if answer[0] is not None:
                raise answer[0]
            published.append((name, body["status"]["enrollment"]["openRuns"]))

        kube = SimpleNamespace(patch=patch)
        agent = GatewayAgent(gateway, kube, namespace="ns",  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", name="gw")
        agent._identities["identity0"] = "d0"

        # Never answered yet: the short bound.
        await asyncio.wait_for(agent._publish_run("id0"), 5)
        assert agent.unpublished_runs == 1 and not published and agent._publish_failed
        # Answering (a pass reached it): a slow publication is waited for past the short bound.
        agent.api_reachable, agent._publish_failed = True, False
        task = asyncio.ensure_future(agent._publish_run("id0"))
        done, _ = await asyncio.wait({task}, timeout=0.5)  # ten short bounds
        assert not done
        release.set()
        await asyncio.wait_for(task, 5)
        assert published == [("d0", [{"appId": "a", "runId": 7}])]
        assert agent.unpublished_runs == 1
        # Unreachable on a publication: the next one waits the short bound only.
        answer[0] = KubeError(0, "Unreachable", "connection refused")
        await asyncio.wait_for(agent._publish_run("id0"), 5)
        assert agent.unpublished_runs == 2
        release.clear()
        answer[0] = None
        await asyncio.wait_for(agent._publish_run("id0"), 5)
        assert agent.unpublished_runs == 3 and len(published) == 1
        # A refusal (4xx) is an answer: the busy bound stays after the next pass succeeds.
        agent._publish_failed = False
        answer[0] = KubeError(404, "NotFound", "gone")
        release.set()
        await asyncio.wait_for(agent._publish_run("id0"), 5)
        assert agent.unpublished_runs == 4 and not agent._publish_failed

    asyncio.run(scenario())


def test_a_successful_pass_ends_the_short_publication_bound() -> None:
    """The agent's loop: a pass that reaches the API server clears a failed publication's
    mark (the runs after it wait the busy bound again)."""
    gateway = SimpleNamespace(status={}, connections={}, config=SimpleNamespace(name="gw"))

    async def scenario() -> None:
        agent = GatewayAgent(gateway, SimpleNamespace(),  # type: ignore[arg-type]
                             endpoint="127.0.0.1:1", namespace="ns", name="gw")
        passed = asyncio.Event()

        async def one_pass(only: Any) -> None:
            passed.set()

        agent._pass = one_pass  # type: ignore[method-assign]
        agent._publish_failed = True
        task = asyncio.ensure_future(agent._run())
        agent.wake()
        await asyncio.wait_for(passed.wait(), 5)
        while not agent.api_reachable:  # set right after the pass returns
            await asyncio.sleep(0)
        assert not agent._publish_failed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if agent._timer is not None:
            agent._timer.cancel()

    asyncio.run(scenario())
