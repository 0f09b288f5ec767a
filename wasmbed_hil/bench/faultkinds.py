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
from .device import DeviceHandle
from .gateway import GatewayHandle
from .link.impairments import Partition
from .seams import Lifecycle

__all__ = ["FAULT_KINDS", "FaultContext", "FaultKind", "fault_kind", "healed", "strike"]


@dataclass
class FaultContext:
    """What a fault acts on during one scenario."""

    gateway: GatewayHandle
    device: DeviceHandle | None  # None: the control plane makes it (a platform scenario)
    rng: random.Random
    timeout: float = 10.0
    platform: Any = None  # the Platform (bench.platform) of a control-plane scenario
    chunks: int = 0  # chunks the operation's transfer takes (0: it transfers nothing)
    choices: dict[str, Any] = field(default_factory=dict)  # what the rng chose, for the report
    applied: bool = False  # strike() was called: healed() heals
    _held: list[AbstractContextManager[Any]] = field(default_factory=list)

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

    def arm(self, ctx: FaultContext) -> None:
        """Before the operation starts (instant faults the device triggers itself)."""

    def apply(self, ctx: FaultContext) -> None:
        """Sustained: before the operation. Instant: at the operation's moment of flight."""

    def wait_effect(self, ctx: FaultContext) -> None:
        """Sustained: wait until the fault shows (event-driven)."""

    def heal(self, ctx: FaultContext) -> None:
        """Undo a sustained fault (instant ones heal themselves)."""


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
class LinkPartition(FaultKind):
    name = "partition"
    summary = "no byte crosses the device's link and no connection opens"
    requires = frozenset({"impair"})
    sustained = True

    def apply(self, ctx: FaultContext) -> None:
        held = ctx.dut.faults.impair(Partition())
        held.__enter__()
        ctx._held.append(held)

    def wait_effect(self, ctx: FaultContext) -> None:
        ctx.gateway.wait_phase(ctx.dut, DevicePhase.DISCONNECTED, ctx.timeout)

    def heal(self, ctx: FaultContext) -> None:
        while ctx._held:
            ctx._held.pop().__exit__(None, None, None)


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
    volatile_backends = frozenset({"qemu", "renode"})

    def apply(self, ctx: FaultContext) -> None:
        ctx.dut.reboot()


@fault_kind
class Reset(FaultKind):
    name = "reset"
    summary = "a reset without a power cut (QMP system_reset on qemu; a reboot elsewhere)"
    loses_runs = True
    volatile_backends = frozenset({"qemu", "renode"})

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
        held = ctx.platform.api_outage()
        held.__enter__()  # the proxy is cut before this returns: the effect is immediate
        ctx._held.append(held)

    def heal(self, ctx: FaultContext) -> None:
        while ctx._held:
            ctx._held.pop().__exit__(None, None, None)


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
        if kind.sustained and ctx.applied:
            ctx.applied = False
            kind.heal(ctx)
