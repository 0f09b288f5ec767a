"""The convergence oracle: after a fault, did every source of truth come to agree?

Three sources are read, in one look on the harness loop (a consistent snapshot):

- the devices: their handles (lifecycle, the id they were given, the modules they hold when
  the backend can tell without the protocol) and their telemetry (the app list of their last
  heartbeat, as the gateway received it);
- the gateways: their status tables, deployments, the runs they started and the results they
  stored (the local cache, over every incarnation) and their protocol traces;
- the control plane, when a Platform is given: Application and Device resources.

and compared with each other and with the desired state (`DesiredState`: which modules each
device should hold, how many results each (device, application) should have produced).
Each difference is a `Disagreement` that names the check and the two sources that disagree.

`ConvergenceOracle.wait(timeout)` re-checks after every event of any source (gateway events,
heartbeats included; device lifecycle events; resource changes) until nothing disagrees, and
raises `NotConverged` (an AssertionError) with the disagreements and the evidence of each
source when the bound passes. A device that is powered must be connected and must have had
a heartbeat acknowledged after the wait began (its session is not stuck).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..gateway import Gateway
from ..gateway.events import EventLog
from ..protocol import DevicePhase
from .device import DeviceHandle
from .gateway import GatewayHandle
from .loop import LoopThread
from .seams import Lifecycle

__all__ = [
    "CONTROL_PLANE", "DESIRED", "DEVICE", "GATEWAY", "Convergence", "ConvergenceOracle",
    "DesiredState", "Disagreement", "NotConverged",
]

DEVICE, GATEWAY, CONTROL_PLANE, DESIRED = "device", "gateway", "control plane", "desired state"
FINAL_APPLICATION_PHASES = frozenset({"Running", "PartiallyRunning", "Failed", "Stopped"})
UNSETTLED_DEPLOYMENT_PHASES = frozenset({"Pending", "Deploying", "Unknown"})


@dataclass(frozen=True)
class Disagreement:
    """One thing two sources do not agree on."""

    check: str  # "lost_result", "duplicate_run_id", "stuck_deployment", "module_mismatch"...
    subject: str  # what it is about: "device-0", "device-0 app adder run 3"...
    source: str  # the source that disagrees (DEVICE, GATEWAY, CONTROL_PLANE, DESIRED) ...
    against: str  # ... with this one
    detail: str

    @property
    def sources(self) -> tuple[str, str]:
        return (self.source, self.against)

    def describe(self) -> str:
        return f"[{self.check}] {self.subject}: {self.sources[0]} vs {self.sources[1]}: " \
               f"{self.detail}"


@dataclass
class DesiredState:
    """What the fleet should look like once converged.

    `modules`: device name -> {app id: SHA-256 of the module}; a device listed here must hold
    exactly these applications. `runs`: (device name, app id) -> how many results the
    gateway should hold for it (exactly). Devices and applications not listed are not
    checked for these two.
    """

    modules: dict[str, dict[str, bytes]] = field(default_factory=dict)
    runs: dict[tuple[str, str], int] = field(default_factory=dict)

    def install(self, device: DeviceHandle | str, app_id: str, module: bytes) -> DesiredState:
        """`device` should hold `module` as `app_id`."""
        self.modules.setdefault(_name(device), {})[app_id] = hashlib.sha256(module).digest()
        return self

    def holds_nothing(self, device: DeviceHandle | str) -> DesiredState:
        """`device` should hold no application."""
        self.modules[_name(device)] = {}
        return self

    def run(self, device: DeviceHandle | str, app_id: str, results: int = 1) -> DesiredState:
        """`app_id` on `device` should have produced exactly `results` results."""
        self.runs[(_name(device), app_id)] = results
        return self


@dataclass(frozen=True)
class Convergence:
    """A check that passed: how long it took and what it looked at."""

    elapsed_s: float
    checks: int  # looks taken
    devices: int
    results: int  # results held for the devices checked
    excused: tuple[str, ...] = ()  # runs a fault was allowed to lose, and why


class NotConverged(AssertionError):
    """The sources still disagreed when the bound passed. `disagreements` lists them,
    `evidence` holds what each source showed (name -> text), for the test report."""

    def __init__(self, timeout: float, disagreements: list[Disagreement],
                 evidence: dict[str, str]) -> None:
        by_pair = Counter(d.sources for d in disagreements)
        pairs = ", ".join(f"{a} vs {b} ({n})" for (a, b), n in sorted(by_pair.items()))
        lines = "\n".join(f"  - {d.describe()}" for d in disagreements[:20])
        more = f"\n  ... and {len(disagreements) - 20} more" if len(disagreements) > 20 else ""
        super().__init__(
            f"not converged within {timeout:g}s: {len(disagreements)} disagreement(s) "
            f"between {pairs}\n{lines}{more}"
        )
        self.timeout = timeout
        self.disagreements = disagreements
        self.evidence = evidence


def _name(device: DeviceHandle | str) -> str:
    return device.name if isinstance(device, DeviceHandle) else device


def _hex(digest: bytes | None) -> str:
    return digest.hex()[:16] if digest else "-"


def _modules(apps: Mapping[str, bytes]) -> str:
    return ", ".join(f"{a}={_hex(d)}" for a, d in sorted(apps.items())) or "none"


class ConvergenceOracle:
    """Reads the sources of truth of one test and tells whether they agree.

    `devices` are the handles whose state is checked (with a platform, its machines are
    added); `gateways` the gateways they use (with a platform, its gateways are added).
    Runs listed in `excused` ((device name, run id) pairs) are runs a fault was allowed to
    lose (a power cut in the middle of a run): they are reported, not counted as lost.
    """

    def __init__(
        self,
        loop: LoopThread,
        *,
        gateways: Sequence[GatewayHandle] = (),
        devices: Sequence[DeviceHandle] = (),
        platform: Any = None,
    ) -> None:
        self.loop = loop
        self.platform = platform
        self._gateways = list(gateways)
        self._devices = list(devices)

    # -- what is looked at -------------------------------------------------------------------
    @property
    def gateways(self) -> list[GatewayHandle]:
        found = list(self._gateways)
        if self.platform is not None:
            found += [g for g in self.platform.gateways.values() if g not in found]
        return found

    @property
    def devices(self) -> list[DeviceHandle]:
        found = list(self._devices)
        if self.platform is not None:
            found += [m.handle for m in list(self.platform.manager.machines.values())
                      if m.handle not in found]
        return found

    # -- the sync API --------------------------------------------------------------------------
    def check(self, desired: DesiredState | None = None, *, since: float | None = None,
              excused: Iterable[tuple[str, int]] = ()) -> list[Disagreement]:
        """One look now; the disagreements found (empty: converged). A heartbeat counts as
        fresh when acknowledged after `since` (default: any heartbeat at all)."""
        look = _Look(self, desired, since or 0.0, set(excused))
        return self.loop.call(look.run)

    def wait(self, timeout: float, desired: DesiredState | None = None, *,
             excused: Iterable[tuple[str, int]] = ()) -> Convergence:
        """Wait (re-checking on every event of any source) until every source agrees;
        NotConverged after `timeout` seconds, with the last disagreements and the evidence."""
        started = time.time()
        look = _Look(self, desired, started, set(excused))
        return self.loop.run(self._wait(look, timeout), timeout + 15)

    def evidence(self) -> dict[str, str]:
        """What each source shows now (name -> text), for a report."""
        look = _Look(self, None, 0.0, set())
        return self.loop.call(look.evidence)

    # -- on the loop -----------------------------------------------------------------------
    async def _wait(self, look: _Look, timeout: float) -> Convergence:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wake = asyncio.Event()

        def poke(_event: object = None) -> None:
            wake.set()

        watched: list[EventLog] = []
        watcher_task: asyncio.Task[None] | None = None
        if self.platform is not None and self.platform.watcher is not None:
            watcher_task = asyncio.create_task(self._watch_resources(poke))
        looks = 0
        try:
            while True:
                for log in self._event_logs():  # gateways restart: follow new incarnations
                    if log not in watched:
                        log.add_listener(poke)
                        watched.append(log)
                wake.clear()
                looks += 1
                found = look.run()
                if not found:
                    return Convergence(time.time() - look.since, looks, len(look.devices),
                                       look.results_seen, tuple(look.excused_notes))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise NotConverged(timeout, found, look.evidence())
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    continue  # one last look before giving up
        finally:
            for log in watched:
                log.remove_listener(poke)
            if watcher_task is not None:
                watcher_task.cancel()
                await asyncio.gather(watcher_task, return_exceptions=True)

    def _event_logs(self) -> list[EventLog]:
        logs = [g.gateway.events for g in self.gateways if g.running]
        return logs + [d.lifecycle_events for d in self.devices]

    async def _watch_resources(self, poke: Callable[[], None]) -> None:
        changed = self.platform.watcher.changed
        while True:
            async with changed:
                await changed.wait()
            poke()


class _Look:
    """One comparison of the sources (runs on the loop thread)."""

    def __init__(self, oracle: ConvergenceOracle, desired: DesiredState | None, since: float,
                 excused: set[tuple[str, int]]) -> None:
        self.oracle = oracle
        self.desired = desired
        self.since = since
        self.excused = excused
        self.excused_notes: list[str] = []
        self.results_seen = 0
        self.devices: list[DeviceHandle] = []

    # ---------------------------------------------------------------- helpers
    def _gateways(self) -> list[tuple[GatewayHandle, Gateway]]:
        return [(g, g.gateway) for g in self.oracle.gateways if g.running]

    @staticmethod
    def _status(gw: Gateway, identity: str) -> Any:
        return next((s for s in gw.status.values() if s.identity == identity), None)

    def _home(self, device: DeviceHandle) -> tuple[Gateway, Any] | None:
        """The gateway the device is enrolled at (connected there first), with its status."""
        found = [(gw, st) for _, gw in self._gateways()
                 if (st := self._status(gw, device.identity)) is not None]
        found.sort(key=lambda p: p[1].phase is not DevicePhase.CONNECTED)
        return found[0] if found else None

    # ---------------------------------------------------------------- the look
    def run(self) -> list[Disagreement]:
        out: list[Disagreement] = []
        self.excused_notes = []
        self.results_seen = 0
        self.devices = self.oracle.devices
        for handle in self.oracle.gateways:
            if not handle.running:
                out.append(Disagreement("gateway_down", handle.config.name, DESIRED, GATEWAY,
                                        "the gateway is stopped"))
        if self.desired is not None:
            known = {d.name for d in self.devices}
            named = set(self.desired.modules) | {name for name, _ in self.desired.runs}
            for name in sorted(named - known):
                out.append(Disagreement("missing_device", name, DESIRED, DEVICE,
                                        "the desired state names a device that does not exist"))
        for device in self.devices:
            out += self._session(device)
        for _, gw in self._gateways():
            out += self._deployments(gw)
        out += self._runs()
        out += self._modules()
        if self.oracle.platform is not None:
            out += self._control_plane()
        return out

    def _session(self, device: DeviceHandle) -> list[Disagreement]:
        home = self._home(device)
        name = device.name
        if not device.powered:
            if home is not None and home[1].phase is DevicePhase.CONNECTED:
                return [Disagreement("stuck_session", name, DEVICE, GATEWAY,
                                     "the device is powered off, the gateway shows it Connected")]
            return []
        if home is None:
            return [Disagreement("not_enrolled", name, DEVICE, GATEWAY,
                                 f"the device is {device.lifecycle.value} (id "
                                 f"{device.device_id}), no gateway has it enrolled")]
        gw, st = home
        out = []
        if device.device_id != st.device_id:
            out.append(Disagreement("identity", name, DEVICE, GATEWAY,
                                    f"the device says it is {device.device_id}, gateway "
                                    f"{gw.config.name} enrolled it as {st.device_id}"))
        if device.lifecycle is not Lifecycle.ONLINE or st.phase is not DevicePhase.CONNECTED:
            out.append(Disagreement("stuck_session", name, DEVICE, GATEWAY,
                                    f"the device is {device.lifecycle.value}, gateway "
                                    f"{gw.config.name} shows it {st.phase.value}"))
        elif st.last_heartbeat is None or st.last_heartbeat < self.since:
            out.append(Disagreement("no_heartbeat", name, DEVICE, GATEWAY,
                                    "no heartbeat acknowledged since the check began "
                                    f"({st.heartbeats} in this session)"))
        return out

    def _deployments(self, gw: Gateway) -> list[Disagreement]:
        out = []
        for dep in gw.deployments.history:
            who = self._device_name(gw, dep.device_id)
            if dep.state in ("pending", "transferring"):
                out.append(Disagreement(
                    "stuck_deployment", f"{who} app {dep.app_id}", GATEWAY, DEVICE,
                    f"deployment still {dep.state} ({dep.bytes_sent}/{dep.size} bytes sent, "
                    f"{dep.attempts} connection(s))"))
            elif (dep.state == "installed" and dep.run is not None and dep.run_id is None
                  and not dep.error):
                out.append(Disagreement("stuck_deployment", f"{who} app {dep.app_id}", GATEWAY,
                                        DEVICE, "installed, its run not started yet"))
        return out

    @staticmethod
    def _device_name(gw: Gateway, device_id: str) -> str:
        st = gw.status.get(device_id)
        return st.name if st is not None else device_id[:8]

    def _runs(self) -> list[Disagreement]:
        out: list[Disagreement] = []
        names = {d.identity: d.name for d in self.devices}
        counted: dict[tuple[str, str], list[int]] = {}
        for _, gw in self._gateways():
            for st in list(gw.status.values()):
                name = names.get(st.identity)
                if name is None:
                    continue
                out += self._device_runs(gw, st.device_id, name, counted)
        if self.desired is not None:
            for (name, app_id), want in sorted(self.desired.runs.items()):
                got = counted.get((name, app_id), [])
                if len(got) != want:
                    kind = "lost_result" if len(got) < want else "duplicate_run"
                    out.append(Disagreement(
                        kind, f"{name} app {app_id}", DESIRED, GATEWAY,
                        f"{want} result(s) expected, the gateway holds {len(got)} "
                        f"(run ids {sorted(got) or 'none'})"))
        return out

    def _device_runs(self, gw: Gateway, device_id: str, name: str,
                     counted: dict[tuple[str, str], list[int]]) -> list[Disagreement]:
        out = []
        results = gw.store.results(device_id)
        self.results_seen += len(results)
        stored = {(r.app_id, r.run_id): r for r in results}
        started = {run_id: app_id for _, run_id, app_id in gw.store.started_runs(device_id)}
        by_run: dict[int, set[str]] = {}
        for r in results:
            by_run.setdefault(r.run_id, set()).add(r.app_id)
            counted.setdefault((name, r.app_id), []).append(r.run_id)
        for run_id, apps in sorted(by_run.items()):
            if len(apps) > 1:
                out.append(Disagreement("duplicate_run_id", f"{name} run {run_id}", GATEWAY,
                                        DEVICE, f"results of {sorted(apps)} share one run id"))
            for app_id in apps:
                if started.get(run_id) != app_id:
                    out.append(Disagreement(
                        "unknown_run", f"{name} app {app_id} run {run_id}", GATEWAY, DEVICE,
                        "a result is stored for a run this gateway never started"))
        trace = gw.trace(device_id)
        acked = {e[4].get("run_id") for e in trace if e[3] == "StartAck" and e[1] == "in"}
        starts = Counter(e[4].get("run_id") for e in trace if e[3] == "StartApp" and e[1] == "out")
        for run_id, n in sorted(starts.items(), key=lambda kv: str(kv[0])):
            if n > 1:
                out.append(Disagreement("duplicate_run_id", f"{name} run {run_id}", GATEWAY,
                                        DEVICE, f"StartApp with this run id sent {n} times"))
        reported: dict[tuple[str, int], set[str]] = {}
        for e in trace:
            if e[3] == "ExecutionResult" and e[1] == "in":
                f = e[4]
                key = (str(f.get("app_id")), int(f.get("run_id", -1)))
                reported.setdefault(key, set()).add(
                    json.dumps([f.get("outcome"), f.get("values")], default=str))
        for (app_id, run_id), variants in sorted(reported.items()):
            if len(variants) > 1:
                out.append(Disagreement(
                    "duplicate_run_id", f"{name} app {app_id} run {run_id}", DEVICE, GATEWAY,
                    f"the device reported {len(variants)} different results for one run id; "
                    "the gateway kept one"))
        for run_id, app_id in sorted(started.items()):
            if (app_id, run_id) in stored:
                continue
            if (name, run_id) in self.excused:
                self.excused_notes.append(f"{name} app {app_id} run {run_id}: lost to a fault")
                continue
            seen = "acknowledged by the device" if run_id in acked else "not acknowledged " \
                "in this gateway's trace"
            out.append(Disagreement("lost_result", f"{name} app {app_id} run {run_id}",
                                    GATEWAY, DEVICE,
                                    f"the run was started ({seen}), no result is stored"))
        return out

    def _desired_modules(self) -> dict[str, dict[str, bytes]]:
        if self.desired is not None and self.desired.modules:
            return self.desired.modules
        platform = self.oracle.platform
        if platform is None or platform.watcher is None:
            return {}
        wanted: dict[str, dict[str, bytes]] = {}
        for name, obj in platform.watcher.informers["applications"].objects.items():
            spec = obj.get("spec") or {}
            digest = spec.get("digest")
            if not digest:
                import base64

                digest = hashlib.sha256(base64.b64decode(spec.get("wasmBytes", ""))).hexdigest()
            for row in (obj.get("status") or {}).get("deviceStatuses") or []:
                if (obj.get("metadata") or {}).get("deletionTimestamp") is None:
                    wanted.setdefault(row["device"], {})[name] = bytes.fromhex(digest)
        return wanted

    def _modules(self) -> list[Disagreement]:
        out: list[Disagreement] = []
        desired = self._desired_modules()
        for device in self.devices:
            if not device.powered:
                continue
            home = self._home(device)
            telemetry = ({a.app_id: a.digest for a in home[1].apps}
                         if home is not None else None)
            held = device.installed_modules()
            if held is not None and telemetry is not None and held != telemetry:
                out.append(Disagreement(
                    "module_mismatch", device.name, DEVICE, GATEWAY,
                    f"the device holds {_modules(held)}, its last heartbeat at the gateway "
                    f"said {_modules(telemetry)}"))
            actual = held if held is not None else telemetry
            if actual is None:
                continue
            want = desired.get(device.name)
            if want is not None and want != actual:
                out.append(Disagreement(
                    "module_mismatch", device.name, DESIRED, DEVICE,
                    f"should hold {_modules(want)}, holds {_modules(actual)}"))
            if home is not None:
                gw = home[0]
                installed: dict[str, bytes] = {}
                for dep in gw.deployments.history:
                    if dep.device_id == home[1].device_id and dep.state == "installed":
                        installed[dep.app_id] = dep.digest
                for app_id, digest in sorted(installed.items()):
                    if actual.get(app_id) != digest:
                        out.append(Disagreement(
                            "module_mismatch", f"{device.name} app {app_id}", GATEWAY, DEVICE,
                            f"the gateway installed {_hex(digest)}, the device holds "
                            f"{_hex(actual.get(app_id))}"))
        return out

    def _control_plane(self) -> list[Disagreement]:
        out: list[Disagreement] = []
        watcher = self.oracle.platform.watcher
        if watcher is None:
            return out
        for name, obj in sorted(watcher.informers["applications"].objects.items()):
            status = obj.get("status") or {}
            phase = status.get("phase", "-")
            if phase not in FINAL_APPLICATION_PHASES:
                out.append(Disagreement("application_not_final", f"application {name}",
                                        CONTROL_PLANE, DESIRED, f"phase {phase}"))
            for row in status.get("deviceStatuses") or []:
                if row.get("phase") in UNSETTLED_DEPLOYMENT_PHASES:
                    out.append(Disagreement(
                        "application_not_final", f"application {name} on {row.get('device')}",
                        CONTROL_PLANE, GATEWAY, f"deployment phase {row.get('phase')}"))
        by_name = {d.name: d for d in self.devices}
        for name, obj in sorted(watcher.informers["devices"].objects.items()):
            status = obj.get("status") or {}
            device = by_name.get(name)
            home = self._home(device) if device is not None else None
            if home is None:
                continue
            gw, st = home
            if status.get("deviceId") != st.device_id or status.get("phase") != st.phase.value:
                out.append(Disagreement(
                    "device_status", name, CONTROL_PLANE, GATEWAY,
                    f"the Device resource says {status.get('phase')} as "
                    f"{status.get('deviceId')}, gateway {gw.config.name} says "
                    f"{st.phase.value} as {st.device_id}"))
            for app in status.get("apps") or []:
                results = gw.store.results(st.device_id, app.get("appId"))
                last = max(results, key=lambda r: (r.received_at, r.run_id)) if results else None
                if app.get("runs", 0) != len(results) or (
                        last is not None and app.get("runId") != last.run_id):
                    out.append(Disagreement(
                        "result_count", f"{name} app {app.get('appId')}", CONTROL_PLANE, GATEWAY,
                        f"the Device resource counts {app.get('runs', 0)} run(s), last "
                        f"{app.get('runId')}; the gateway holds {len(results)}, last "
                        f"{last.run_id if last else None}"))
        return out

    # ---------------------------------------------------------------- evidence
    def evidence(self) -> dict[str, str]:
        out: dict[str, str] = {}
        lines = []
        for device in self.oracle.devices:
            held = device.installed_modules()
            lines.append(
                f"{device.name} ({device.backend}): {device.lifecycle.value}"
                f"{'' if device.powered else ' (no power)'}, id "
                f"{device.device_id}, holds "
                f"{_modules(held) if held is not None else '(not readable on this backend)'}")
            lines += [f"    {line}" for line in device.console[-12:]]
        out["convergence: devices"] = "\n".join(lines) or "(no devices)"
        lines = []
        for handle in self.oracle.gateways:
            if not handle.running:
                lines.append(f"gateway {handle.config.name}: stopped")
                continue
            gw = handle.gateway
            lines.append(f"gateway {gw.config.name}:")
            for st in gw.status.values():
                beat = f"{time.time() - st.last_heartbeat:.2f}s ago" if st.last_heartbeat \
                    else "never"
                lines.append(f"  {st.name} {st.device_id} {st.phase.value}, last heartbeat "
                             f"{beat}, reports {_modules({a.app_id: a.digest for a in st.apps})}")
                started = gw.store.started_runs(st.device_id)
                results = {(r.app_id, r.run_id): r for r in gw.store.results(st.device_id)}
                for _, run_id, app_id in started:
                    r = results.get((app_id, run_id))
                    got = f"{r.outcome.name} {list(r.values)}" if r else "NO RESULT"
                    lines.append(f"    run {run_id} {app_id}: {got}")
            for dep in gw.deployments.history:
                lines.append(f"  deployment {self._device_name(gw, dep.device_id)}/{dep.app_id}: "
                             f"{dep.state} {dep.bytes_sent}/{dep.size} bytes, attempts "
                             f"{dep.attempts}, run {dep.run_id} {dep.error}".rstrip())
            lines.append("  " + gw.events.tail(15))
        out["convergence: gateways"] = "\n".join(lines) or "(no gateways)"
        platform = self.oracle.platform
        if platform is not None and platform.watcher is not None:
            resources = {
                plural: {n: (o.get("status") or {}) for n, o in inf.objects.items()}
                for plural, inf in platform.watcher.informers.items()
                if plural in ("applications", "devices")
            }
            out["convergence: control plane"] = json.dumps(resources, indent=1, default=str)
        return out
