"""The whole Wasmbed platform on one machine, for the fixtures and `wasmbed-hil up`.

    API server   the emulated kube-apiserver (default; in its own process with
                 apiserver_process) or a real cluster (kubeconfig)
    REST API     the control plane's HTTP facade (port 8080 by default in the CLI)
    controllers  the kopf operator, in its own thread (or process: controllers_process)
    gateways     N in-process gateways, each with its control-plane agent (or each the
                 `wasmbed-hil gateway` service: gateway_processes)
    machines     emulated devices started by the device manager for Device resources

Between the platform's components and an emulated API server sits a FaultProxy, so a test
can cut the control plane off (`api_outage()`) while the harness keeps watching directly.
Everything runs on the harness loop except kopf, which has its own thread and loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from ..controlplane.agent import DEFAULT_REFRESH_RATE, GatewayAgent
from ..controlplane.controllers import EMULATION_OPTIONS, Controllers, ControllerSettings
from ..gateway import GatewayConfig
from ..gateway.events import WaitTimeout
from ..kube.client import Informer, Kind, KubeClient, KubeConfig, install_crds
from ..kube.resources import API_VERSION, Application, Device, Gateway
from ..pki import FleetCA
from . import waits
from .apiserver import ApiServer
from .backends.registry import DEFAULT_BACKEND
from .controllersprocess import ControllersProcess, check_process_settings
from .devicemanager import DEFAULT_MAX_MACHINES, DeviceManager, check_max_machines
from .gateway import GatewayHandle
from .gatewayprocess import GatewayProcess
from .link.balancer import Balancer
from .link.faultproxy import FaultProxy
from .loop import LoopThread
from .machineservice import MachineService
from .process import ServiceProcess

DEVICES, APPLICATIONS, GATEWAYS = (Kind.of(k) for k in (Device, Application, Gateway))
KINDS = {"devices": DEVICES, "applications": APPLICATIONS, "gateways": GATEWAYS}

#: Why cut_api() and its kin refuse: the fault proxy sits only before an in-process API server.
NO_OUTAGES = ("outages need the emulated API server in this process (not with a kubeconfig "
              "or apiserver_process)")
#: How long the API server's process has to say it is ready.
APISERVER_START_S = 60.0

#: The platform's waits span controllers, a gateway and a device: twice the run's timeout.
PLATFORM_SCALE = 2.0


@dataclass
class PlatformConfig:
    namespace: str = "wasmbed"
    gateways: int = 1
    gateway_config: GatewayConfig = field(default_factory=GatewayConfig.for_tests)
    kubeconfig: Path | None = None  # None: start the emulated API server
    rest: bool = True
    rest_socket: socket.socket | None = None  # handed over; None: an OS-chosen port
    token: str | None = None  # REST API bearer token; None: a random one
    agent_refresh_s: float = 2.0
    # Refresh-only Device status writes (heartbeat, telemetry) a second per gateway agent.
    agent_refresh_rate: float = DEFAULT_REFRESH_RATE
    controller_settings: ControllerSettings | None = None
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Devices reach the gateways through one load balancer (the seed's Service) instead of
    # each being wired to one gateway: when a gateway dies they reconnect to another.
    balancer: bool = False
    # Serve the REST API's and the controllers' Prometheus metrics on ports of their own
    # (`rest_metrics_url`, `controller_metrics_url`).
    metrics: bool = False
    # Machines the device manager starts at most (bench.devicemanager.check_max_machines).
    max_machines: int = DEFAULT_MAX_MACHINES
    # Run the kopf controllers as a process of their own (`wasmbed-hil controllers`, as in a
    # cluster), their machines asked of this platform's device manager over HTTP
    # (bench.controllersprocess); False: in a thread of this process.
    controllers_process: bool = False
    # Run the emulated API server as a process of its own (`wasmbed-hil apiserver`, as a
    # cluster's is), the components talking to it directly: no fault proxy, so no API outages.
    apiserver_process: bool = False
    # Run each gateway with its agent as the deployed service (`wasmbed-hil gateway`, a
    # process of its own; bench.gatewayprocess): `gateways` then holds no in-process handle,
    # and what needs one (crash points, kill/restart, the gateway's events) is refused.
    gateway_processes: bool = False

    def __post_init__(self) -> None:
        check_max_machines(self.max_machines)
        if self.controllers_process:
            check_process_settings(self.controller_settings)
        if self.apiserver_process and self.kubeconfig is not None:
            raise ValueError("apiserver_process starts an API server: not with a kubeconfig")
        if self.gateway_processes and self.balancer:
            raise ValueError("gateway_processes: the balancer needs in-process gateways")
        if not (self.agent_refresh_s > 0 and self.agent_refresh_rate > 0):
            raise ValueError("agent_refresh_s and agent_refresh_rate must be positive")


class _Provisioner:
    def __init__(self, manager: DeviceManager) -> None:
        self.manager = manager

    def check_backend(self, backend: str) -> None:
        self.manager.check_backend(backend)

    async def provision(self, name: str, backend: str, board: str | None) -> str:
        return await self.manager.aprovision(name, backend, board)


class Watcher:
    """Informer-backed waits on resources, for tests and the CLI's live view.

    `timeline` records every change seen: (time, event, plural, name, phase), the resource
    events timeline of a test's report.
    """

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.changed = asyncio.Condition()
        self.timeline: list[tuple[float, str, str, str, str]] = []
        # The phase of each object's last timeline entry: a look-up per change, where a
        # search of the timeline cost O(entries) and made a 1,000-device join quadratic.
        self._phases: dict[tuple[str, str], str] = {}
        self.informers = {
            plural: Informer(kube, kind, namespace, on_change=self._recorder(plural))
            for plural, kind in KINDS.items()
        }

    def _recorder(self, plural: str) -> Callable[[str, dict[str, Any]], Any]:
        async def changed(event: str, obj: dict[str, Any]) -> None:
            phase = str((obj.get("status") or {}).get("phase", "-"))
            name = str((obj.get("metadata") or {}).get("name", "?"))
            key = (plural, name)
            if event != "MODIFIED" or self._phases.get(key) != phase:
                self.timeline.append((time.time(), event, plural, name, phase))
                self._phases[key] = phase
            async with self.changed:
                self.changed.notify_all()

        return changed

    async def start(self) -> None:
        for informer in self.informers.values():
            informer.start()
        for informer in self.informers.values():
            await asyncio.wait_for(informer.synced.wait(), 30)

    async def stop(self) -> None:
        for informer in self.informers.values():
            await informer.stop()

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.informers[plural].objects.get(name)

    async def wait(self, check: Callable[[], Any], timeout: float, what: str,
                   seen: Callable[[], str]) -> Any:
        async with self.changed:
            try:
                return await asyncio.wait_for(self.changed.wait_for(check), timeout)
            except TimeoutError:
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}; "
                                  f"{seen()}") from None


class Platform:
    """Start with `start()`, stop with `stop()` (also after a failed start)."""

    def __init__(self, loop: LoopThread, ca: FleetCA, workdir: Path,
                 config: PlatformConfig | None = None) -> None:
        self.loop = loop
        self.ca = ca
        self.workdir = workdir
        self.config = config or PlatformConfig()
        self.namespace = self.config.namespace
        self.token = self.config.token or secrets.token_urlsafe(24)
        self.apiserver: ApiServer | None = None
        self.apiserver_process: ServiceProcess | None = None  # config.apiserver_process
        self._kubeconfig = self.config.kubeconfig  # None: the in-process emulated API server
        self.proxy: FaultProxy | None = None
        self.direct: KubeConfig | None = None  # the harness's own view
        self.kube_config: KubeConfig | None = None  # what the components use
        self.kube: KubeClient | None = None
        self.harness_kube: KubeClient | None = None
        self.watcher: Watcher | None = None
        self.gateways: dict[str, GatewayHandle] = {}
        self.gateway_processes: dict[str, GatewayProcess] = {}  # config.gateway_processes
        self.agents: dict[str, GatewayAgent] = {}
        self.manager = DeviceManager(loop, ca, workdir / "machines", self._endpoints,
                                     backend_options=self.config.backend_options,
                                     max_machines=self.config.max_machines)
        self.controllers: Controllers | ControllersProcess | None = None
        self.balancer: Balancer | None = None
        self.rest: Any = None
        self._http: aiohttp.ClientSession | None = None

    def _endpoints(self) -> dict[str, tuple[str, int]]:
        running = {name: gw.endpoint for name, gw in self.gateways.items() if gw.running}
        running.update((name, gp.endpoint) for name, gp in self.gateway_processes.items()
                       if gp.running)
        if self.balancer is not None and self.balancer.address is not None:
            return dict.fromkeys(running, self.balancer.address)
        return running

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Platform:
        if self.config.apiserver_process:
            path = self.workdir / "kubeconfig"
            self.apiserver_process = ServiceProcess(
                "apiserver", [sys.executable, "-m", "wasmbed_hil", "apiserver",
                              "--kubeconfig", str(path), "--namespace", self.namespace],
                self.workdir / "logs", die_with_parent=True).start(APISERVER_START_S)
            self._kubeconfig = path
        self.loop.run(self._start_kube())
        if self.config.balancer:
            self.balancer = Balancer(lambda: [gw.endpoint for gw in self.gateways.values()
                                              if gw.running])
            self.loop.run(self.balancer.start())
        for i in range(self.config.gateways):
            self.add_gateway(f"gateway-{i}")
        settings = self.config.controller_settings or ControllerSettings()
        settings = replace(settings, namespace=self.namespace)
        if self.config.metrics:
            settings = replace(settings, metrics_port=0, metrics_host="127.0.0.1")
        assert self.kube_config is not None
        if self.config.controllers_process:
            self.controllers = ControllersProcess(
                self.loop, self._components_kubeconfig(), settings,
                MachineService(self.manager), self.workdir).start()
        else:
            self.controllers = Controllers(self.kube_config, settings, self.manager).start()
        if self.config.rest:
            self.loop.run(self._start_rest())
        return self

    async def _start_kube(self) -> None:
        if self._kubeconfig is not None:
            self.direct = KubeConfig.from_kubeconfig(self._kubeconfig)
            self.kube_config = replace(self.direct, namespace=self.namespace)
        else:
            self.apiserver = ApiServer(token=secrets.token_urlsafe(24), bookmark_interval=5.0)
            await self.apiserver.start()
            self.apiserver.write_kubeconfig(self.workdir / "kubeconfig", self.namespace)
            self.direct = KubeConfig.from_kubeconfig(self.workdir / "kubeconfig")
            host, port = self.apiserver.url.rsplit("//", 1)[1].rsplit(":", 1)
            self.proxy = FaultProxy((host, int(port)))
            phost, pport = await self.proxy.start()
            self.kube_config = replace(self.direct, server=f"https://{phost}:{pport}")
        self.harness_kube = KubeClient(self.direct)
        self.kube = KubeClient(self.kube_config)
        await install_crds(self.harness_kube)
        await self.harness_kube.ensure_namespace(self.namespace)
        self.watcher = Watcher(self.harness_kube, self.namespace)
        await self.watcher.start()

    def _components_kubeconfig(self) -> Path:
        """A kubeconfig file for a component in another process: the one given, else the
        emulated API server's through the fault proxy (as the in-process components use)."""
        if self.apiserver is None:
            assert self._kubeconfig is not None
            return self._kubeconfig
        path = self.workdir / "kubeconfig-components"
        if not path.exists():  # written once, for the controllers and every gateway
            assert self.kube_config is not None
            self.apiserver.write_kubeconfig(path, self.namespace, server=self.kube_config.server)
        return path

    async def _start_rest(self) -> None:
        from ..controlplane.rest import RestApi

        assert self.kube is not None
        self.rest = RestApi(self.kube, namespace=self.namespace, token=self.token,
                            provisioner=_Provisioner(self.manager))
        await self.rest.start(self.config.rest_socket)
        if self.config.metrics:
            await self.rest.serve_metrics("127.0.0.1", 0)

    def add_gateway(self, name: str, **overrides: Any) -> GatewayHandle | GatewayProcess:
        config = replace(self.config.gateway_config, name=name, **overrides)
        if self.config.gateway_processes:
            process = GatewayProcess(self.ca, self.workdir / name,
                                     self._components_kubeconfig(), self.namespace, config)
            self.gateway_processes[name] = process
            return process.start()
        handle = GatewayHandle(self.loop, self.ca, self.workdir / name, config)
        self.gateways[name] = handle
        handle.start()
        self._attach_agent(name)
        return handle

    def _in_process(self, name: str) -> GatewayHandle:
        """The in-process gateway `name`; RuntimeError for one that runs as a process."""
        if name in self.gateway_processes:
            raise RuntimeError(f"gateway {name} runs as a process of its own "
                               "(PlatformConfig.gateway_processes): this needs an in-process "
                               "gateway")
        return self.gateways[name]

    def _attach_agent(self, name: str) -> None:
        handle = self.gateways[name]
        assert self.kube is not None
        host, port = handle.endpoint
        agent = self.loop.call(lambda: GatewayAgent(
            handle.gateway, self.kube, namespace=self.namespace,  # type: ignore[arg-type]
            endpoint=f"{host}:{port}", name=name, refresh_s=self.config.agent_refresh_s,
            refresh_rate=self.config.agent_refresh_rate))
        self.loop.run(agent.start())
        self.agents[name] = agent

    def stop_gateway(self, name: str) -> None:
        agent = self.agents.pop(name, None)
        if agent is not None:
            self.loop.run(agent.stop())
        self._in_process(name).stop()

    def kill_gateway(self, name: str) -> None:
        """The gateway and its agent die: no Stopped status, no goodbye to the devices
        (GatewayHandle.crash). Its local cache stays; `restart_gateway` brings it back."""
        agent = self.agents.pop(name, None)
        if agent is not None:
            self.loop.run(agent.stop(final_status=False))
        self._in_process(name).crash()

    def kill_gateway_when(self, name: str, kind: str,
                          predicate: Callable[[Any], bool] | None = None) -> Any:
        """Arm the gateway's death at a chosen event (GatewayHandle.crash_when); returns the
        future of that event. Call `kill_gateway(name)` once it fired."""
        return self._in_process(name).crash_when(kind, predicate)

    def gateway_crash_fault(self, name: str) -> tuple[str, Callable[[], object],
                                                      Callable[[], object]]:
        """(name, apply, heal) for a fault registry: kill the gateway, then restart it on
        the same local cache."""
        return f"gateway-crash-{name}", lambda: self.kill_gateway(name), \
            lambda: self.restart_gateway(name)

    def api_outage_fault(self) -> tuple[str, Callable[[], object], Callable[[], object]]:
        """(name, apply, heal): the API server outage of `api_outage()` as two calls."""
        if self.proxy is None:
            raise RuntimeError(NO_OUTAGES)
        return "api-outage", self.cut_api, self.restore_api

    def cut_api(self) -> None:
        """The platform's components lose the API server until `restore_api()`."""
        if self.proxy is None:
            raise RuntimeError(NO_OUTAGES)
        self.loop.run(self.proxy.cut())

    def restore_api(self) -> None:
        if self.proxy is None:
            raise RuntimeError(NO_OUTAGES)
        self.proxy.restore()
        for agent in self.agents.values():
            self.loop.call(agent.wake)

    def restart_gateway(self, name: str) -> None:
        self.stop_gateway(name)
        self._in_process(name).start()
        self._attach_agent(name)

    def stop(self) -> None:
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # keep stopping the rest
                errors.append(f"{what}: {exc!r}")

        if self.proxy is not None and self.proxy.is_cut:
            self.proxy.restore()
        if self.rest is not None:
            attempt("rest", lambda: self.loop.run(self.rest.stop()))
        if self.controllers is not None:
            attempt("controllers", self.controllers.stop)
        attempt("machines", self.manager.close)
        for name in list(self.agents):
            attempt(f"agent {name}", lambda n=name: self.loop.run(self.agents.pop(n).stop()))
        for name, gw in self.gateways.items():
            attempt(f"gateway {name}", gw.close)
        for name, process in self.gateway_processes.items():
            attempt(f"gateway {name}", process.stop)
        attempt("kube", lambda: self.loop.run(self._stop_kube()))
        if self.apiserver_process is not None:
            attempt("apiserver", self.apiserver_process.stop)
        if errors:
            raise RuntimeError("platform did not stop cleanly: " + "; ".join(errors))

    async def _stop_kube(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self.watcher is not None:
            await self.watcher.stop()
        for client in (self.kube, self.harness_kube):
            if client is not None:
                await client.close()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.balancer is not None:
            await self.balancer.stop()
        if self.apiserver is not None:
            await self.apiserver.stop()

    # -- API outage -------------------------------------------------------------------------
    @contextlib.contextmanager
    def api_outage(self) -> Iterator[None]:
        """The platform's components lose the API server for the duration of the block."""
        self.cut_api()
        try:
            yield
        finally:
            self.restore_api()

    # -- REST ---------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        if self.rest is None:
            raise RuntimeError("the REST API is not running")
        return str(self.rest.url)

    @property
    def rest_metrics_url(self) -> str:
        address = self.rest.metrics_address if self.rest is not None else None
        if address is None:
            raise RuntimeError("the REST API serves no metrics (PlatformConfig.metrics)")
        return f"http://{address[0]}:{address[1]}/metrics"

    @property
    def controller_metrics_url(self) -> str:
        address = self.controllers.metrics_address if self.controllers is not None else None
        if address is None:
            raise RuntimeError("the controllers serve no metrics (PlatformConfig.metrics)")
        return f"http://{address[0]}:{address[1]}/metrics"

    def request(self, method: str, path: str, body: Any = None, *,
                token: str | None = None, data: Any = None) -> tuple[int, Any]:
        """Call the REST API; returns (status, decoded JSON body)."""

        async def call() -> tuple[int, Any]:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            headers = {"Authorization": f"Bearer {token or self.token}"}
            async with self._http.request(method, self.rest_url + path, json=body, data=data,
                                          headers=headers) as response:
                raw = await response.read()
                try:
                    return response.status, json.loads(raw) if raw else None
                except ValueError:
                    return response.status, raw.decode(errors="replace")

        return self.loop.run(call())

    # -- resources (the harness's direct view) ------------------------------------------------
    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        assert self.watcher is not None
        return self.watcher.get(plural, name)

    def create_application(self, name: str, module: bytes, *, device_names: list[str] = (),  # type: ignore[assignment]
                           selector: dict[str, Any] | None = None, all_devices: bool = False,
                           entry: str = "main", args: list[int | float] = (),  # type: ignore[assignment]
                           **spec: Any) -> dict[str, Any]:
        """Create an Application directly through the API server (not the REST API)."""
        targets: dict[str, Any] = (
            {"deviceNames": list(device_names)} if device_names
            else {"selector": selector} if selector is not None else {"allDevices": all_devices}
        )
        body = Application.from_dict({
            "apiVersion": API_VERSION, "kind": "Application", "metadata": {"name": name},
            "spec": {"wasmBytes": base64.b64encode(module).decode(), "targetDevices": targets,
                     "entry": entry, "args": list(args), **spec},
        }).to_dict()
        assert self.harness_kube is not None
        return self.loop.run(self.harness_kube.create(APPLICATIONS, body, self.namespace))

    def create_device(self, name: str, *, labels: dict[str, str] | None = None,
                      backend: str = DEFAULT_BACKEND, board: str | None = None,
                      preferred_gateway: str | None = None,
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Provision credentials and create an emulated Device directly through the API
        server (the REST API's POST /api/v1/devices does the same for users)."""
        spec: dict[str, Any] = {"publicKey": self.manager.provision(name),
                                "emulation": {"backend": backend}}
        if board:
            spec["emulation"]["board"] = board
        if preferred_gateway:
            spec["preferredGateway"] = preferred_gateway
        metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
        if options:
            metadata["annotations"] = {EMULATION_OPTIONS: json.dumps(options)}
        body = Device.from_dict({
            "apiVersion": API_VERSION, "kind": "Device", "metadata": metadata, "spec": spec,
        }).to_dict()
        assert self.harness_kube is not None
        return self.loop.run(self.harness_kube.create(DEVICES, body, self.namespace))

    def delete(self, plural: str, name: str) -> None:
        assert self.harness_kube is not None
        self.loop.run(self.harness_kube.delete(KINDS[plural], name, self.namespace))

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        assert self.harness_kube is not None
        return self.loop.run(self.harness_kube.patch(KINDS[plural], name, patch,
                                                     self.namespace))

    def wait(self, plural: str, name: str, predicate: Callable[[dict[str, Any]], Any],
             what: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until `predicate(object)` holds (the object exists); returns the object.
        The platform's waits default to twice the run's timeout (bench.waits): they span
        controllers, a gateway and a device."""
        timeout = waits.resolve(timeout, PLATFORM_SCALE)
        assert self.watcher is not None
        watcher = self.watcher

        def check() -> dict[str, Any] | None:
            obj = watcher.get(plural, name)
            return obj if obj is not None and predicate(obj) else None

        def seen() -> str:
            obj = watcher.get(plural, name)
            if obj is None:
                return f"{plural}/{name} does not exist"
            text = f"{plural}/{name} status: {json.dumps(obj.get('status'), sort_keys=True)}"
            return text + self._machine_tail(name) if plural == "devices" else text

        return self.loop.run(watcher.wait(check, timeout, f"{plural}/{name} {what}", seen),
                             timeout=timeout + 5)

    def _machine_tail(self, name: str, lines: int = 8) -> str:
        machine = self.manager.machines.get(name)
        if machine is None:
            return "; no machine"
        handle = machine.handle
        console = " | ".join(handle.console[-lines:])
        return (f"; machine {machine.backend} via {machine.gateway}: "
                f"{handle.lifecycle.value}{handle.extra_seen()}; console: {console}")

    def wait_gone(self, plural: str, name: str, timeout: float | None = None) -> None:
        assert self.watcher is not None
        timeout = waits.resolve(timeout, PLATFORM_SCALE)
        watcher = self.watcher

        def seen() -> str:
            obj = watcher.get(plural, name) or {}
            return (f"still there: finalizers {obj.get('metadata', {}).get('finalizers')}, "
                    f"status {json.dumps(obj.get('status'), sort_keys=True)}")

        self.loop.run(watcher.wait(lambda: watcher.get(plural, name) is None, timeout,
                                   f"{plural}/{name} to be deleted", seen), timeout=timeout + 5)

    def wait_phase(self, plural: str, name: str, phase: str, timeout: float | None = None
                   ) -> dict[str, Any]:
        return self.wait(plural, name,
                         lambda o: (o.get("status") or {}).get("phase") == phase,
                         f"to reach phase {phase}", timeout)


def module_digest(module: bytes) -> str:
    return hashlib.sha256(module).hexdigest()
