"""Who is enrolled at the gateway and who is connected now.

One DeviceStatus per enrolled device (phase, heartbeat figures, what it runs, its phase history)
and at most one live DeviceConnection per device: a newer connection of the same identity
supersedes the older one. The connection handlers report to the registry (attach, connected,
detach, phase changes); the admin API and the deployment engine look devices and connections up
in it. Liveness lives in memory only; the local cache (GatewayStore) keeps the enrollments.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ..protocol import AppSummary, DeviceInfo, DevicePhase, ErrorCode
from .connection import DeviceConnection, TraceEntry
from .errors import GatewayError
from .events import EventLog
from .store import EnrolledDevice


@dataclass
class DeviceStatus:
    """What the gateway knows of one enrolled device right now."""

    device_id: str
    name: str
    identity: str
    phase: DevicePhase
    info: DeviceInfo | None = None
    connected_since: float | None = None
    last_heartbeat: float | None = None  # time.time() of the last heartbeat
    heartbeats: int = 0
    uptime_ms: int = 0
    memory_free: int = 0
    apps: tuple[AppSummary, ...] = ()
    history: list[DevicePhase] = field(default_factory=list)


class DeviceRegistry:
    def __init__(self, events: EventLog, metrics: Counter[str], trace_limit: int) -> None:
        self.events = events
        self.metrics = metrics
        self.trace_limit = trace_limit
        self.status: dict[str, DeviceStatus] = {}
        self.connections: dict[str, DeviceConnection] = {}
        # Protocol traces of connections that ended, per device (the live one is on its conn).
        self.traces: dict[str, list[TraceEntry]] = {}

    # ---------------------------------------------------------------- devices
    def status_for(self, dev: EnrolledDevice, phase: DevicePhase) -> DeviceStatus:
        """The device's status, created in `phase` if it has none yet."""
        st = self.status.get(dev.device_id)
        if st is None:
            st = DeviceStatus(dev.device_id, dev.name, dev.identity, phase, history=[phase])
            self.status[dev.device_id] = st
        return st

    def set_phase(self, st: DeviceStatus, phase: DevicePhase, why: str = "") -> None:
        if st.phase == phase:
            return
        st.phase = phase
        st.history.append(phase)
        self.metrics[f"phase_{phase.value.lower()}"] += 1
        self.events.emit("phase", st.device_id, phase=phase.value, name=st.name, why=why)

    def forget(self, device_id: str) -> None:
        self.status.pop(device_id, None)

    def devices(self) -> list[DeviceStatus]:
        return list(self.status.values())

    def device(self, key: str) -> DeviceStatus:
        """A device by id, name or identity."""
        if key in self.status:
            return self.status[key]
        for st in self.status.values():
            if key in (st.name, st.identity):
                return st
        known = ", ".join(sorted(st.name for st in self.status.values())) or "none"
        raise GatewayError(f"no enrolled device {key!r} (enrolled: {known})")

    # ---------------------------------------------------------------- connections
    def connection(self, key: str) -> DeviceConnection:
        """The live connection of a device (by id, name or identity)."""
        conn = self.connections.get(self.device(key).device_id)
        if conn is None:
            raise GatewayError(f"device {key[:8]} is not connected")
        return conn

    async def wait_connection(self, device_id: str) -> DeviceConnection:
        """The device's live connection, as soon as it has one."""

        def check() -> DeviceConnection | None:
            conn = self.connections.get(device_id)
            return conn if conn is not None and not conn.closed.is_set() else None

        return await self.events.wait_for(check, float("inf"), "connection")

    def is_current(self, conn: DeviceConnection) -> bool:
        """Whether `conn` is its device's live connection (not superseded, not detached)."""
        return conn.device is not None and self.connections.get(conn.device.device_id) is conn

    def attach(self, conn: DeviceConnection, dev: EnrolledDevice) -> None:
        """Make `conn` the device's connection; an older one of the same device is dropped."""
        conn.device = dev
        old = self.connections.get(dev.device_id)
        if old is not None and old is not conn:
            old.fail(ErrorCode.UNEXPECTED_MESSAGE, "superseded by a newer connection")
        self.connections[dev.device_id] = conn

    def connected(self, conn: DeviceConnection, dev: EnrolledDevice) -> None:
        """The device was welcomed on `conn`: it is Connected."""
        st = self.status_for(dev, DevicePhase.ENROLLED)
        st.info = conn.info
        st.connected_since = time.time()
        self.traces.setdefault(dev.device_id, [])
        self.set_phase(st, DevicePhase.CONNECTED, "welcomed")
        self.events.emit("connection", dev.device_id, state="open", name=dev.name)

    def detach(self, conn: DeviceConnection) -> None:
        """`conn` ended: keep its trace and, unless it was superseded, the device is
        Disconnected."""
        dev = conn.device
        if dev is not None and self.trace_limit > 0:
            trace = self.traces.setdefault(dev.device_id, [])
            trace.extend(conn.trace)
            del trace[: max(0, len(trace) - self.trace_limit)]
        if dev is None:
            return
        if self.connections.get(dev.device_id) is not conn:  # superseded: phase is not ours
            self.events.emit("connection", dev.device_id, state="closed", reason=conn.close_reason)
            return
        del self.connections[dev.device_id]
        st = self.status.get(dev.device_id)
        if st is not None:
            st.connected_since = None
            self.set_phase(st, DevicePhase.DISCONNECTED, conn.close_reason)
        self.events.emit("connection", dev.device_id, state="closed", reason=conn.close_reason)

    def trace(self, device_id: str) -> list[TraceEntry]:
        """Protocol messages exchanged with a device, over all its connections, live one last."""
        entries = list(self.traces.get(device_id, ()))
        conn = self.connections.get(device_id)
        if conn is not None:
            entries.extend(conn.trace)
        return entries
