"""The platform's services as separate processes, killed with SIGKILL and restarted.

The gateway (`wasmbed-hil gateway`) dies in the middle of a deployment, after the first
chunk it logged as acknowledged, and restarts on the same state directory: the device
reconnects, the transfer resumes where it stopped, the run happens once and its result is
recorded once. The controllers and the REST API are killed and restarted too; nothing is
lost. `ServiceProcess` (bench.process) starts, kills and restarts them, waiting on their
output lines, never on time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_services import emulated_kube

from wasmbed_hil.bench import kubewait, modules
from wasmbed_hil.bench.backends.virtual import VirtualBackend
from wasmbed_hil.bench.link.balancer import Balancer
from wasmbed_hil.bench.link.pump import Direction, Impairment
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.process import ProcessExited, ServiceProcess
from wasmbed_hil.gateway import GatewayStore
from wasmbed_hil.kube.client import KubeClient
from wasmbed_hil.kube.resources import Application, Device, Resource
from wasmbed_hil.pki import FleetCA

CLI = [sys.executable, "-m", "wasmbed_hil"]
WAIT = 60.0
SIZE = 150_000  # about 150 chunks of 1 KiB: the transfer outlasts the kill by far
NS = "wasmbed"


@pytest.fixture
def kube(tmp_path: Path, hil_loop: LoopThread) -> Iterator[tuple[Path, KubeClient]]:
    yield from emulated_kube(tmp_path, hil_loop, token="crash-test")


def wait_resource(loop: LoopThread, kube: KubeClient, cls: type[Resource], name: str,
                  predicate: Any, what: str) -> dict[str, Any]:
    """Wait (on an informer's events) until `predicate(object)` holds."""
    return loop.run(kubewait.wait_resource(kube, cls, NS, name, predicate, what, WAIT),
                    timeout=WAIT + 5)


class HoldDown(Impairment):
    """Holds every byte towards the device (the dialling side) from now until taken off:
    the device answers what it already received, then the gateway waits, mid-transfer."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    def on_remove(self) -> None:
        self.released.set()

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        if direction == "down":
            await self.released.wait()
        return data


def rest_call(url: str, token: str, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return json.load(response)


def test_service_process_waits_on_lines_and_leaves_nothing_behind(tmp_path: Path) -> None:
    script = ("import signal\nprint('booting', flush=True)\nprint('ready now', flush=True)\n"
              "signal.pause()\n")  # serves until killed
    proc = ServiceProcess("toy", [sys.executable, "-c", script], tmp_path)
    with proc:
        assert proc.ready is not None and proc.ready.string == "ready now"
        assert proc.lines == ["booting", "ready now"]
        pid = proc.pid
        assert proc.kill() == -9
        assert not proc.running
        proc.restart()
        assert proc.pid != pid and proc.incarnations == 2
        assert proc.lines == ["booting", "ready now"] * 2
        name, apply, heal = proc.crash_fault()  # the same, for a fault registry
        assert name == "sigkill-toy"
        apply()
        assert not proc.running
        heal()
        assert proc.running and proc.incarnations == 3
    assert proc.pid is None
    failing = ServiceProcess("early-exit", [sys.executable, "-c", "print('bye')"], tmp_path)
    with pytest.raises(ProcessExited, match="before a line matching"):
        failing.start(WAIT)
    assert failing.pid is None


def test_killed_services_restart_and_the_deployment_completes_once(
        kube: tuple[Path, KubeClient], tmp_path: Path, hil_loop: LoopThread) -> None:
    kubeconfig, client = kube
    ca = FleetCA.create("crash test CA")
    ca.issue_gateway("gw-p", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    (tmp_path / "token").write_text("crash-token")
    opts = ["--kubeconfig", str(kubeconfig)]
    logs = tmp_path / "logs"
    controllers = ServiceProcess("controllers", [*CLI, "controllers", *opts], logs)
    gateway = ServiceProcess("gateway", [
        *CLI, "gateway", *opts, "--name", "gw-p", "--tls-port", "0", "--host", "127.0.0.1",
        "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "state"),
        "--pairing", "--heartbeat", "1", "--print-events"], logs)
    rest = ServiceProcess("rest", [*CLI, "rest", *opts, "--port", "0", "--host", "127.0.0.1",
                                   "--token-file", str(tmp_path / "token")], logs)

    def gateway_port() -> list[tuple[str, int]]:
        ready = gateway.ready
        return [("127.0.0.1", int(ready.string.rsplit("=", 1)[1]))] if ready else []

    balancer = Balancer(gateway_port)  # the device's one address, whatever port gw-p gets
    device = None
    with controllers, gateway, rest:
        try:
            hil_loop.run(balancer.start())
            assert balancer.address is not None
            device = VirtualBackend(hil_loop, tmp_path / "dev").create(
                "edge-1", ca.issue_device("edge-1"), balancer.address, max_frame_size=1024)
            device.power_on()
            device_id = device.wait_online(WAIT)
            module = modules.data_module(SIZE, seed=5)
            # The chosen point: once the device has acknowledged 5 chunks nothing more
            # reaches it, so the gateway stops mid-transfer, after acknowledged chunks.
            hold = HoldDown()

            def stall_after_five(event: Any) -> None:
                if event.kind == "chunk_acked" and event.data["count"] == 5:
                    balancer.impairments.add(hold)

            hil_loop.call(device.lifecycle_events.add_listener, stall_after_five)
            url = rest.ready.string.split()[2] if rest.ready else ""
            rest_call(url, "crash-token", "POST", "/api/v1/applications", {
                "name": "summer", "targetDevices": {"allDevices": True}, "entry": "checksum",
                "wasmBytes": base64.b64encode(module).decode()})
            gateway.wait_line(rf"^event #\d+ chunk_acked {device_id[:8]} .*count=5\b", WAIT)
            assert gateway.kill() == -9
            assert controllers.kill() == -9
            # What the dead gateway left on disk: the deployment in flight, no result.
            store = GatewayStore(tmp_path / "state" / "gateway.sqlite3")
            try:
                assert [d.app_id for d in store.unfinished_deployments()] == ["summer"]
                assert store.results() == []
            finally:
                store.close()
            # The REST API dies and comes back: the Application it created is there.
            assert rest.kill() == -9
            url = rest.start(WAIT).ready.string.split()[2]  # type: ignore[union-attr]
            assert rest_call(url, "crash-token", "GET", "/api/v1/applications/summer")[
                "name"] == "summer"
            hil_loop.call(balancer.impairments.remove, hold)

            gateway.start(WAIT)
            controllers.start(WAIT)
            app = wait_resource(hil_loop, client, Application, "summer", lambda o: any(
                "outcome" in r for r in (o.get("status") or {}).get("deviceStatuses", [])),
                "to have a result")
            row = app["status"]["deviceStatuses"][0]
            assert (row["device"], row["outcome"], row["values"]) == (
                "edge-1", "RETURNED", [modules.data_checksum(SIZE, seed=5)])
            # The transfer resumed where it stopped instead of starting over.
            resumed = gateway.wait_line(rf"deploy {device_id[:8]} .*state=transferring "
                                        r"offset=(\d+)", WAIT)
            assert int(resumed.group(1)) > 0
            dev = wait_resource(hil_loop, client, Device, "edge-1", lambda o: (
                o.get("status") or {}).get("apps", [{}])[0].get("runs") == 1, "to report 1 run")
            assert dev["status"]["deviceId"] == device_id
        finally:
            if device is not None:
                device.close()
            hil_loop.run(balancer.stop())
        assert gateway.terminate() == 0
    store = GatewayStore(tmp_path / "state" / "gateway.sqlite3")
    try:
        assert [r.run_id for r in store.results(device_id, "summer")] == [1]
        assert store.unfinished_deployments() == []
    finally:
        store.close()
    assert not (controllers.running or gateway.running or rest.running)
