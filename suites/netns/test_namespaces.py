"""Off 127.0.0.1: the control plane, the gateway and the devices each in a network namespace
of its own (bench.netns), joined by a switch, so nothing can work by sharing a loopback.

- `cp` (10.213.0.1): `wasmbed-hil apiserver` (its certificate names the address it is bound
  to), `controllers` and `rest`;
- `gw` (10.213.0.2): `wasmbed-hil gateway`, bound to its address, advertising it to the
  control plane, its certificate naming only that IP (the device checks it), metrics there;
- `dev` (10.213.0.3): the harness's loop thread, moved there, with the virtual device (no
  relay: it dials the gateway itself), the Kubernetes client and the REST and metrics calls.

An Application created through the REST API runs on the device; its result comes back
through the gateway and the controllers to the Application's status; the gateway's metrics
agree. Needs root (ip netns); skipped with the reason otherwise. Virtual backend only (a
QEMU process would need its own `ip netns exec`).

With `WASMBED_HIL_REMOTE` naming a shared platform's description (JSON, written by
scripts/shards-in-netns.sh, which runs a gateway and control plane in a namespace of their
own for every shard), the test starts nothing: it uses that platform from the namespace it
runs in, with a device and an Application named after its process, and compares the
gateway's counters before and after (other shards share them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.virtual import VirtualBackend
from wasmbed_hil.bench.kubewait import wait_resource
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.netns import NetnsLan, unavailable
from wasmbed_hil.bench.process import ServiceProcess
from wasmbed_hil.bench.scrape import Scrape, parse
from wasmbed_hil.kube.client import KubeClient, KubeConfig
from wasmbed_hil.kube.resources import Application, Gateway
from wasmbed_hil.pki import FleetCA

CLI = [sys.executable, "-m", "wasmbed_hil"]
NS = "wasmbed"
WAIT = 60.0
API_PORT, REST_PORT, GW_PORT, METRICS_PORT = 6443, 8080, 8443, 9090  # one namespace each

REMOTE_ENV = "WASMBED_HIL_REMOTE"
REMOTE = os.environ.get(REMOTE_ENV)
WHY_NOT = None if REMOTE else unavailable()
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"separate network namespaces: {WHY_NOT}"),
    pytest.mark.backend_specific("virtual", reason="the device runs on a loop thread moved "
                                 "into its namespace; a QEMU process would need its own"),
]


@dataclass
class Site:
    loop: LoopThread  # its sockets are made in the devices' namespace
    kube: KubeClient
    rest_url: str
    token: str
    ca: FleetCA  # the fleet's: it signed the gateway's certificate and signs the device's
    gateway: tuple[str, int]  # the address devices dial
    gateway_name: str
    metrics_url: str
    device: str = "edge-1"
    app: str = "adder"
    shared: bool = False  # a platform other shards use too

    def run(self, coro: Any, timeout: float = WAIT + 5) -> Any:
        return self.loop.run(coro, timeout=timeout)


def _services(lan: NetnsLan, tmp: Path, ca: FleetCA, token: str
              ) -> tuple[list[ServiceProcess], Path]:
    cp, gw = lan.address("cp"), lan.address("gw")
    logs, kubeconfig = tmp / "logs", tmp / "kubeconfig"
    (tmp / "token").write_text(token)
    ca.issue_gateway("gw-netns", hosts=(gw,)).write(tmp / "pki")
    kube = ["--kubeconfig", str(kubeconfig), "--namespace", NS]
    apiserver = ServiceProcess("apiserver", lan.argv("cp", [
        *CLI, "apiserver", "--host", cp, "--port", str(API_PORT), "--kubeconfig",
        str(kubeconfig), "--crds"]), logs)
    controllers = ServiceProcess("controllers", lan.argv("cp", [*CLI, "controllers", *kube]),
                                 logs)
    rest = ServiceProcess("rest", lan.argv("cp", [
        *CLI, "rest", *kube, "--host", cp, "--port", str(REST_PORT), "--token-file",
        str(tmp / "token")]), logs)
    gateway = ServiceProcess("gateway", lan.argv("gw", [
        *CLI, "gateway", *kube, "--name", "gw-netns", "--host", gw, "--tls-port",
        str(GW_PORT), "--endpoint", f"{gw}:{GW_PORT}", "--pki-dir", str(tmp / "pki"),
        "--state-dir", str(tmp / "state"), "--pairing", "--heartbeat", "1",
        "--metrics-port", str(METRICS_PORT), "--metrics-host", gw]), logs)
    return [apiserver, controllers, rest, gateway], kubeconfig


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    if REMOTE:
        yield from _remote_site(Path(REMOTE))
        return
    lan = NetnsLan.create(["cp", "gw", "dev"])
    loop = LoopThread("netns-dev")
    services: list[ServiceProcess] = []
    kube: KubeClient | None = None
    try:
        loop.call(lan.enter, "dev")
        ca = FleetCA.create("netns CA")
        services, kubeconfig = _services(lan, tmp_path, ca, "ns-token")
        apiserver, controllers, rest, gateway = services
        apiserver.start(WAIT)
        kube = KubeClient(KubeConfig.from_kubeconfig(kubeconfig))
        loop.run(kube.ensure_namespace(NS), timeout=WAIT)
        for service in (controllers, rest, gateway):
            service.start(WAIT)
        assert rest.ready is not None
        gw = lan.address("gw")
        yield Site(loop, kube, rest.ready.string.split()[2], "ns-token", ca, (gw, GW_PORT),
                   "gw-netns", f"http://{gw}:{METRICS_PORT}/metrics")
    finally:
        for service in reversed(services):
            if service.running:
                service.terminate()
        if kube is not None:
            loop.run(kube.close())
        leftovers = loop.close()
        lan.close()
    assert not leftovers, f"tasks left on the loop: {leftovers}"


def _remote_site(path: Path) -> Iterator[Site]:
    """The shared platform described at `path`; this process is in its shard's namespace."""
    info = json.loads(path.read_text())
    host, _, port = info["gateway"].rpartition(":")
    loop = LoopThread("netns-shared")
    kube = KubeClient(KubeConfig.from_kubeconfig(Path(info["kubeconfig"])))
    try:
        yield Site(loop, kube, info["rest"], Path(info["token_file"]).read_text().strip(),
                   FleetCA.load(Path(info["ca_dir"])), (host, int(port)), info["gateway_name"],
                   info["metrics"], device=f"edge-{os.getpid()}", app=f"adder-{os.getpid()}",
                   shared=True)
    finally:
        loop.run(kube.close())
        leftovers = loop.close()
    assert not leftovers, f"tasks left on the loop: {leftovers}"


async def _rest(site: Site, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, site.rest_url + path, json=body,
            headers={"Authorization": f"Bearer {site.token}"}) as response:
        return response.status, json.loads(await response.read() or b"null")


async def _scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return parse(await response.text())


async def _refused_on_loopback(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def test_gateway_devices_and_control_plane_in_separate_namespaces(site: Site,
                                                                  tmp_path: Path) -> None:
    host, port = site.gateway
    if not site.shared:  # nothing of the platform is on the devices' own loopback
        for local in (API_PORT, REST_PORT, GW_PORT, METRICS_PORT):
            assert site.run(_refused_on_loopback(local)), local

    gateway = site.run(wait_resource(site.kube, Gateway, NS, site.gateway_name,
                                     lambda o: _status(o).get("phase") == "Running", "to run",
                                     WAIT))
    assert gateway["spec"]["endpoint"] == f"{host}:{port}"  # what it advertises
    before = site.run(_scrape(site.metrics_url))
    # No relay: the device's own TCP connection goes from its namespace to the gateway's
    # address, and its TLS client checks that IP against the gateway's certificate.
    device = VirtualBackend(site.loop, tmp_path / "dev").create(
        site.device, site.ca.issue_device(site.device), site.gateway, relay=False,
        server_name=host)
    device.power_on()
    try:
        device_id = device.wait_online(WAIT)
        code, app = site.run(_rest(site, "POST", "/api/v1/applications", {
            "name": site.app, "wasmBytes": base64.b64encode(modules.build("add")).decode(),
            "targetDevices": {"deviceNames": [site.device]}, "args": [40, 2]}))
        assert code == 201, app
        done = site.run(wait_resource(site.kube, Application, NS, site.app, lambda o: any(
            "outcome" in r for r in _status(o).get("deviceStatuses", [])), "to have a result",
            WAIT))
        (row,) = _status(done)["deviceStatuses"]
        assert (row["device"], row["outcome"], row["values"]) == (site.device, "RETURNED", [42])
        code, listed = site.run(_rest(site, "GET", f"/api/v1/devices/{site.device}"))
        assert code == 200 and listed["phase"] == "Connected", listed
        assert listed["deviceId"] == device_id
        after = site.run(_scrape(site.metrics_url))
    finally:
        device.close()

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert after.value("wasmbed_gateway_devices", phase="Connected") >= 1
    if site.shared:  # other shards' devices count too: only at least ours
        assert grew("wasmbed_gateway_results_total", outcome="returned") >= 1
        assert grew("wasmbed_gateway_enrollments_total", result="enrolled") >= 1
    else:
        assert after.value("wasmbed_gateway_devices", phase="Connected") == 1
        assert grew("wasmbed_gateway_results_total", outcome="returned") == 1
        assert grew("wasmbed_gateway_enrollments_total", result="enrolled") == 1
