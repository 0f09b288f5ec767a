"""The fault kinds of the fault matrix (suites/faults/), one small object each, in one registry.

A fault kind says what it needs of a device's backend (`requires`: the `Faults` actions of
bench.seams it uses, which each backend declares in `faults.supported`), how it is applied
and healed, and what it may legitimately cost (runs in flight that a power cut loses). Two
shapes:

- sustained (`sustained=True`): applied before the operation, held until its effect shows
  (`wait_effect`: the gateway noticed), the operation is started under it, then healed;
- instant: armed before the operation (`arm`, for faults the device triggers itself, such as
  a link dropped after chunk N), or applied at the operation's moment of flight (`apply`).

A new kind is one more entry in `FAULT_KINDS`: the matrix parametrizes over it, and a
combination a backend or an operation cannot do is skipped with the reason `unsupported()`
gives. Random choices (which chunk) come from the `rng` of the context, seeded by the run's
fault seed (`--hil-fault-seed`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..protocol import DevicePhase
from . import waits
from .device import DeviceHandle
from .gateway import GatewayHandle
from .link.impairments import (
    Bandwidth,
    Corrupt,
    HalfOpen,
    Latency,
    Partition,
    slow_cellular,
)
from .link.pump import Impairment
from .message_faults import Corrupt as CorruptMessage
from .message_faults import Delay, Drop, Duplicate, MessageFault, Reorder
from .points import Point, after_chunk_acked, after_start, during_handshake
from .seams import Lifecycle

__all__ = [
    "FAULT_KINDS",
    "FaultContext",
    "FaultKind",
    "MessageFaultKind",
    "fault_kind",
    "half_open_device_options",
    "healed",
    "strike",
]


@dataclass
class FaultContext:
    """What a fault acts on during one scenario."""

    gateway: GatewayHandle
    device: DeviceHandle | None  # None: the control plane makes it (a platform scenario)
    rng: random.Random
    timeout: float = field(default_factory=waits.default_timeout)  # the run's (bench.waits)
    platform: Any = None  # the Platform (bench.platform) of a control-plane scenario
    chunks: int = 0  # chunks the operation's transfer takes (0: it transfers nothing)
    operation: str = ""  # the matrix operation it strikes (enroll, heartbeat, deploy_*, run)
    choices: dict[str, Any] = field(default_factory=dict)  # what the rng chose, for the report
    applied: bool = False  # strike() was called: healed() heals
    _held: list[AbstractContextManager[Any]] = field(default_factory=list)

    def hold(self, held: AbstractContextManager[Any]) -> None:
        """Enter a fault that is a context manager (an impairment, an outage, message rules)
        and keep it until `release`."""
        held.__enter__()
        self._held.append(held)

    def release(self) -> None:
        """Leave what `hold` entered, last first."""
        while self._held:
            self._held.pop().__exit__(None, None, None)

    @property
    def dut(self) -> DeviceHandle:
        """The device the fault acts on."""
        if self.device is None:
            raise RuntimeError("this fault acts on a device, and the scenario has none")
        return self.device


class FaultKind:
    name: str = "?"
    summary: str = ""
    requires: frozenset[str] = frozenset()  # Faults actions (bench.seams) it uses
    sustained: bool = False
    needs_platform: bool = False  # acts on the control plane: runs in platform scenarios
    needs_transfer: bool = False  # only meaningful while chunks travel
    # The operations it can strike (None: all); a fault of enrollment has no effect on a
    # device that is enrolled already.
    only_operations: tuple[str, ...] | None = None
    only_why: str = ""  # why not the others
    # During `enroll`, applied before the device is powered on (the enrollment happens
    # under it) rather than once the gateway has enrolled it.
    before_power_on: bool = False
    loses_runs: bool = False  # a run in flight when it strikes may end without a result
    # Backends where it wipes what a board keeps in RAM (modules): a strike after an install
    # leaves the device without the module and nothing redeploys it.
    volatile_backends: frozenset[str] = frozenset()

    def unsupported(self, device: DeviceHandle, operation: str, chunks: int) -> str | None:
        """Why this fault cannot be shown on this device during this operation, or None."""
        if self.only_operations is not None and operation not in self.only_operations:
            return (f"{self.name} strikes only during {', '.join(self.only_operations)}: "
                    f"{self.only_why}")
        if self.needs_platform:
            return None  # acts on the control plane, whatever the device
        missing = self.requires - device.faults.supported
        if missing:
            return (f"the {device.backend} backend offers no {', '.join(sorted(missing))} "
                    f"(it offers: {', '.join(sorted(device.faults.supported)) or 'none'})")
        if self.needs_transfer and chunks < 2:
            return f"{self.name} strikes between chunks; {operation} moves {chunks} chunk(s)"
        if device.backend in self.volatile_backends and operation in ("deploy_small", "run"):
            return (f"the {device.backend} board keeps modules in RAM and this operation "
                    "installs before the fault can strike: the module is lost and nothing "
                    "redeploys it (the gateway does not reconcile a rebooted device's "
                    "heartbeat with what it installed)")
        return None

    def device_options(self, backend: str) -> dict[str, Any]:
        """Options for the device the fault will strike on `backend` (none by default)."""
        return {}

    def arm(self, ctx: FaultContext) -> None:
        """Before the operation starts (instant faults the device triggers itself)."""

    def apply(self, ctx: FaultContext) -> None:
        """Sustained: before the operation. Instant: at the operation's moment of flight."""

    def wait_effect(self, ctx: FaultContext) -> None:
        """Sustained: wait until the fault shows (event-driven)."""

    def heal(self, ctx: FaultContext) -> None:
        """Undo a sustained fault (instant ones heal themselves)."""

    def disarm(self, ctx: FaultContext) -> None:
        """After the operation, whatever the fault: take off what `arm` left in force (once
        it has struck)."""


FAULT_KINDS: dict[str, FaultKind] = {}


def fault_kind(cls: type[FaultKind]) -> type[FaultKind]:
    """Register a fault kind (class decorator)."""
    FAULT_KINDS[cls.name] = cls()
    return cls


# ----------------------------------------------------------------------------- the kinds


@fault_kind
class Silence(FaultKind):
    name = "silence"
    summary = "the device stops sending heartbeats, its connection stays up"
    requires = frozenset({"silence"})
    sustained = True

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.faults.silence(True)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.UNREACHABLE, ctx.timeout)

    def heal(self, ctx: FaultContext) -> None:
        ctx.dut.faults.silence(False)


@fault_kind
class PowerCut(FaultKind):
    name = "power_cut"
    summary = "power off for a while (storage kept, RAM lost), then on"
    sustained = True
    loses_runs = True

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.power_off()

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.DISCONNECTED, ctx.timeout)

    def heal(self, ctx: FaultContext) -> None:
        ctx.dut.power_on()


@fault_kind
class CutLink(FaultKind):
    name = "cut_link"
    summary = "the connection to the gateway drops under a powered device"
    requires = frozenset({"cut_link"})

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.faults.cut_link()


@fault_kind
class DropAfterChunks(FaultKind):
    name = "drop_after_chunk"
    summary = "the device drops its link right after receiving chunk N (seeded)"
    requires = frozenset({"drop_link_after_chunks"})
    needs_transfer = True

    def arm(self, ctx: FaultContext) -> None:
        chunk = ctx.rng.randint(1, ctx.chunks - 1)
        ctx.choices["chunk"] = chunk
        ctx.dut.faults.drop_link_after_chunks(chunk)


@fault_kind
class Reboot(FaultKind):
    name = "reboot"
    summary = "a power cycle at the operation's moment of flight"
    loses_runs = True
    volatile_backends = frozenset({"qemu", "renode", "renode-test"})

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.reboot()


@fault_kind
class Reset(FaultKind):
    name = "reset"
    summary = "a reset without a power cut (QMP system_reset on qemu; a reboot elsewhere)"
    loses_runs = True
    volatile_backends = frozenset({"qemu", "renode", "renode-test"})

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.reset()


@fault_kind
class CorruptProof(FaultKind):
    name = "corrupt_proof"
    summary = "the device's enrollment signature does not verify: it is refused, then heals"
    requires = frozenset({"corrupt_proof"})
    sustained = True
    only_operations = ("enroll",)
    only_why = "an enrolled device proves nothing when it connects again"
    before_power_on = True

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.faults.corrupt_proof(True)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.dut.wait_rejected(ctx.timeout)

    def heal(self, ctx: FaultContext) -> None:
        ctx.dut.faults.corrupt_proof(False)


@fault_kind
class WrongKeyProof(FaultKind):
    name = "wrong_key_proof"
    summary = "the device proves enrollment with another key than its certificate's"
    requires = frozenset({"enroll_with"})
    sustained = True
    only_operations = ("enroll",)
    only_why = "an enrolled device proves nothing when it connects again"
    before_power_on = True

    def apply(self, ctx: FaultContext) -> None:
        other = ctx.gateway.ca.issue_device(f"{ctx.dut.name}-impostor")
        ctx.dut.faults.enroll_with(other)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.dut.wait_rejected(ctx.timeout)

    def heal(self, ctx: FaultContext) -> None:
        ctx.dut.faults.enroll_with(None)


@fault_kind
class GatewayOutage(FaultKind):
    name = "gateway_outage"
    summary = "the gateway is down until the device notices, then starts on the same state"
    sustained = True
    only_operations = ("enroll", "heartbeat")
    only_why = "a stopped gateway takes no deployment to start one under it"
    before_power_on = True

    def apply(self, ctx: FaultContext) -> None:
        ctx.gateway.stop()

    def wait_effect(self, ctx: FaultContext) -> None:
        device = ctx.dut
        log = device.lifecycle_events

        async def noticed() -> None:
            # Not online, and tried at least once since (the lifecycle left OFF).
            await log.wait_for(lambda: device.lifecycle not in (Lifecycle.ONLINE, Lifecycle.OFF),
                               ctx.timeout, f"{device.name} to notice the gateway is down")

        device.loop.run(noticed(), ctx.timeout + 5)

    def heal(self, ctx: FaultContext) -> None:
        ctx.gateway.start()


@fault_kind
class GatewayRestart(FaultKind):
    name = "gateway_restart"
    summary = "the gateway stops and starts again on the same state directory"

    def apply(self, ctx: FaultContext) -> None:
        ctx.gateway.restart()


@fault_kind
class ApiOutage(FaultKind):
    name = "api_outage"
    summary = "the platform's components lose the API server (the harness still sees it)"
    sustained = True
    needs_platform = True

    def apply(self, ctx: FaultContext) -> None:
        # the proxy is cut before this returns: the effect is immediate
        ctx.hold(ctx.platform.api_outage())

    def heal(self, ctx: FaultContext) -> None:
        ctx.release()


# ------------------------------------------------------------------------ link impairments


class LinkImpairmentKind(FaultKind):
    """Impairments (bench.link.impairments) on the device's byte path, every backend's (the
    bridge for emulated boards, the relay for virtual devices), through `device.link`: held
    from before the operation until their effect shows, then taken off (what they hold is
    released). `impairments(ctx)` makes them, seeded from the run's fault seed."""

    requires = frozenset({"impair"})
    sustained = True

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        raise NotImplementedError

    def apply(self, ctx: FaultContext) -> None:
        ctx.hold(ctx.dut.link.impair(*self.impairments(ctx)))

    def heal(self, ctx: FaultContext) -> None:
        ctx.release()


@fault_kind
class LinkPartition(LinkImpairmentKind):
    name = "partition"
    summary = "no byte crosses the device's link and no connection opens"

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        return (Partition(),)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.DISCONNECTED, ctx.timeout)


class SlowLinkKind(LinkImpairmentKind):
    """A link that still carries everything, slowly: the device enrolls and heartbeats under
    it, and the effect shown is two heartbeats acknowledged through it."""

    before_power_on = True  # an enrollment happens under it

    def wait_effect(self, ctx: FaultContext) -> None:
        if ctx.operation == "enroll":
            ctx.gateway.wait_phase(ctx.dut, DevicePhase.CONNECTED, ctx.timeout)
        ctx.gateway.wait_heartbeats(ctx.dut, 2, ctx.timeout)


@fault_kind
class LinkLatency(SlowLinkKind):
    name = "latency"
    summary = "80 ms of latency with 40 ms of jitter (seeded) each way"

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        return (Latency(0.08, jitter=0.04, seed=ctx.rng.randrange(1 << 30)),)


@fault_kind
class LinkUart(SlowLinkKind):
    name = "uart_115200"
    summary = "the bandwidth of a 115200-baud UART (11520 B/s) each way"

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        return (Bandwidth.uart(115200),)


@fault_kind
class LinkCellular(SlowLinkKind):
    name = "slow_cellular"
    summary = "a slow cellular link: 150 +- 50 ms and 6000 B/s"

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        return slow_cellular(seed=ctx.rng.randrange(1 << 30))


# A virtual device's handshake timeout under a half-open link. The device notices the dead
# link before the gateway does and dials again under it: that attempt's ClientHello is lost,
# and the device waits out its handshake timeout (5 s by default; the firmware's is 15 s)
# before it dials once more, through the healed link. A virtual device's dial to Welcome
# (TCP, the TLS handshake, Hello) took 26 ms (median) in the link, heartbeat, enrollment and
# fault suites at load 8-10, 0.80 s at most, that one through 80 ms of latency each way
# (docs/report.md, "Suite timings"): the scenarios give it 2 s. A timeout that strikes
# anyway costs a retry, not the scenario.
HALF_OPEN_HANDSHAKE_TIMEOUT_S = 2.0


def half_open_device_options(backend: str) -> dict[str, Any]:
    """Options for a device whose link will be half open (only the virtual device's handshake
    timeout is an option; a firmware's is built in)."""
    return {"connect_timeout_s": HALF_OPEN_HANDSHAKE_TIMEOUT_S} if backend == "virtual" else {}


@fault_kind
class LinkHalfOpen(LinkImpairmentKind):
    name = "half_open"
    summary = "the device's bytes stop reaching the gateway, the connection stays up"

    def device_options(self, backend: str) -> dict[str, Any]:
        return half_open_device_options(backend)

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        return (HalfOpen("up"),)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.UNREACHABLE, ctx.timeout)


@fault_kind
class LinkCorrupt(LinkImpairmentKind):
    name = "corrupt_bytes"
    summary = "a byte to the device flipped inside a record: TLS fails, the device reconnects"

    def impairments(self, ctx: FaultContext) -> tuple[Impairment, ...]:
        # A byte of the first record's ciphertext (the link is idle between heartbeat acks,
        # so the impairment starts at a record boundary; every record is over 20 bytes). Not
        # a rate: a flipped *length* byte of a record header leaves the firmware waiting for
        # up to 16 KiB that never form a record, while every byte still counts as a sign of
        # life (docs/faults.md, known gaps).
        offset = ctx.rng.randint(6, 20)
        ctx.choices["offset"] = offset
        return (Corrupt("down", offsets=[offset], seed=ctx.rng.randrange(1 << 30)),)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.DISCONNECTED, ctx.timeout)


# ------------------------------------------------------------------ power at protocol points


class PointFaultKind(FaultKind):
    """A device action bound to a protocol point (bench.points, `gateway.when`): armed before
    the operation, it fires the moment the point is seen; `disarm` waits for it and powers
    the device on again if it was cut."""

    action: str = "power_off"

    def point(self, ctx: FaultContext) -> Point:
        raise NotImplementedError

    def arm(self, ctx: FaultContext) -> None:
        ctx.choices["trigger"] = ctx.gateway.when(ctx.dut, self.point(ctx), self.action)

    def disarm(self, ctx: FaultContext) -> None:
        trigger = ctx.choices.pop("trigger", None)
        if trigger is None:
            return
        try:
            trigger.wait(ctx.timeout)
            ctx.choices["at"] = repr(trigger.entry) if trigger.entry is not None else "handshake"
        finally:
            trigger.cancel()
            if self.action == "power_off":
                ctx.dut.power_on()


@fault_kind
class PowerAtChunk(PointFaultKind):
    name = "power_at_chunk"
    summary = "power cut the moment chunk N (seeded) is acknowledged, then on: the transfer resumes"
    needs_transfer = True

    def point(self, ctx: FaultContext) -> Point:
        chunk = ctx.rng.randint(1, ctx.chunks - 1)
        ctx.choices["chunk"] = chunk
        return after_chunk_acked(chunk)


@fault_kind
class ResetAfterStart(PointFaultKind):
    name = "reset_after_start"
    summary = "a reset the moment StartApp is sent: the run has no result, as the spec says"
    action = "reset"
    only_operations = ("run",)
    only_why = "it strikes a run"
    loses_runs = True
    volatile_backends = frozenset({"qemu", "renode", "renode-test"})

    def point(self, ctx: FaultContext) -> Point:
        return after_start()


@fault_kind
class PowerInHandshake(PointFaultKind):
    name = "power_in_handshake"
    summary = "power cut during the device's first TLS handshake, then on"
    only_operations = ("enroll",)
    only_why = "an established session has no handshake to strike"
    before_power_on = True

    def point(self, ctx: FaultContext) -> Point:
        return during_handshake(1)


# ------------------------------------------------------------- message faults at the gateway


class MessageFaultKind(FaultKind):
    """A message fault (bench.message_faults) on the message that matters to the operation:
    armed before the operation, it strikes once when that message passes the gateway, and is
    taken off once it has struck. What the devices must do about it is docs/protocol.md
    section 12; here the whole fleet must converge after it. `rules` maps an operation to its
    rule; an operation without one is skipped, saying why."""

    rules: dict[str, MessageFault] = {}
    why_not: str = ""

    def unsupported(self, device: DeviceHandle, operation: str, chunks: int) -> str | None:
        if operation not in self.rules:
            return f"{self.name} has no message of {operation} to strike: {self.why_not}"
        return super().unsupported(device, operation, chunks)

    def arm(self, ctx: FaultContext) -> None:
        rule = self.rules[ctx.operation]
        ctx.choices["rule"] = repr(rule)
        ctx.choices["since"] = ctx.gateway.loop.call(lambda: ctx.gateway.gateway.events.last_seq)
        ctx.hold(ctx.gateway.message_faults(rule, seed=ctx.rng.randrange(1 << 30)))

    def disarm(self, ctx: FaultContext) -> None:
        if not ctx._held:
            return
        try:  # it strikes when its message passes: the operation is under way by now
            ctx.gateway.wait_event("message_fault", None, ctx.timeout, ctx.choices["since"])
        finally:
            ctx.release()


@fault_kind
class MessageDuplicated(MessageFaultKind):
    name = "msg_duplicate"
    summary = "the gateway sends or receives the operation's key message twice"
    rules = {
        "enroll": Duplicate("HeartbeatAck", nth=1),
        "heartbeat": Duplicate("Heartbeat", nth=2),
        "deploy_small": Duplicate("DeployChunk", nth=1, copies=2),
        "deploy_large": Duplicate("DeployChunk", nth=2),
        "run": Duplicate("StartApp", nth=1),
    }


@fault_kind
class MessageDelayed(MessageFaultKind):
    name = "msg_delay"
    summary = "the operation's key message is held at the gateway, the ones behind it wait"
    rules = {
        "enroll": Delay("HeartbeatAck", 0.15, nth=1),
        "heartbeat": Delay("HeartbeatAck", 0.15, nth=2),
        "deploy_small": Delay("DeployChunk", 0.3, nth=1),
        "deploy_large": Delay("DeployChunk", 0.5, nth=2),
        "run": Delay("ExecutionResult", 0.3, nth=1),
    }


@fault_kind
class MessageReordered(MessageFaultKind):
    name = "msg_reorder"
    summary = "the operation's key message overtaken by the next one in its direction"
    rules = {
        "enroll": Reorder(reply_to="Heartbeat", nth=1),
        "heartbeat": Reorder(reply_to="Heartbeat", nth=2),
        "deploy_small": Reorder("DeployChunk", nth=1, hold_s=0.3),
        "deploy_large": Reorder("DeployChunk", nth=2, hold_s=0.5),
    }
    why_not = "a run's messages (StartApp, StartAck, ExecutionResult) have none behind them"


@fault_kind
class MessageDropped(MessageFaultKind):
    name = "msg_drop"
    summary = "the operation's key message is lost at the gateway"
    rules = {
        "enroll": Drop("HeartbeatAck", nth=1),
        "heartbeat": Drop("HeartbeatAck", nth=2),
        "deploy_small": Drop("DeployChunk", nth=1),
        "deploy_large": Drop("DeployChunk", nth=2),
    }
    why_not = ("a lost StartApp fails the run by the protocol's rules "
               "(suites/messages: test_lost_start_fails_and_nothing_runs)")


@fault_kind
class MessageCorrupted(MessageFaultKind):
    name = "msg_corrupt"
    summary = "the operation's key message arrives malformed: the session ends, the device returns"
    rules = {
        "enroll": CorruptMessage("Heartbeat", nth=1),
        "heartbeat": CorruptMessage("Heartbeat", nth=2),
        "deploy_small": CorruptMessage("ChunkAck", nth=1),
        "deploy_large": CorruptMessage("DeployChunk", nth=3),
        # the gateway refuses it and closes; the device sends it again after the next Welcome
        "run": CorruptMessage("ExecutionResult", nth=1),
    }


def strike(kind: FaultKind, ctx: FaultContext) -> None:
    """Apply the fault now (and remember it, so that `healed` heals it)."""
    ctx.applied = True
    kind.apply(ctx)


@contextlib.contextmanager
def healed(kind: FaultKind, ctx: FaultContext) -> Iterator[None]:
    """Heal a sustained fault struck in the block when the block ends, also when it fails
    (the scenario's teardown must find the device and the gateway as it can close them)."""
    try:
        yield
    finally:
        try:
            if kind.sustained and ctx.applied:
                ctx.applied = False
                kind.heal(ctx)
        finally:
            kind.disarm(ctx)
