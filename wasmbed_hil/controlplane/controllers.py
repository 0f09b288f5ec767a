"""The kopf controllers for Device, Application and Gateway resources.

The same code runs against the emulated API server (in-process, `Controllers(...).start()`)
and a real cluster (`wasmbed-hil controllers --in-cluster` / `--kubeconfig`).

Who writes what (one writer per field, so merge patches never fight):
- the gateway serving a device writes Device.status (phase, telemetry, `apps`); the Device
  controller adds only the `Emulated` condition and drives the device manager;
- the Application controller is the only writer of Application.status: it aggregates the
  Devices' `status.apps` entries into `deviceStatuses`, `statistics` and the phase;
- a gateway writes its Gateway's `status.phase`/`lastHeartbeat`; the Gateway controller
  writes the device counts and the `Ready` condition (and `Failed` when a gateway has not
  reported for `gateway_stale_s`).

Application phase, from the per-device phases of its targets:
no targets or any Pending/Deploying/Installed target: Deploying; all Running: Running;
all Stopped: Stopped; all Failed: Failed; some Running and the rest Failed, Stopped or
Unknown: PartiallyRunning; no Running and some Failed: Failed. Unknown means the device is
disconnected or unreachable; a target named in `deviceNames` without a Device is Pending.
Deleting an Application: the phase becomes Deleting; the gateways stop and remove it from
their devices; the finalizer goes once no connected target still holds it (disconnected
devices are not waited for; `delete_grace_s` bounds the wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from ..kube.client import Kind, KubeClient, KubeConfig, KubeError
from ..kube.resources import (
    GROUP,
    VERSION,
    Application,
    ApplicationPhase,
    DeploymentPhase,
    Device,
    DevicePhase,
    Gateway,
    GatewayPhase,
    ResourceError,
    rfc3339,
)
from .emulation import DeviceManagerUnreachable, EmulationError, MachineManager
from .metrics import ControllerMetrics, Pass

log = logging.getLogger(__name__)

FINALIZER = f"{GROUP}/finalizer"
# JSON object of backend options for a Device's emulated machine, e.g. {"max_module_size": 4096}
EMULATION_OPTIONS = f"{GROUP}/emulation-options"
DEVICES, APPLICATIONS, GATEWAYS = (Kind.of(k) for k in (Device, Application, Gateway))
HOLDING = {DeploymentPhase.DEPLOYING, DeploymentPhase.INSTALLED, DeploymentPhase.RUNNING,
           DeploymentPhase.STOPPED, DeploymentPhase.FAILED}


def _condition(kind: str, ok: bool, reason: str, message: str,
               previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status = "True" if ok else "False"
    since = rfc3339()
    for c in previous or []:
        if c.get("type") == kind and c.get("status") == status:
            since = c.get("lastTransitionTime", since)
    return {"type": kind, "status": status, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since}


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


# ----------------------------------------------------------------------------- aggregation


def device_app_statuses(app: Application, name: str,
                        devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Application.status.deviceStatuses from the Devices (name -> {labels, status})."""
    targets = app.spec.target_devices
    digest = app.spec.module_digest
    out: list[dict[str, Any]] = []
    names = sorted(set(targets.device_names) if targets.device_names else (
        n for n, d in devices.items() if targets.selects(n, d["labels"])))
    for device in names:
        info = devices.get(device)
        if info is None:
            out.append({"device": device, "phase": DeploymentPhase.PENDING.value,
                        "error": "no such Device"})
            continue
        status = info["status"]
        entry = next((a for a in status.get("apps") or []
                      if a.get("application", a.get("appId")) == name), None)
        row: dict[str, Any] = {"device": device, "phase": DeploymentPhase.PENDING.value}
        if entry is not None:
            phase = DeploymentPhase(entry.get("deployment", DeploymentPhase.PENDING.value))
            if entry.get("digest") != digest and phase != DeploymentPhase.FAILED:
                phase = DeploymentPhase.DEPLOYING  # an older module is still there
            row["phase"] = phase.value
            for key in ("runId", "outcome", "values", "error", "lastUpdated"):
                if entry.get(key) not in (None, []):
                    row[key] = entry[key]
        if status.get("phase") in (DevicePhase.DISCONNECTED.value,
                                   DevicePhase.UNREACHABLE.value):
            row["phase"] = DeploymentPhase.UNKNOWN.value
        out.append(row)
    return out


def application_phase(rows: list[dict[str, Any]]) -> ApplicationPhase:
    phases = [DeploymentPhase(r["phase"]) for r in rows]
    if not phases or any(p in (DeploymentPhase.PENDING, DeploymentPhase.DEPLOYING,
                                DeploymentPhase.INSTALLED) for p in phases):
        return ApplicationPhase.DEPLOYING
    if all(p == DeploymentPhase.RUNNING for p in phases):
        return ApplicationPhase.RUNNING
    if all(p == DeploymentPhase.STOPPED for p in phases):
        return ApplicationPhase.STOPPED
    if DeploymentPhase.RUNNING in phases:
        return ApplicationPhase.PARTIALLY_RUNNING
    if DeploymentPhase.FAILED in phases:
        return ApplicationPhase.FAILED
    return ApplicationPhase.DEPLOYING


def application_status(app: Application, name: str,
                       devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = device_app_statuses(app, name, devices)
    phases = [DeploymentPhase(r["phase"]) for r in rows]
    held = (DeploymentPhase.INSTALLED, DeploymentPhase.RUNNING, DeploymentPhase.STOPPED)
    phase = application_phase(rows)
    failed = [r for r in rows if r["phase"] == DeploymentPhase.FAILED.value]
    return {
        "phase": phase.value,
        "deviceStatuses": rows,
        "statistics": {
            "targets": len(rows),
            "deployed": sum(p in held for p in phases),
            "running": phases.count(DeploymentPhase.RUNNING),
            "failed": len(failed),
            "stopped": phases.count(DeploymentPhase.STOPPED),
        },
        "error": (f"{len(failed)} of {len(rows)} devices failed; first: "
                  f"{failed[0]['device']}: {failed[0].get('error', '')}"[:1024]
                  if failed else None),
    }


# ----------------------------------------------------------------------------- controllers


@dataclass
class ControllerSettings:
    namespace: str = "wasmbed"
    gateway_stale_s: float = 30.0  # a gateway silent this long is Failed
    delete_grace_s: float = 60.0  # longest wait for devices to remove a deleted app
    resync_s: float = 30.0  # aggregation also runs this often without any change
    batch_window_s: float = 0.02
    window_per_row_s: float = 0.002  # 100 target devices: at most 5 status writes a second
    metrics_port: int | None = None  # serve /metrics on this port (0: any free one)
    metrics_host: str = "127.0.0.1"
    # A device manager that did not answer (controlplane.machineclient) is asked again after
    # this long.
    manager_retry_s: float = 2.0


@dataclass
class _Shared:
    """State the handlers share, living on kopf's loop."""

    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> labels, status
    # Per Gateway name: [connected, enrolled] Devices whose status names it, kept up to date
    # by set_device/drop_device (counting all Devices on every change was O(N) per event).
    gateway_counts: dict[str, list[int]] = field(default_factory=dict)
    # The phase each Application's and Gateway's status had when last seen (for metrics).
    app_phases: dict[str, str | None] = field(default_factory=dict)
    gateway_phases: dict[str, str | None] = field(default_factory=dict)
    # Per Application: held while its status is written (the daemon and the deletion).
    app_writes: dict[str, asyncio.Lock] = field(default_factory=dict)

    def phase_readers(self) -> dict[str, Callable[[], list[str | None]]]:
        """For a scrape, possibly from another thread: each dict is copied first (one C-level
        call under the GIL), never iterated while kopf's loop may change it."""
        return {
            "Device": lambda: [d["status"].get("phase") for d in self.devices.copy().values()],
            "Application": lambda: list(self.app_phases.copy().values()),
            "Gateway": lambda: list(self.gateway_phases.copy().values()),
        }
    changed: asyncio.Condition | None = None
    version: int = 0

    def set_device(self, name: str, labels: dict[str, Any], status: dict[str, Any]) -> None:
        self._count(self.devices.get(name), -1)
        self.devices[name] = info = {"labels": labels, "status": status}
        self._count(info, 1)

    def drop_device(self, name: str) -> None:
        self._count(self.devices.pop(name, None), -1)

    def _count(self, info: dict[str, Any] | None, sign: int) -> None:
        if info is None:
            return
        status = info["status"]
        gateway = (status.get("gateway") or {}).get("name")
        if not isinstance(gateway, str):
            return
        counts = self.gateway_counts.setdefault(gateway, [0, 0])
        counts[0] += sign * (status.get("phase") == DevicePhase.CONNECTED.value)
        counts[1] += sign * bool(status.get("deviceId"))
        if counts == [0, 0]:
            del self.gateway_counts[gateway]

    def condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed

    async def bump(self) -> None:
        cond = self.condition()
        async with cond:
            self.version += 1
            cond.notify_all()

    async def pause(self, stopped: Any, seen: int, timeout: float) -> None:
        """Until the devices change after `seen`, the daemon is stopped, or `timeout`."""
        tasks = [asyncio.ensure_future(stopped.wait()),
                 asyncio.ensure_future(self.wait_change(seen, timeout))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_change(self, seen: int, timeout: float) -> int:
        cond = self.condition()
        async with cond:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cond.wait_for(lambda: self.version != seen), timeout)
            return self.version


def build_registry(
    kube_config: KubeConfig,
    settings: ControllerSettings,
    manager: MachineManager | None,
    kube_for_loop: Callable[[], KubeClient],
    metrics: ControllerMetrics | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    shared = _Shared()
    if metrics is None:
        metrics = ControllerMetrics()
    metrics.watch_objects(shared.phase_readers())
    ns = settings.namespace

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=kube_config.server, ca_data=kube_config.ca_pem, token=kube_config.token,
            scheme="Bearer" if kube_config.token else None,
            certificate_data=kube_config.client_cert_pem,
            private_key_data=kube_config.client_key_pem,
            insecure=kube_config.insecure, default_namespace=ns,
        )

    # -- Device ---------------------------------------------------------------------------
    @kopf.on.event(GROUP, VERSION, "devices", registry=registry)
    async def device_event(type: str, name: str, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED":
            shared.drop_device(name)
        else:
            shared.set_device(name, dict(body.metadata.labels or {}),
                              dict(body.get("status") or {}))
        await shared.bump()

    @kopf.on.resume(GROUP, VERSION, "devices", registry=registry)
    @kopf.on.create(GROUP, VERSION, "devices", registry=registry)
    def device_created(name: str, body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                       status: kopf.Status, **_: Any) -> None:
        emulation = spec.get("emulation")
        if not emulation:
            return
        with metrics.reconcile("device") as one:
            _emulate(name, body, spec, patch, status, emulation, one)

    def _emulate(name: str, body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch,
                 status: kopf.Status, emulation: Any, one: Pass) -> None:
        previous = list(status.get("conditions") or [])
        if manager is None:
            cond = _condition("Emulated", False, "NoDeviceManager",
                              "this controller runs without a device manager", previous)
        else:
            try:
                model = Device.from_dict(dict(body))
                options = json.loads(body.metadata.annotations.get(EMULATION_OPTIONS, "{}"))
                if not isinstance(options, dict):
                    raise EmulationError(f"{EMULATION_OPTIONS} must be a JSON object")
                machine = manager.start(name, model.spec.device_identity,
                                        emulation["backend"], emulation.get("board"),
                                        spec.get("preferredGateway"), options)
                cond = _condition("Emulated", True, "MachineStarted",
                                  f"{machine.backend} machine wired to gateway "
                                  f"{machine.gateway}", previous)
            except DeviceManagerUnreachable as exc:
                # The manager may be restarting: said in the condition, and tried again.
                cond = _condition("Emulated", False, "DeviceManagerUnreachable", str(exc),
                                  previous)
                one.failed()
                others = [c for c in previous if c.get("type") != "Emulated"]
                patch.status["conditions"] = [*others, cond]
                raise kopf.TemporaryError(str(exc), delay=settings.manager_retry_s) from None
            except (EmulationError, ResourceError, ValueError) as exc:
                cond = _condition("Emulated", False, "MachineFailed", str(exc), previous)
                one.failed()
                kopf.warn(body, reason="MachineFailed", message=str(exc)[:512])
        others = [c for c in previous if c.get("type") != "Emulated"]
        patch.status["conditions"] = [*others, cond]

    @kopf.on.delete(GROUP, VERSION, "devices", registry=registry)
    def device_deleted(name: str, spec: kopf.Spec, **_: Any) -> None:
        if manager is not None and spec.get("emulation"):
            with metrics.reconcile("device"):
                manager.stop(name)

    # -- Application ----------------------------------------------------------------------
    async def write_app_status(kube: KubeClient, name: str, status: dict[str, Any]) -> None:
        await kube.patch(APPLICATIONS, name, {"status": status}, ns, status=True)

    @kopf.daemon(GROUP, VERSION, "applications", registry=registry,
                 cancellation_backoff=2.0, cancellation_timeout=5.0,
                 when=lambda meta, **_: not meta.get("deletionTimestamp"))
    async def aggregate(name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                        **_: Any) -> None:
        kube = kube_for_loop()
        last: dict[str, Any] | None = None
        seen = -1
        while not stopped:
            seen = shared.version
            app: Application | None = None
            written = True
            with metrics.reconcile("application") as one:
                try:
                    app = Application.from_dict(dict(body))
                except ResourceError as exc:  # the API server validates; be safe anyway
                    status = {"phase": ApplicationPhase.FAILED.value, "error": str(exc)}
                    one.failed()
                else:
                    status = application_status(app, name, shared.devices)
                    status["observedGeneration"] = body.metadata.get("generation")
                async with shared.app_writes.setdefault(name, asyncio.Lock()):
                    if stopped:
                        # Being deleted (kopf stops this daemon as the deletion begins): a
                        # write in flight as the deletion wrote Deleting could land after
                        # it, and the Application showed its old phase until it was gone.
                        return
                    # Before the write: whoever sees the phase written finds it in metrics.
                    shared.app_phases[name] = status.get("phase")
                    if status != last:
                        try:
                            await write_app_status(kube, name,
                                                   {**status, "lastUpdated": rfc3339()})
                            last = status
                        except KubeError as exc:
                            if exc.status == 404:
                                shared.app_phases.pop(name, None)
                                return
                            log.info("application %s: status not written: %s", name, exc)
                            one.failed()
                            written = False
            if not written:
                await asyncio.sleep(0.2)  # retry pacing during an API outage
                continue
            # Coalesce bursts of device events: a write of N rows costs the API server (and
            # every watcher) O(N), so large fleets get a proportionally wider window. A
            # milestone (the phase changes, or the last target reports its result) ends the
            # window early: 1,000 targets meant a 2 s window between the last result and
            # the Application's Running.
            rows = len(status.get("deviceStatuses") or ())
            window = max(settings.batch_window_s, rows * settings.window_per_row_s)
            if app is not None:
                await _coalesce(stopped, window, milestone(status),
                                lambda a=app: milestone(application_status(  # type: ignore[misc]
                                    a, name, shared.devices)))
            else:
                await asyncio.sleep(window)
            if shared.version == seen:
                await shared.pause(stopped, seen, settings.resync_s)

    def milestone(status: dict[str, Any]) -> tuple[Any, bool]:
        rows = status.get("deviceStatuses") or ()
        return status.get("phase"), bool(rows) and all("outcome" in r for r in rows)

    async def _coalesce(stopped: Any, window: float, written: tuple[Any, bool],
                        now: Callable[[], tuple[Any, bool]]) -> None:
        """Wait `window` seconds, looking whether the devices' changes reached a milestone
        other than the one written (then return at once). A look recomputes the status, O(N):
        every batch window cost 15 % of the controllers' thread at 1,000 targets, so it is
        taken ten times a window, but never less often than every 0.25 s."""
        loop = asyncio.get_running_loop()
        end = loop.time() + window
        every = min(max(settings.batch_window_s, window / 10), 0.25)
        seen = shared.version
        while not stopped and (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, every))
            if shared.version != seen:
                seen = shared.version
                if now() != written:
                    return

    @kopf.on.delete(GROUP, VERSION, "applications", registry=registry)
    async def application_deleted(name: str, body: kopf.Body, **_: Any) -> None:
        with metrics.reconcile("application_delete"):
            try:
                await _remove_application(name, body)
            finally:
                shared.app_phases.pop(name, None)
                shared.app_writes.pop(name, None)

    async def _remove_application(name: str, body: kopf.Body) -> None:
        kube = kube_for_loop()
        # After the daemon's write in flight, if any (it writes no more once stopped).
        async with shared.app_writes.setdefault(name, asyncio.Lock()):
            shared.app_phases[name] = ApplicationPhase.DELETING.value
            with contextlib.suppress(KubeError):
                await write_app_status(kube, name, {"phase": ApplicationPhase.DELETING.value,
                                                    "lastUpdated": rfc3339()})
        deadline = time.monotonic() + settings.delete_grace_s
        seen = -1
        while True:
            holding = [
                dev for dev, info in shared.devices.items()
                if info["status"].get("phase") == DevicePhase.CONNECTED.value
                and any(a.get("application", a.get("appId")) == name
                        for a in info["status"].get("apps") or [])
            ]
            if not holding:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                kopf.warn(body, reason="RemovalTimedOut",
                          message=f"still on {', '.join(holding)}; finalizer released")
                return
            seen = await shared.wait_change(seen, remaining)

    # -- Gateway --------------------------------------------------------------------------
    @kopf.daemon(GROUP, VERSION, "gateways", registry=registry,
                 cancellation_backoff=2.0, cancellation_timeout=5.0,
                 when=lambda meta, **_: not meta.get("deletionTimestamp"))
    async def gateway_counts(name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                             **_: Any) -> None:
        kube = kube_for_loop()
        last: dict[str, Any] | None = None
        try:
            while not stopped:
                seen = shared.version
                written = True
                with metrics.reconcile("gateway") as one:
                    status, compare = gateway_status(name, body)
                    shared.gateway_phases[name] = status.get(
                        "phase", (body.get("status") or {}).get("phase"))
                    if compare != last:
                        try:
                            await kube.patch(GATEWAYS, name, {"status": status}, ns,
                                             status=True)
                            last = compare
                        except KubeError as exc:
                            if exc.status == 404:
                                return
                            one.failed()
                            written = False
                if not written:
                    await asyncio.sleep(0.2)  # retry pacing during an API outage
                    continue
                await shared.pause(stopped, seen,
                                   min(settings.resync_s, settings.gateway_stale_s / 2))
        finally:
            shared.gateway_phases.pop(name, None)

    def gateway_status(name: str, body: kopf.Body) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Gateway's status from its devices, and the same without transition times
        (what decides whether it changed)."""
        connected, enrolled = shared.gateway_counts.get(name, (0, 0))
        status_now = dict(body.get("status") or {})
        beat = _parse_time(status_now.get("lastHeartbeat"))
        fresh = beat is not None and time.time() - beat < settings.gateway_stale_s
        running = status_now.get("phase") == GatewayPhase.RUNNING.value
        ready = running and fresh
        reason = ("Serving" if ready else "NotStarted" if beat is None
                  else "Stopped" if status_now.get("phase") == GatewayPhase.STOPPED.value
                  else "HeartbeatStale")
        message = (f"last report {status_now.get('lastHeartbeat') or 'never'}")
        status: dict[str, Any] = {
            "connectedDevices": connected,
            "enrolledDevices": enrolled,
            "conditions": [_condition("Ready", ready, reason, message,
                                      status_now.get("conditions"))],
            "observedGeneration": body.metadata.get("generation"),
        }
        if running and not fresh and beat is not None:
            status["phase"] = GatewayPhase.FAILED.value
        compare = {**status, "conditions": [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status["conditions"]]}
        return status, compare

    return registry


class Controllers:
    """Runs the kopf operator for one namespace in its own thread (with its own loop)."""

    def __init__(
        self,
        kube_config: KubeConfig,
        settings: ControllerSettings | None = None,
        manager: MachineManager | None = None,
    ) -> None:
        self.kube_config = kube_config
        self.settings = settings or ControllerSettings()
        self.manager = manager
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._kube: KubeClient | None = None
        self.errors: list[BaseException] = []
        self.metrics = ControllerMetrics()
        # Where /metrics is served (settings.metrics_port), once the operator runs.
        self.metrics_address: tuple[str, int] | None = None

    def _kube_for_loop(self) -> KubeClient:
        if self._kube is None:
            self._kube = KubeClient(self.kube_config)
        return self._kube

    def operator_settings(self) -> kopf.OperatorSettings:
        s = kopf.OperatorSettings()
        prefix = f"kopf.{GROUP}"
        s.persistence.finalizer = FINALIZER
        s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
        s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
        s.networking.error_backoffs = [0.1, 0.2, 0.5, 1, 2]
        s.networking.request_timeout = 30
        s.watching.server_timeout = 60
        s.watching.reconnect_backoff = 0.1
        s.queueing.error_delays = [0.1, 0.2, 0.5, 1, 2, 5]
        s.execution.max_workers = 8
        s.posting.level = logging.INFO
        return s

    async def run(self) -> None:
        """Run until the stop flag is set (for the CLI and for `start()`)."""
        registry = build_registry(self.kube_config, self.settings, self.manager,
                                  self._kube_for_loop, self.metrics)
        endpoint = None
        if self.settings.metrics_port is not None:
            from ..gateway.metrics import MetricsEndpoint

            # In kopf's own loop: a scrape reads the controllers' view between two callbacks.
            endpoint = MetricsEndpoint(self.metrics.registry)
            self.metrics_address = await endpoint.start(self.settings.metrics_host,
                                                        self.settings.metrics_port)
        try:
            await kopf.operator(
                registry=registry, settings=self.operator_settings(), standalone=True,
                namespaces=[self.settings.namespace], stop_flag=self.stop_flag,
                ready_flag=self.ready,
            )
        finally:
            # kopf waits for a threading.Event stop flag in an executor thread; when it
            # stopped on a signal instead, release that thread or interpreter exit hangs.
            self.stop_flag.set()
            kube, self._kube = self._kube, None
            if kube is not None:
                await kube.close()
            if endpoint is not None:
                await endpoint.stop()

    def start(self, timeout: float = 30.0) -> Controllers:
        """Run in a thread (kopf then cannot handle OS signals; the caller stops it)."""
        logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)

        def main() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:
                self.errors.append(exc)
                self.ready.set()

        self._thread = threading.Thread(target=main, name="kopf-controllers", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout) or self.errors:
            self.stop()
            raise RuntimeError(f"the controllers did not start: {self.errors or 'timeout'}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the kopf controllers did not stop in time")
            self._thread = None
