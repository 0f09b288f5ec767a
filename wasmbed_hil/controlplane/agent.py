"""The gateway's control-plane agent: keeps one gateway and the Kubernetes resources in step.

It runs on the gateway's event loop, beside the gateway, and is the only writer of:
- its own Gateway resource: registration (created when missing), `status.phase` and
  `status.lastHeartbeat` (the Gateway controller derives counts and conditions);
- the `status` of every Device whose device is connected to this gateway (phase, device id,
  gateway, telemetry, and per application: device state, deployment phase, runs and the
  last execution result). A device enrolled here without a Device resource is registered
  (a Device is created for it).
It deploys: every Application (not being deleted) that selects a Device connected here is
deployed to it through the gateway's deployment engine and run once; an Application being
deleted, or one that no longer selects the device, is stopped and removed from it.

Level-triggered and cache-first: each pass derives the desired statuses from the gateway's
local state (its SQLite cache holds enrollments, deployments and every execution result) and
from informer caches of Devices/Applications/Gateways, and writes only what differs from
what the API server last accepted. While the API server is unreachable the gateway keeps
serving devices and deploying from the cached Applications; writes that failed are simply
still different next time, so after the API server returns one pass writes everything that
happened meanwhile. Nothing is lost because nothing is queued: the source of truth for a
device's status is the gateway's own store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..aio import cancel_and_wait
from ..gateway import Deployment, Gateway, RunRequest
from ..gateway.events import GatewayEvent
from ..gateway.server import DeviceStatus as GatewayDeviceStatus
from ..gateway.server import GatewayError
from ..kube.client import Informer, Kind, KubeClient, KubeError
from ..kube.resources import (
    API_VERSION,
    MAX_OPEN_RUNS,
    Application,
    DeploymentPhase,
    Device,
    DeviceEnrollment,
    GatewayPhase,
    ResourceError,
)
from ..kube.resources import (
    Gateway as GatewayResource,
)
from ..kube.schema import decode_dataclass
from ..protocol import AppState, DevicePhase, Outcome

log = logging.getLogger(__name__)

DEVICES = Kind.of(Device)
APPLICATIONS = Kind.of(Application)
GATEWAYS = Kind.of(GatewayResource)
REGISTERED_BY = "wasmbed.github.io/registered-by"
WRITE_CONCURRENCY = 16  # status writes in flight at once
DEFAULT_REFRESH_RATE = 50.0  # refresh-only Device status writes a second, at most
# Longest a run start waits for its publication: while the API server answers (the last
# pass reached it), a busy one is waited for; once it did not, the run starts after 1 s.
PUBLISH_RUN_TIMEOUT_S = 1.0
PUBLISH_RUN_BUSY_TIMEOUT_S = 5.0
# Run ids a Device's enrollment reserves beyond its counter: a run whose id the API server
# already holds as reserved starts without a publication of its own, so a run costs one
# status write (its result) instead of two.
RESERVED_RUNS = 16
#: Gateway events about a connection before (or instead of) its enrollment, which carry no
#: device id and change no device's status: they wake no pass. Any other event without a
#: device id wakes a pass over every device; these did so once per joining device, and at
#: 1,000 devices such passes, O(devices) each, took half of the harness loop during a join.
PRE_ENROLLMENT_EVENTS = frozenset({"enrolling", "rejected", "connection_refused",
                                   "handshake_failed", "violation"})


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _heard_since_connect(st: GatewayDeviceStatus) -> bool:
    """Whether the device's current connection brought a heartbeat (its apps) yet."""
    return (st.connected_since is not None and st.last_heartbeat is not None
            and st.last_heartbeat >= st.connected_since)


def dns_name(text: str, fallback: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:63].strip("-.")
    return name or fallback


@dataclass
class _Parsed:
    rv: str
    obj: Any  # Device | Application | None (invalid)


def desired_key(raw: dict[str, Any]) -> str:
    """What the agent acts on: the spec (its generation), labels and deletion. Status-only
    changes, most of them the agents' own writes, leave it unchanged."""
    meta = raw.get("metadata") or {}
    return "|".join((str(meta.get("uid")), str(meta.get("generation")),
                     repr(sorted((meta.get("labels") or {}).items())),
                     str(meta.get("deletionTimestamp"))))


class _Cache:
    """Parsed models of informer objects, reparsed only when what the agent acts on changes
    (see `desired_key`); the parsed status is not used."""

    def __init__(self, cls: type[Device] | type[Application]) -> None:
        self.cls = cls
        self._parsed: dict[str, _Parsed] = {}

    def changed(self, raw: dict[str, Any]) -> bool:
        hit = self._parsed.get((raw.get("metadata") or {}).get("name", ""))
        return hit is None or hit.rv != desired_key(raw)

    def get(self, raw: dict[str, Any]) -> Any:
        meta = raw.get("metadata") or {}
        name, rv = meta.get("name", ""), desired_key(raw)
        hit = self._parsed.get(name)
        if hit is not None and hit.rv == rv:
            return hit.obj
        try:
            # The status is left out: the agent does not act on it, and a bad one (anyone
            # may write it) must not hide the spec. status.enrollment is checked on its own.
            obj = self.cls.from_dict({k: v for k, v in raw.items() if k != "status"})
        except ResourceError as exc:
            log.warning("ignoring invalid %s %s: %s", self.cls.KIND, name, exc)
            obj = None
        self._parsed[name] = _Parsed(rv, obj)
        return obj

    def drop(self, name: str) -> None:
        self._parsed.pop(name, None)


@dataclass
class _Deployed:
    digest: str
    dep: Deployment


class _DeployedIndex:
    """The agent's deployments by (device id, application), also indexed by device: a
    device's status lists its applications on every write, and a scan of every deployment
    for that made each write O(devices) at 1,000 devices running one application.

    A mapping of its own rather than a dict subclass: only the operations below exist, so
    none (setdefault, update, clear...) can change the deployments without the index."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _Deployed] = {}
        self._apps: dict[str, set[str]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._by_key)

    def get(self, key: tuple[str, str]) -> _Deployed | None:
        return self._by_key.get(key)

    def __setitem__(self, key: tuple[str, str], value: _Deployed) -> None:
        self._by_key[key] = value
        self._apps.setdefault(key[0], set()).add(key[1])

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self._by_key[key]
        self._unindex(key)

    def pop(self, key: tuple[str, str], *default: Any) -> Any:
        had = key in self._by_key
        value = self._by_key.pop(key, *default)
        if had:
            self._unindex(key)
        return value

    def _unindex(self, key: tuple[str, str]) -> None:
        apps = self._apps.get(key[0])
        if apps is not None:
            apps.discard(key[1])
            if not apps:
                del self._apps[key[0]]

    def apps_of(self, device_id: str) -> set[str]:
        return set(self._apps.get(device_id, ()))


class GatewayAgent:
    """Connect `gateway` to the control plane through `kube` (namespace `namespace`).

    `endpoint` is the address devices use ("host:port"), written into the Gateway resource.
    `refresh_s` bounds how stale `lastHeartbeat` fields may get (they are not rewritten on
    every heartbeat), for fleets of up to `refresh_rate * refresh_s` devices: the writes that
    only refresh a Device's heartbeat and telemetry are at most `refresh_rate` a second,
    the stalest first, so a large fleet's bound is `devices / refresh_rate` seconds (1,000
    devices refreshed every 5 s were 200 writes a second, most of what one gateway's agent
    wrote, queued before the writes that changed something). `backoff` spaces retries while
    the API server is unreachable.
    """

    def __init__(
        self,
        gateway: Gateway,
        kube: KubeClient,
        *,
        namespace: str,
        endpoint: str,
        name: str | None = None,
        refresh_s: float = 5.0,
        refresh_rate: float = DEFAULT_REFRESH_RATE,
        backoff: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        if not (refresh_s > 0 and refresh_rate > 0):  # also refuses NaN
            raise ValueError(f"refresh_s={refresh_s!r} and refresh_rate={refresh_rate!r} "
                             "must be positive")
        self.gateway = gateway
        self.kube = kube
        self.namespace = namespace
        self.endpoint = endpoint
        self.name = name or gateway.config.name
        self.refresh_s = refresh_s
        self.refresh_rate = refresh_rate
        # A token bucket for refresh-only writes: refresh_rate a second, refresh_s' worth.
        self._refresh_tokens = self._refresh_capacity = max(1.0, refresh_rate * refresh_s)
        self._refresh_at = time.monotonic()
        self.backoff = backoff
        self.devices = Informer(kube, DEVICES, namespace, on_change=self._on_device)
        self.applications = Informer(kube, APPLICATIONS, namespace, on_change=self._on_app)
        self.gateways = Informer(kube, GATEWAYS, namespace, on_change=self._on_gateway)
        self._device_models = _Cache(Device)
        self._app_models = _Cache(Application)
        self._identities: dict[str, str] = {}  # identity -> Device name
        self._deleting: set[str] = set()  # identities whose Device is being deleted
        self._enrollments_seen: dict[str, str] = {}  # Device name -> enrollment taken in
        self._deployed = _DeployedIndex()  # (device_id, app) -> the last deployment
        self._removing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._written: dict[str, tuple[Any, float]] = {}  # device name -> (core, when)
        # Per Device name: held from computing its status.enrollment to the write's answer
        # (the pass's status write and a run's publication), so the later write carries the
        # later enrollment (see _write_device_status).
        self._status_locks: dict[str, asyncio.Lock] = {}
        self._gateway_written: tuple[Any, float] | None = None
        self._pairing_generation: int | None = None
        self._wake = asyncio.Event()
        self._all = True  # next pass covers every device
        self._dirty: set[str] = set()  # device ids the next pass covers otherwise
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.api_reachable = False
        self.passes = 0
        self.failed_writes = 0
        self.unpublished_runs = 0  # runs started before their publication was accepted
        # Device name -> the run ids below which its last enrollment written here covers
        # (reserved): a run below it needs no publication before it starts.
        self._covered: dict[str, int] = {}
        # Device ids connected whose apps wait for their first heartbeat on the connection
        # (see _plan_device).
        self._unheard: set[str] = set()
        self.covered_runs = 0  # runs started within a reservation already published
        self._publish_failed = False  # a publication failed since the last pass succeeded

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self.gateway.preapproved = self._identities.__contains__
        self.gateway.on_run_recorded = self._publish_run
        self.gateway.admits_unlisted_result = self._admits_unlisted
        self.gateway.events.add_listener(self._on_gateway_event)
        for informer in (self.gateways, self.devices, self.applications):
            informer.start()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"gateway-agent-{self.name}"
        )
        self._wake.set()

    async def stop(self, *, final_status: bool = True) -> None:
        self.gateway.events.remove_listener(self._on_gateway_event)
        if self.gateway.preapproved == self._identities.__contains__:
            self.gateway.preapproved = None
        if self.gateway.on_run_recorded == self._publish_run:
            self.gateway.on_run_recorded = None
        if self.gateway.admits_unlisted_result == self._admits_unlisted:
            self.gateway.admits_unlisted_result = None
        if self._timer is not None:
            self._timer.cancel()
        tasks = [t for t in (self._task, *self._removing.values()) if t is not None]
        await cancel_and_wait(tasks)
        for informer in (self.gateways, self.devices, self.applications):
            await informer.stop()
        if final_status and self.api_reachable:
            try:
                await asyncio.wait_for(self._patch_gateway_status(
                    {"phase": GatewayPhase.STOPPED.value, "lastHeartbeat": rfc3339(time.time())}
                ), 2.0)
            except (KubeError, TimeoutError) as exc:
                log.info("gateway %s: could not record Stopped: %s", self.name, exc)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (self.gateways, self.devices, self.applications))

    # -- triggers ---------------------------------------------------------------------------
    def wake(self, device_id: str | None = None) -> None:
        """Schedule a pass over one device (by id) or, with None, over all of them."""
        if device_id is None:
            self._all = True
        else:
            self._dirty.add(device_id)
        self._wake.set()

    def _on_gateway_event(self, event: GatewayEvent) -> None:
        if event.kind == "chunk_acked":
            return  # transfer progress: the deployment's end wakes us
        if event.device_id is None and event.kind in PRE_ENROLLMENT_EVENTS:
            return  # no device status to write; its enrollment ("enrolled") wakes its pass
        if event.kind == "heartbeat" and event.device_id:
            st = self.gateway.status.get(event.device_id)
            if event.device_id in self._unheard:  # its apps are known now
                self._unheard.discard(event.device_id)
            elif st is not None and st.heartbeats > 1 and not self._apps_changed(st):
                return
        self.wake(event.device_id)

    def _apps_changed(self, st: GatewayDeviceStatus) -> bool:
        name = self._identities.get(st.identity)
        if name is None:
            return True
        written = self._written.get(name)
        if written is None:
            return True
        states = {a["appId"]: a.get("state") for a in written[0].get("apps", [])}
        return any(states.get(a.app_id) != a.state.name for a in st.apps) or len(
            states) != len(st.apps)

    def _on_device(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "MODIFIED" and not self._device_models.changed(obj):
            # A status write: nothing the agent acts on changed, but another gateway may
            # have published the device's enrollment.
            self._take_enrollment(name, obj)
            return
        model = self._device_models.get(obj)
        identity = model.spec.device_identity if model is not None else None
        if kind == "DELETED":
            self._device_models.drop(name)
            self._written.pop(name, None)
            self._covered.pop(name, None)
            lock = self._status_locks.get(name)
            if lock is not None and not lock.locked():
                del self._status_locks[name]
            self._enrollments_seen.pop(name, None)
            if identity is not None and self._identities.get(identity, name) == name:
                self._identities.pop(identity, None)
                self._deleting.discard(identity)
                if self.gateway.forget(identity):
                    log.info("gateway %s: forgot %s (Device deleted)", self.name, name)
        elif identity is not None:
            if obj["metadata"].get("deletionTimestamp"):
                # Going: no new enrollment, and no re-registration under another name.
                self._identities.pop(identity, None)
                self._deleting.add(identity)
            else:
                self._identities[identity] = name
                self._deleting.discard(identity)
            if model.spec.revoked and identity not in self.gateway.store.revoked:
                # One-way, as on the gateway: spec.revoked set back to false reinstates nothing.
                self.gateway.revoke(identity)
                log.info("gateway %s: revoked %s (Device spec.revoked)", self.name, name)
            self._take_enrollment(name, obj)
        enrolled = self.gateway.store.by_identity(identity) if identity else None
        if enrolled is not None:
            self.wake(enrolled.device_id)

    def _take_enrollment(self, name: str, obj: dict[str, Any]) -> None:
        """Copy the enrollment another gateway published in the Device's status into the
        local cache: the device is admitted here with the same device id, without pairing;
        its revocation, run counter and unanswered runs come along. What comes from the API
        server is checked like any outside input; an enrollment that contradicts the local
        one is refused (the local one is kept), never merged."""
        raw = (obj.get("status") or {}).get("enrollment")
        if raw is None or obj["metadata"].get("deletionTimestamp"):
            return
        if isinstance(raw, dict) and raw.get("enrolledBy") == self.name:
            return  # our own (most of the events: each status write of ours comes back)
        key = json.dumps(raw, sort_keys=True, default=str)
        if self._enrollments_seen.get(name) == key:
            return
        self._enrollments_seen[name] = key
        model = self._device_models.get(obj)
        identity = model.spec.device_identity if model is not None else None
        if identity is None:
            return
        try:
            enrollment = decode_dataclass(DeviceEnrollment, raw, "status.enrollment")
        except (ResourceError, TypeError, ValueError) as exc:
            log.warning("gateway %s: ignoring the enrollment of Device %s: %s",
                        self.name, name, exc)
            return
        if enrollment.enrolled_by == self.name:
            return  # our own
        gateway = self.gateway
        local = gateway.store.by_identity(identity)
        if local is None:
            since = _parse_time(enrollment.enrolled_at) or time.time()
            if not gateway.adopt(enrollment.device_id, identity, name, since):
                gateway.metrics["enrollment_conflicts"] += 1
                log.warning("gateway %s: Device %s: device id %s is enrolled here under "
                            "another identity; enrollment not taken", self.name, name,
                            enrollment.device_id[:8])
                return
            log.info("gateway %s: took in the enrollment of %s (device id %s) from %s",
                     self.name, name, enrollment.device_id[:8], enrollment.enrolled_by)
        elif local.device_id != enrollment.device_id:
            gateway.metrics["enrollment_conflicts"] += 1
            log.warning("gateway %s: Device %s is enrolled here as %s, the control plane "
                        "says %s; the local enrollment is kept", self.name, name,
                        local.device_id[:8], enrollment.device_id[:8])
            return
        if enrollment.device_id not in gateway.connections:
            # Served elsewhere now: what this gateway still had in flight for the device is
            # not resumed here (the serving gateway deploys what the device needs).
            moved = gateway.deployments.abandon(
                enrollment.device_id, f"device moved to gateway {enrollment.enrolled_by}")
            for app_id in self._deployed.apps_of(enrollment.device_id):
                del self._deployed[(enrollment.device_id, app_id)]
            if moved:
                log.info("gateway %s: gave up %d deployment(s) to %s, now served by %s",
                         self.name, len(moved), name, enrollment.enrolled_by)
        try:
            gateway.store.merge_runs(enrollment.device_id, enrollment.next_run_id,
                                     [(r.app_id, r.run_id) for r in enrollment.open_runs],
                                     enrollment.unlisted_from)
        except ValueError as exc:
            log.warning("gateway %s: ignoring the runs published for %s: %s",
                        self.name, name, exc)
        if enrollment.revoked and identity not in gateway.store.revoked:
            gateway.revoke(identity)
            log.info("gateway %s: revoked %s (revoked at gateway %s)", self.name, name,
                     enrollment.enrolled_by)

    def _on_app(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._app_models.drop(obj["metadata"]["name"])
        elif kind == "MODIFIED" and not self._app_models.changed(obj):
            return  # a status write by the controller
        self.wake()

    def _on_gateway(self, kind: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] != self.name or kind == "DELETED":
            return
        generation = obj["metadata"].get("generation")
        if generation == self._pairing_generation:
            return
        first = self._pairing_generation is None
        self._pairing_generation = generation
        config = ((obj.get("spec") or {}).get("config")) or {}
        if "pairingMode" in config and not (first and config["pairingMode"] is False):
            enabled = bool(config["pairingMode"])
            timeout = config.get("pairingTimeoutSeconds") if enabled else None
            if enabled != self.gateway.pairing or enabled:
                self.gateway.set_pairing(enabled, float(timeout) if timeout else None)
        self.wake()

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.backoff[0]
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._timer is not None:
                self._timer.cancel()
            everything, self._all = self._all, False
            dirty, self._dirty = self._dirty, set()
            try:
                await self._pass(None if everything else dirty)
                self.api_reachable = True
                self._publish_failed = False
                delay = self.backoff[0]
                self._timer = loop.call_later(self.refresh_s, self.wake)
            except KubeError as exc:
                self._all = True  # what failed is still different next time
                self.api_reachable = not (exc.unreachable or exc.status >= 500)
                self.failed_writes += 1
                log.debug("gateway %s agent: %s; retrying in %.2fs", self.name, exc, delay)
                self._timer = loop.call_later(delay, self._wake.set)
                delay = min(delay * 2, self.backoff[1])
            except Exception:
                self._all = True
                log.exception("gateway %s agent pass failed", self.name)
                self._timer = loop.call_later(self.backoff[1], self._wake.set)

    async def _pass(self, only: set[str] | None) -> None:
        """Reconcile the devices in `only` (ids), or all of them when None."""
        self.passes += 1
        await self._sync_gateway()
        if not self.devices.synced.is_set() or not self.applications.synced.is_set():
            # Never deploy or remove on a partial view; statuses wait for the first list.
            raise KubeError(0, "NotSynced", "waiting for the first list of resources")
        apps = self._applications()
        todo = [st for st in list(self.gateway.status.values())
                if only is None or st.device_id in only]
        if only is None:  # the stalest first: refreshes beyond the rate wait for a later pass
            todo.sort(key=self._last_written)
        # Every device's deployments start first, then the writes: when the deploys waited
        # for the writes before them (16 at a time), the 1,000th device's deployment began
        # 50 s after the Application, and each device was written twice (Deploying, then
        # its result). A status is computed when its write's turn comes, so a device whose
        # result is in by then is written once, with it.
        writes: list[Callable[[], Awaitable[None]]] = []
        errors: list[BaseException] = []
        for st in todo:
            try:
                work = self._plan_device(st, apps)
            except Exception as exc:  # as a write's: the other devices go on
                errors.append(exc)
                continue
            if work is not None:
                writes.append(work)
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(work: Callable[[], Awaitable[None]]) -> None:
            async with limit:
                await work()

        outcomes = await asyncio.gather(*(one(w) for w in writes), return_exceptions=True)
        errors += [o for o in outcomes if isinstance(o, BaseException)]
        for error in errors:
            if not isinstance(error, KubeError):
                raise error
        unreachable = [e for e in errors if isinstance(e, KubeError)
                       and (e.unreachable or e.status >= 500)]
        if unreachable:
            raise unreachable[0]
        for error in errors:
            log.warning("gateway %s: %s", self.name, error)
        if errors:
            raise errors[0]

    # -- Gateway resource ---------------------------------------------------------------------
    async def _sync_gateway(self) -> None:
        if self.gateways.synced.is_set() and self.name not in self.gateways.objects:
            await self._register_gateway()
        elif not self.gateways.synced.is_set():
            existing = await self.kube.get_or_none(GATEWAYS, self.name, self.namespace)
            if existing is None:
                await self._register_gateway()
        core = {"phase": GatewayPhase.RUNNING.value}
        now = time.time()
        if (self._gateway_written is None or self._gateway_written[0] != core
                or now - self._gateway_written[1] >= self.refresh_s):
            await self._patch_gateway_status({**core, "lastHeartbeat": rfc3339(now)})
            self._gateway_written = (core, now)

    async def _register_gateway(self) -> None:
        config = self.gateway.config
        host, _, port = self.endpoint.rpartition(":")
        body = GatewayResource.from_dict({
            "apiVersion": API_VERSION, "kind": "Gateway",
            "metadata": {"name": self.name, "labels": {REGISTERED_BY: "gateway"}},
            "spec": {
                "endpoint": self.endpoint,
                "tlsPort": int(port) if port.isdigit() else None,
                "maxDevices": config.max_devices,
                "config": {
                    "heartbeatIntervalSeconds": max(1, round(config.heartbeat_interval_s)),
                    "heartbeatTimeoutSeconds": max(2, round(config.heartbeat_timeout_s)),
                    "pairingMode": self.gateway.pairing,
                },
            },
        }).to_dict()
        if host == "":
            body["spec"].pop("tlsPort", None)
        try:
            await self.kube.create(GATEWAYS, body, self.namespace)
        except KubeError as exc:
            if exc.status != 409:
                raise

    async def _patch_gateway_status(self, status: dict[str, Any]) -> None:
        await self.kube.patch(GATEWAYS, self.name, {"status": status}, self.namespace,
                              status=True)

    # -- Applications ---------------------------------------------------------------------
    def _applications(self) -> dict[str, tuple[Application, bool]]:
        """Valid Applications by name, with whether each is being deleted."""
        out: dict[str, tuple[Application, bool]] = {}
        for name, raw in list(self.applications.objects.items()):
            model = self._app_models.get(raw)
            if model is not None:
                out[name] = (model, bool(raw["metadata"].get("deletionTimestamp")))
        return out

    # -- one device -------------------------------------------------------------------------
    def _last_written(self, st: GatewayDeviceStatus) -> float:
        name = self._identities.get(st.identity)
        written = self._written.get(name) if name is not None else None
        return written[1] if written is not None else 0.0

    def _may_refresh(self) -> bool:
        """Take a refresh-only write's token, if there is one."""
        now = time.monotonic()
        self._refresh_tokens = min(self._refresh_capacity, self._refresh_tokens
                                   + (now - self._refresh_at) * self.refresh_rate)
        self._refresh_at = now
        if self._refresh_tokens < 1.0:
            return False
        self._refresh_tokens -= 1.0
        return True

    def _plan_device(
        self, st: GatewayDeviceStatus, apps: dict[str, tuple[Application, bool]]
    ) -> Callable[[], Awaitable[None]] | None:
        """Start or stop what the device should run (now), and return its write to the API
        server (run in its turn), if any."""
        name = self._identities.get(st.identity)
        if name is None:
            if st.identity not in self._deleting:
                return lambda: self._register_device(st)
            return None
        raw = self.devices.objects.get(name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            return None
        model: Device | None = self._device_models.get(raw)
        if model is None:
            return None
        labels = raw["metadata"].get("labels") or {}
        connected = st.phase == DevicePhase.CONNECTED and st.device_id in self.gateway.connections
        owner = ((raw.get("status") or {}).get("gateway") or {}).get("name")
        if not connected and owner not in (None, self.name):
            # another gateway serves it now
            return lambda: self._publish_revocation(
                name, st, self.devices.objects.get(name) or raw)
        if connected and _heard_since_connect(st):
            self._reconcile_apps(st, name, labels, apps)
        elif connected:
            # What the device holds and runs is known from its heartbeats only, and a
            # device sends the results it kept (of runs another gateway started) before its
            # first heartbeat on a connection: deploying before that ran again, at the
            # gateway a device moved to, what it was running or had run unanswered.
            self._unheard.add(st.device_id)
        return lambda: self._write_device_status(name, st, apps)

    async def _publish_revocation(
        self, name: str, st: GatewayDeviceStatus, raw: dict[str, Any]
    ) -> None:
        """A device revoked here but served elsewhere: every gateway must refuse it."""
        if st.identity not in self.gateway.store.revoked:
            return
        published = (raw.get("status") or {}).get("enrollment") or {}
        if published.get("revoked") is True:
            return
        patch = {"status": {"enrollment": {"deviceId": st.device_id, "revoked": True,
                                           "enrolledBy": self.name}}}
        try:
            await self.kube.patch(DEVICES, name, patch, self.namespace, status=True)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def _publish_run(self, device_id: str) -> None:
        """Make sure the API server holds the device's run before the run starts: if this
        gateway dies before the result comes, the gateway the device moves to accepts that
        result and never gives the run id again. A run whose id is below what the last
        enrollment written here reserved (`RESERVED_RUNS` ahead; its `unlistedFrom` covers
        it) is held already: it starts at once. Otherwise its enrollment (run counter,
        unanswered runs, a new reservation) is written first, bounded by
        PUBLISH_RUN_BUSY_TIMEOUT_S while the API server answers, PUBLISH_RUN_TIMEOUT_S once
        it did not (a failed or timed-out publication counts as not answering until a pass
        reaches it again); without the API server the run starts all the same. With the
        1 s bound alone, 1,000 installs publishing at once through a busy (not unreachable)
        API server took 1.2-1.5 s each, and 84-86 % of the runs started unpublished."""
        st = self.gateway.status.get(device_id)
        name = self._identities.get(st.identity) if st is not None else None
        if st is None or name is None:
            return
        if self.gateway.store.next_run_id(device_id) <= self._covered.get(name, 0):
            self.covered_runs += 1
            return
        answering = self.api_reachable and not self._publish_failed
        bound = PUBLISH_RUN_BUSY_TIMEOUT_S if answering else PUBLISH_RUN_TIMEOUT_S
        try:
            async with asyncio.timeout(bound), self._status_lock(name):
                enrollment = self._enrollment(st)
                patch = {"status": {"enrollment": enrollment}}
                await self.kube.patch(DEVICES, name, patch, self.namespace, status=True)
                self._cover(name, enrollment)
        except (KubeError, TimeoutError) as exc:
            if not isinstance(exc, KubeError) or exc.unreachable or exc.status >= 500:
                self._publish_failed = True  # the next runs wait 1 s, until a pass succeeds
            self.unpublished_runs += 1
            log.debug("gateway %s: run of %s not published before its start: %s",
                      self.name, name, exc)

    def _cover(self, name: str, enrollment: dict[str, Any]) -> None:
        """The API server now holds `enrollment` (written here) for Device `name`."""
        self._covered[name] = max(self._covered.get(name, 0), enrollment["nextRunId"])

    def _admits_unlisted(self, device_id: str, app_id: str) -> bool:
        """Whether the result of an unlisted run of `app_id` (started by another gateway
        within its reservation) is held: the Application exists, is not being deleted and
        selects the device's Device."""
        st = self.gateway.status.get(device_id)
        name = self._identities.get(st.identity) if st is not None else None
        raw = self.devices.objects.get(name) if name is not None else None
        app = self._applications().get(app_id)
        if raw is None or app is None or app[1]:
            return False
        labels = raw["metadata"].get("labels") or {}
        return app[0].spec.target_devices.selects(name, labels)

    def _enrollment(self, st: GatewayDeviceStatus) -> dict[str, Any]:
        """The device's enrollment as this gateway publishes it (status.enrollment)."""
        store = self.gateway.store
        dev = store.by_id(st.device_id)
        unlisted_from, ceiling = store.reservation(st.device_id, RESERVED_RUNS)
        enrollment = {
            "deviceId": st.device_id,
            "enrolledAt": rfc3339(dev.enrolled_at if dev else None),
            "enrolledBy": self.name,
            "revoked": st.identity in store.revoked,
            "nextRunId": ceiling,
            "unlistedFrom": unlisted_from,
            "openRuns": [{"appId": app, "runId": run}
                         for app, run in store.open_runs(st.device_id, MAX_OPEN_RUNS)],
        }
        return {k: v for k, v in enrollment.items() if v is not None}

    async def _register_device(self, st: GatewayDeviceStatus) -> None:
        base = dns_name(st.name, f"device-{st.device_id[:12]}")
        suffixed = f"{base}-{st.device_id[:8]}"
        for name in [suffixed] if base in self.devices.objects else [base, suffixed]:
            body = {
                "apiVersion": API_VERSION, "kind": "Device",
                "metadata": {"name": name, "labels": {REGISTERED_BY: self.name}},
                "spec": {"identity": st.identity},
            }
            try:
                await self.kube.create(DEVICES, body, self.namespace)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # Taken since the name was looked up in the informer (which lags the API
                # server): by this device's Device (another gateway registered it), or by
                # another device's, of the same name, registered at once. Taking the name
                # blindly gave that other device's Device to this one: its status and the
                # other's overwrote each other there, and it never had a Device of its own.
                existing = await self.kube.get_or_none(DEVICES, name, self.namespace)
                try:
                    ours = existing is not None and Device.from_dict(
                        existing).spec.device_identity == st.identity
                except ResourceError:
                    ours = False
                if not ours:
                    continue
            self._identities.setdefault(st.identity, name)
            return

    def _reconcile_apps(
        self, st: GatewayDeviceStatus, name: str, labels: dict[str, str],
        apps: dict[str, tuple[Application, bool]],
    ) -> None:
        held = {a.app_id: a.digest.hex() for a in st.apps}
        running = {a.app_id for a in st.apps if a.state == AppState.RUNNING}
        for app_name, (app, deleting) in apps.items():
            key = (st.device_id, app_name)
            wanted = not deleting and app.spec.target_devices.selects(name, labels)
            if wanted:
                digest = app.spec.module_digest
                done = self._deployed.get(key)
                if done is not None and done.digest == digest:
                    continue
                if held.get(app_name) == digest and (
                        app_name in running or self._ran(st.device_id, name, app_name)):
                    # already there and run (e.g. before a gateway restart), or running now
                    # (a run another gateway started: its result comes here)
                    continue
                if self._resumed(st.device_id, app_name, digest):
                    continue  # an earlier incarnation's deployment, resumed at start
                self._deploy(st, app_name, app)
            elif app_name in held or key in self._deployed:
                self._remove(st.device_id, app_name)
        for app_id in held:  # ours, but its Application is gone
            if app_id not in apps and (st.device_id, app_id) in self._deployed:
                self._remove(st.device_id, app_id)

    def _ran(self, device_id: str, name: str, app_name: str) -> bool:
        """Whether the device's run of the application is known: in the local cache (also
        runs taken in from another gateway), or in the Device's status as the gateway that
        served it before wrote it. A module installed without its run (a gateway died
        between the last chunk and the StartApp) is deployed again: the transfer is empty
        (the device holds the bytes), then it runs."""
        if self.gateway.store.has_run(device_id, app_name):
            return True
        raw = self.devices.objects.get(name) or {}
        for entry in (raw.get("status") or {}).get("apps") or []:
            if isinstance(entry, dict) and entry.get("appId") == app_name:
                return entry.get("runId") is not None
        return False

    def _resumed(self, device_id: str, app_name: str, digest: str) -> bool:
        """Take as ours a deployment of this module the gateway resumed from its local cache
        (accepted before a restart, not finished): deploying it again would install and run
        it twice."""
        for dep in self.gateway.deployments.unfinished(device_id):
            if dep.app_id == app_name and dep.digest.hex() == digest:
                self._deployed[(device_id, app_name)] = _Deployed(digest, dep)
                dep.done.add_done_callback(lambda _f: self.wake(device_id))
                return True
        return False

    def _deploy(self, st: GatewayDeviceStatus, app_name: str, app: Application) -> None:
        spec = app.spec
        try:
            dep = self.gateway.deploy(
                st.device_id, spec.module, app_id=app_name, name=spec.name or app_name,
                limits=spec.limits.to_wire(),
                run=RunRequest(spec.entry, tuple(spec.args)),
            )
        except (GatewayError, ValueError) as exc:
            log.warning("gateway %s: cannot deploy %s to %s: %s", self.name, app_name,
                        st.name, exc)
            return
        self._deployed[(st.device_id, app_name)] = _Deployed(spec.module_digest, dep)
        dep.done.add_done_callback(lambda _f: self.wake(st.device_id))

    def _remove(self, device_id: str, app_id: str) -> None:
        key = (device_id, app_id)
        if key in self._removing:
            return

        async def remove() -> None:
            try:
                await self.gateway.stop_app(device_id, app_id, remove=True)
                self._deployed.pop(key, None)
            except (GatewayError, TimeoutError, ConnectionError) as exc:
                log.info("gateway %s: removing %s from %s: %s", self.name, app_id,
                         device_id[:8], exc)
            finally:
                self._removing.pop(key, None)
                self.wake(device_id)

        self._removing[key] = asyncio.get_running_loop().create_task(
            remove(), name=f"remove-{app_id}-{device_id[:8]}"
        )

    # -- status -----------------------------------------------------------------------------
    def _app_entries(
        self, st: GatewayDeviceStatus, apps: dict[str, tuple[Application, bool]]
    ) -> list[dict[str, Any]]:
        reported = {a.app_id: a for a in st.apps}
        ours = self._deployed.apps_of(st.device_id)
        entries = []
        for app_id in sorted(set(reported) | ours):
            summary = reported.get(app_id)
            record = self._deployed.get((st.device_id, app_id))
            results = self.gateway.store.results(st.device_id, app_id)
            last = max(results, key=lambda r: (r.received_at, r.run_id)) if results else None
            digest = summary.digest.hex() if summary else record.digest if record else None
            if digest is None:
                continue
            phase, error = self._phase(summary.state if summary else None, record, last)
            entry: dict[str, Any] = {
                "appId": app_id,
                "digest": digest,
                "deployment": phase.value,
                "runs": len(results),
            }
            if summary is not None:
                entry["state"] = summary.state.name
            if app_id in apps or record is not None:
                entry["application"] = app_id
            if last is not None:
                entry.update(runId=last.run_id, outcome=last.outcome.name,
                             values=list(last.values), lastUpdated=rfc3339(last.received_at))
            if error:
                entry["error"] = error[:1024]
            entries.append(entry)
        return entries

    @staticmethod
    def _phase(
        state: AppState | None, record: _Deployed | None, last: Any
    ) -> tuple[DeploymentPhase, str | None]:
        dep = record.dep if record else None
        if dep is not None and dep.state == "failed":
            return DeploymentPhase.FAILED, dep.error or "deployment failed"
        if dep is not None and dep.error and dep.state == "installed" and dep.run_id is None:
            return DeploymentPhase.FAILED, dep.error  # installed, but the run did not start
        # The result of the run this deployment started is newer than any RUNNING a heartbeat
        # reported before it arrived; a result of an older run is not.
        current = dep is not None and last is not None and last.run_id == dep.run_id
        if state == AppState.RUNNING and not current:
            return DeploymentPhase.RUNNING, None
        if last is not None:
            if last.outcome == Outcome.RETURNED:
                return DeploymentPhase.RUNNING, None
            if last.outcome == Outcome.STOPPED:
                return DeploymentPhase.STOPPED, None
            detail = f": {last.detail}" if last.detail else ""
            return DeploymentPhase.FAILED, f"run {last.run_id} {last.outcome.name}{detail}"
        if state is not None:
            return DeploymentPhase.from_app_state(state), None
        if dep is not None and dep.state in ("pending", "transferring"):
            return DeploymentPhase.DEPLOYING, None
        if dep is not None and dep.state == "installed":
            return (DeploymentPhase.DEPLOYING if dep.run is not None
                    else DeploymentPhase.INSTALLED), None
        return DeploymentPhase.PENDING, None

    def _status_lock(self, name: str) -> asyncio.Lock:
        lock = self._status_locks.get(name)
        if lock is None:
            lock = self._status_locks[name] = asyncio.Lock()
        return lock

    async def _write_device_status(
        self, name: str, st: GatewayDeviceStatus, apps: dict[str, tuple[Application, bool]]
    ) -> None:
        # Computed and written under the Device's lock: a pass's write computed before a run
        # was published, and landing after that publication, set status.enrollment back (the
        # run counter before the run, no open run) until the next pass; a gateway dying then
        # left its successor to give that run id again.
        async with self._status_lock(name):
            await self._write_device_status_locked(name, st, apps)

    async def _write_device_status_locked(
        self, name: str, st: GatewayDeviceStatus, apps: dict[str, tuple[Application, bool]]
    ) -> None:
        core: dict[str, Any] = {
            "phase": st.phase.value,
            "deviceId": st.device_id,
            "gateway": {"name": self.name, "endpoint": self.endpoint,
                        "connectedAt": rfc3339(st.connected_since)},
            "connectedSince": rfc3339(st.connected_since),
            "apps": self._app_entries(st, apps),
            "enrollment": self._enrollment(st),
        }
        now = time.time()
        written = self._written.get(name)
        if written is not None and written[0] == core and (
                now - written[1] < self.refresh_s or not self._may_refresh()):
            return  # nothing changed, and it is not yet time (or not our turn) to refresh
        status = dict(core)
        if st.last_heartbeat is not None:
            status.update(lastHeartbeat=rfc3339(st.last_heartbeat), uptimeMs=st.uptime_ms,
                          memoryFree=st.memory_free)
        status = {k: v for k, v in status.items() if v is not None}
        status["gateway"] = {k: v for k, v in status["gateway"].items() if v is not None}
        # A merge patch replaces lists whole and removes keys set to null.
        for key in ("connectedSince",):
            status.setdefault(key, None)
        try:
            await self.kube.patch(DEVICES, name, {"status": status}, self.namespace, status=True)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        self._written[name] = (core, now)
        self._cover(name, core["enrollment"])
