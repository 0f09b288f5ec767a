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
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.virtual import VirtualBackend
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.netns import NetnsLan, unavailable
from wasmbed_hil.bench.process import ServiceProcess
from wasmbed_hil.bench.scrape import Scrape, parse
from wasmbed_hil.kube.client import Informer, Kind, KubeClient, KubeConfig
from wasmbed_hil.kube.resources import Application, Gateway
from wasmbed_hil.pki import FleetCA

CLI = [sys.executable, "-m", "wasmbed_hil"]
NS = "wasmbed"
WAIT = 60.0
API_PORT, REST_PORT, GW_PORT, METRICS_PORT = 6443, 8080, 8443, 9090  # one namespace each

WHY_NOT = unavailable()
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"separate network namespaces: {WHY_NOT}"),
    pytest.mark.backend_specific("virtual", reason="the device runs on a loop thread moved "
                                 "into its namespace; a QEMU process would need its own"),
]


@dataclass
class Site:
    lan: NetnsLan
    loop: LoopThread  # in the `dev` namespace
    kube: KubeClient
    gateway: ServiceProcess
    rest_url: str
    token: str
    ca: FleetCA  # the fleet's: it signed the gateway's certificate and signs the device's

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
        yield Site(lan, loop, kube, gateway, rest.ready.string.split()[2], "ns-token", ca)
    finally:
        for service in reversed(services):
            if service.running:
                service.terminate()
        if kube is not None:
            loop.run(kube.close())
        leftovers = loop.close()
        lan.close()
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


async def _wait(kube: KubeClient, cls: type, name: str, predicate: Any, what: str
                ) -> dict[str, Any]:
    changed = asyncio.Event()
    informer = Informer(kube, Kind.of(cls), NS, on_change=lambda *_: changed.set())
    informer.start()
    try:
        async with asyncio.timeout(WAIT):
            while True:
                obj = informer.objects.get(name)
                if obj is not None and predicate(obj):
                    return obj
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {cls.__name__} {name} {what}") from None
    finally:
        await informer.stop()


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
    gw = site.lan.address("gw")
    # Nothing of the platform is on the harness's own loopback: every port is refused there.
    for port in (API_PORT, REST_PORT, GW_PORT, METRICS_PORT):
        assert site.run(_refused_on_loopback(port)), port

    gateway = site.run(_wait(site.kube, Gateway, "gw-netns",
                             lambda o: _status(o).get("phase") == "Running", "to run"))
    assert gateway["spec"]["endpoint"] == f"{gw}:{GW_PORT}"  # what it advertises
    # No relay: the device's own TCP connection goes from `dev` to the gateway's address,
    # and its TLS client checks that IP against the gateway's certificate.
    device = VirtualBackend(site.loop, tmp_path / "dev").create(
        "edge-1", site.ca.issue_device("edge-1"), (gw, GW_PORT), relay=False, server_name=gw)
    device.power_on()
    try:
        device_id = device.wait_online(WAIT)
        code, app = site.run(_rest(site, "POST", "/api/v1/applications", {
            "name": "adder", "wasmBytes": base64.b64encode(modules.build("add")).decode(),
            "targetDevices": {"allDevices": True}, "args": [40, 2]}))
        assert code == 201, app
        done = site.run(_wait(site.kube, Application, "adder", lambda o: any(
            "outcome" in r for r in _status(o).get("deviceStatuses", [])), "to have a result"))
        (row,) = _status(done)["deviceStatuses"]
        assert (row["device"], row["outcome"], row["values"]) == ("edge-1", "RETURNED", [42])
        code, listed = site.run(_rest(site, "GET", "/api/v1/devices/edge-1"))
        assert code == 200 and listed["phase"] == "Connected", listed
        assert listed["deviceId"] == device_id
        metrics = site.run(_scrape(f"http://{gw}:{METRICS_PORT}/metrics"))
        assert metrics.value("wasmbed_gateway_devices", phase="Connected") == 1
        assert metrics.value("wasmbed_gateway_results_total", outcome="returned") == 1
        assert metrics.value("wasmbed_gateway_enrollments_total", result="enrolled") == 1
    finally:
        device.close()

