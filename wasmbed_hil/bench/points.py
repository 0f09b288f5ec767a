"""Device actions bound to protocol points: "cut the power when the 3rd chunk is acknowledged".

A *protocol point* is a moment of one device's exchange with its gateway, as the bench can
see it without touching the session code:

- `after_chunk_acked(n)`: the gateway has read the device's n-th ChunkAck (counted from
  when the trigger is armed, over every connection of the device);
- `after_start()`: the gateway has read a StartAck with code 0 (the run started);
- `result_in_flight()`: the gateway has read an ExecutionResult: the device has sent it and
  holds it until its ResultAck (docs/protocol.md section 11). The gateway's own handling of
  the message (storing it, queueing the ResultAck) runs in the same loop turn, before the
  action, so an action here races the ack to the device: whether the device got it or sends
  the result again after its next Welcome, one result is stored;
- `message(direction, type_name, nth)`: any other message of the gateway's protocol trace;
- `during_handshake()`: a TLS handshake is under way on the device's link: the gateway's
  first flight (ServerHello...) is on its way back to the device. On a device whose link
  takes impairments (the firmware backends' bridge, the virtual devices' relay) that is
  exact; on one with no link (a virtual device made with relay=False) it falls back to the
  device entering CONNECTING (TCP and TLS set-up).

The trace points are read from the gateway's protocol trace (GatewayConfig.trace_limit > 0):
an observer is put on the trace of each of the device's connections as it opens (the
gateway's "connection open" event), read-only. The handshake point is a pass-through link
impairment (bench.link.pump.Impairment) that only looks at the bytes.

An *action* is what happens to the device at that point: "power_off", "power_on", "reset",
"reboot" or "cut_link" (DeviceHandle.on_loop). It runs on the harness loop as a task started
the moment the point is seen. A device in the harness's own process (the virtual device) is
stopped within that loop turn; one in its own process (QEMU) keeps running until the signal
lands, so it may have moved on by a message or two: scenarios assert what holds either way.

Sync API (the one path: GatewayHandle.when -> Trigger; fixtures and Robot use that):

    trigger = gateway.when(device, after_chunk_acked(3), "power_off")
    gateway.deploy(device, module, "app", wait=False)
    trigger.wait()          # the point was seen and the action done (or its error raised)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..gateway.connection import TraceEntry
from ..gateway.events import GatewayEvent, WaitTimeout
from . import waits
from .link.pump import Direction, Impairment
from .seams import Lifecycle

if TYPE_CHECKING:
    from ..gateway import Gateway
    from .device import DeviceHandle

DeviceAction = Literal["power_off", "power_on", "reset", "reboot", "cut_link"]
ACTIONS: tuple[str, ...] = get_args(DeviceAction)
TRACE_DIRECTIONS = ("in", "out")  # as the gateway's trace says: "in" = from the device


@dataclass(frozen=True)
class ProtocolPoint:
    """A point of the gateway's protocol trace: the `nth` message of type `message` going
    `direction` ("in": device -> gateway), optionally only for one `app_id` and only when
    `check(fields)` holds. `nth` counts from when the trigger is armed."""

    direction: str
    message: str
    nth: int = 1
    app_id: str | None = None
    check: Callable[[dict[str, Any]], bool] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.direction not in TRACE_DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', got {self.direction!r}")
        if not isinstance(self.nth, int) or self.nth < 1:
            raise ValueError(f"nth must be a positive int, got {self.nth!r}")

    def matches(self, entry: TraceEntry) -> bool:
        _at, direction, _mid, type_name, fields = entry
        if direction != self.direction or type_name != self.message:
            return False
        if self.app_id is not None and fields.get("app_id") != self.app_id:
            return False
        return self.check is None or bool(self.check(fields))

    def describe(self) -> str:
        if self.label:
            return self.label
        arrow = "from" if self.direction == "in" else "to"
        app = f" of {self.app_id}" if self.app_id else ""
        return f"{_ordinal(self.nth)} {self.message}{app} {arrow} the device"


@dataclass(frozen=True)
class HandshakePoint:
    """A TLS handshake under way on the device's link (see the module docstring)."""

    nth: int = 1  # the nth handshake from arming

    def describe(self) -> str:
        return f"{_ordinal(self.nth)} TLS handshake on the device's link"


Point = ProtocolPoint | HandshakePoint


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ------------------------------------------------------------------------ the vocabulary


def after_chunk_acked(n: int, app_id: str | None = None) -> ProtocolPoint:
    """The gateway has read the device's n-th ChunkAck."""
    return ProtocolPoint("in", "ChunkAck", n, app_id,
                         label=f"after the {_ordinal(n)} DeployChunk was acknowledged")


def after_start(app_id: str | None = None) -> ProtocolPoint:
    """The device has acknowledged a StartApp with code 0: its run is under way."""
    return ProtocolPoint("in", "StartAck", 1, app_id, check=lambda f: f.get("code") == 0,
                         label="after StartApp was acknowledged")


def result_in_flight(app_id: str | None = None) -> ProtocolPoint:
    """The gateway has read an ExecutionResult; its ResultAck is on its way to the device."""
    return ProtocolPoint("in", "ExecutionResult", 1, app_id,
                         label="as the ExecutionResult is acknowledged")


def message(direction: str, type_name: str, nth: int = 1,
            app_id: str | None = None) -> ProtocolPoint:
    """Any message of the trace: message("out", "DeployBegin"), message("in", "Heartbeat", 3)."""
    return ProtocolPoint(direction, type_name, nth, app_id)


def during_handshake(nth: int = 1) -> HandshakePoint:
    return HandshakePoint(nth)


POINTS: dict[str, Callable[..., Point]] = {
    "after_chunk_acked": after_chunk_acked,
    "after_start": lambda n=1, app_id=None: after_start(app_id),
    "result_in_flight": lambda n=1, app_id=None: result_in_flight(app_id),
    "during_handshake": lambda n=1, app_id=None: during_handshake(n),
}


def _words(text: str) -> str:
    return "_".join(str(text).replace("-", " ").replace("_", " ").lower().split())


def named_point(name: str, n: int = 1, app_id: str | None = None) -> Point:
    """A point by its name, as Robot keywords give it: "after chunk acked" (n: which
    ChunkAck), "after start", "result in flight", "during handshake" (n: which handshake)."""
    make = POINTS.get(_words(name))
    if make is None:
        raise ValueError(f"unknown protocol point {name!r} (one of: "
                         f"{', '.join(k.replace('_', ' ') for k in POINTS)})")
    return make(int(n), app_id)


def action_named(name: str) -> DeviceAction:
    """"power off", "Power_Off", "cut link"... -> the DeviceAction."""
    action = _words(name)
    if action not in ACTIONS:
        raise ValueError(f"unknown device action {name!r} (one of: "
                         f"{', '.join(a.replace('_', ' ') for a in ACTIONS)})")
    return action  # type: ignore[return-value]


# ------------------------------------------------------------------------------ triggers


class Trigger:
    """One armed point -> action binding; fires at most once. Made by GatewayHandle.when."""

    def __init__(self, device: DeviceHandle, point: Point, action: DeviceAction) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        self.device = device
        self.point = point
        self.action: DeviceAction = action
        self.seen = 0  # matching messages (or handshakes) seen so far
        self.fired_at: float | None = None  # loop time the action started
        self.entry: TraceEntry | None = None  # the trace entry that fired it
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._disarm: list[Callable[[], None]] = []  # run on the loop

    def describe(self) -> str:
        return f"{self.action} {self.point.describe()} on {self.device.name}"

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    # -- on the loop --------------------------------------------------------------------
    def _hit(self, entry: TraceEntry | None = None) -> None:
        if self.fired:
            return
        self.seen += 1
        if self.seen < self.point.nth:
            return
        self.entry = entry
        self.fired_at = asyncio.get_running_loop().time()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"trigger-{self.device.name}-{self.action}")

    async def _run(self) -> None:
        try:
            await self.device.on_loop(self.action)
        except BaseException as exc:  # handed to wait()
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._done.set()
            self._teardown()

    def _teardown(self) -> None:
        disarm, self._disarm = self._disarm, []
        for undo in disarm:
            undo()

    async def _cancel(self) -> None:
        self._teardown()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- from the test thread ----------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Trigger:
        """Wait until the point was seen and the action has completed; raises the action's
        error, or WaitTimeout saying how far it got. `timeout` defaults to twice the run's
        (bench.waits): the point may come late in a transfer."""
        timeout = waits.resolve(timeout, 2.0)
        if not self._done.wait(timeout):
            raise WaitTimeout(
                f"{self.describe()}: not done within {timeout:g}s "
                f"({self.seen} of {self.point.nth} matching points seen, "
                f"{'fired' if self.fired else 'not fired'})"
            )
        if self.error is not None:
            raise self.error
        return self

    def cancel(self) -> None:
        """Disarm (a no-op once done); an action in progress is cancelled."""
        loop = self.device.loop
        if loop.alive:
            loop.run(self._cancel())

    def __repr__(self) -> str:
        return f"<Trigger {self.describe()} seen={self.seen} fired={self.fired}>"


# ------------------------------------------------------------ arming (on the loop thread)


class ObservedTrace(deque[TraceEntry]):
    """A connection's trace deque that also hands each entry to observers (read-only)."""

    observers: list[Callable[[TraceEntry], None]]

    def append(self, entry: TraceEntry) -> None:
        super().append(entry)
        for observer in list(self.observers):
            observer(entry)


def _observed(conn: Any) -> ObservedTrace:
    trace = conn.trace
    if not isinstance(trace, ObservedTrace):
        observed = ObservedTrace(trace, trace.maxlen)
        observed.observers = []
        conn.trace = observed
        trace = observed
    return trace


def arm_on_trace(gateway: Gateway, device_id: str, trigger: Trigger) -> None:
    """Watch every connection of `device_id` at `gateway`, the live one and each that opens,
    for the trigger's ProtocolPoint. On the loop thread."""
    point = trigger.point
    assert isinstance(point, ProtocolPoint)
    if gateway.config.trace_limit <= 0:
        raise ValueError("protocol points need the gateway's trace (GatewayConfig.trace_limit > 0)")
    watched: list[ObservedTrace] = []

    def observer(entry: TraceEntry) -> None:
        if point.matches(entry):
            trigger._hit(entry)

    def watch(conn: Any) -> None:
        trace = _observed(conn)
        if observer not in trace.observers:
            trace.observers.append(observer)
            watched.append(trace)

    def on_event(event: GatewayEvent) -> None:
        if (event.kind == "connection" and event.device_id == device_id
                and event.data.get("state") == "open"):
            conn = gateway.registry.connections.get(device_id)
            if conn is not None:
                watch(conn)

    live = gateway.registry.connections.get(device_id)
    if live is not None:
        watch(live)
    gateway.events.add_listener(on_event)

    def disarm() -> None:
        gateway.events.remove_listener(on_event)
        for trace in watched:
            if observer in trace.observers:
                trace.observers.remove(observer)

    trigger._disarm.append(disarm)


class HandshakeWatch(Impairment):
    """Passes every byte; counts connections opening through the link and reports the
    first gateway->device chunk of each (the gateway's first TLS flight). The chunk that
    fires the trigger is held until its action is done, so the device cannot answer the
    flight first (a virtual device's TLS, on this loop, would otherwise finish the
    handshake from a transport callback before a power cut lands)."""

    def __init__(self, trigger: Trigger) -> None:
        self._trigger = trigger
        self._opening = False

    def admit(self) -> None:
        self._opening = True

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        if direction == "down" and self._opening:
            self._opening = False
            self._trigger._hit()
            action = self._trigger._task
            if action is not None:
                await asyncio.wait([action])  # its outcome goes to the trigger, not here
        return data


def arm_on_handshake(trigger: Trigger) -> None:
    """Watch the device's link for its next handshakes (see HandshakePoint); on the loop."""
    device = trigger.device
    impairments = device.link_impairments
    if impairments is not None:
        watch = HandshakeWatch(trigger)
        impairments.add(watch)
        trigger._disarm.append(lambda: impairments.remove(watch))
        return
    log = device.lifecycle_events

    def on_lifecycle(event: GatewayEvent) -> None:
        if event.data.get("state") == Lifecycle.CONNECTING.value:
            trigger._hit()

    log.add_listener(on_lifecycle)
    trigger._disarm.append(lambda: log.remove_listener(on_lifecycle))
