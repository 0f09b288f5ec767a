"""The backend-agnostic device handle every scenario uses (pytest-embedded's `dut`, ours).

Each backend (bench.backends) implements it; scenarios never see which. A handle offers the
seams of bench.seams: `Power` (power_on, power_off, reboot), `Reset`, `Console` (console,
write_line) and `Faults` (faults.silence(), faults.cut_link()...), plus the lifecycle waits
built on them, and `link` (bench.linkhandle: impairments on its byte path to the gateway).
Firmware backends share one implementation (bench.backends.firmware.FirmwareDeviceHandle);
the virtual device has its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..gateway.events import EventLog, WaitTimeout
from ..pki import Credentials
from ..protocol import ErrorCode
from .linkhandle import LinkHandle
from .loop import LoopThread
from .seams import Faults, FaultUnsupported, Lifecycle

if TYPE_CHECKING:
    from .link.pump import Impairments
    from .points import DeviceAction

__all__ = ["DeviceHandle", "FaultUnsupported", "Faults", "Lifecycle"]


class DeviceHandle(ABC):
    backend: str = "?"
    _link_handle: LinkHandle | None = None  # set by a backend whose device has a link

    def __init__(self, name: str, credentials: Credentials) -> None:
        self.name = name
        self.credentials = credentials

    @property
    def identity(self) -> str:
        return self.credentials.identity

    # -- what every backend offers ----------------------------------------------------------
    @property
    @abstractmethod
    def device_id(self) -> str | None:
        """The id the gateway gave this device (None before enrollment)."""

    @property
    @abstractmethod
    def lifecycle(self) -> Lifecycle: ...

    @property
    @abstractmethod
    def console(self) -> list[str]:
        """The device's console log (UART0 on emulated boards)."""

    def console_records(self) -> list[tuple[float, str]]:
        """The console with the time.time() at which each line was recorded, oldest first
        (the clock of the gateway's events and protocol trace: bench.timeline merges them);
        empty when the backend does not timestamp its lines."""
        return []

    @property
    @abstractmethod
    def last_reject(self) -> tuple[ErrorCode, str] | None:
        """The last enrollment refusal (code, reason), if any."""

    @property
    @abstractmethod
    def faults(self) -> Faults:
        """The faults this device can be made to show (actions; see bench.seams.Faults)."""

    @property
    def link(self) -> LinkHandle:
        """The device's link to its gateway (bench.linkhandle): impairments, counters.
        Every backend has one (a virtual device made with ``relay=False`` has not)."""
        if self._link_handle is None:
            raise RuntimeError(
                f"{self.name} ({self.backend}) has no link to impair: it dials its gateway "
                "directly (a virtual device made with relay=False)"
            )
        return self._link_handle

    @abstractmethod
    def power_on(self) -> None: ...

    @abstractmethod
    def power_off(self) -> None:
        """Cut power now: the connection drops, persistent storage is kept."""

    @abstractmethod
    async def on_loop(self, action: DeviceAction) -> None:
        """Do `action` ("power_off", "power_on", "reset", "reboot", "cut_link") on the
        harness loop, from a coroutine there: what a protocol-point trigger runs
        (bench.points). The synchronous power_on/power_off/reset go through it too."""

    @property
    def link_impairments(self) -> Impairments | None:
        """The impairments in force on the device's link (bench.link.pump), when its bytes
        go through a link the bench owns (every backend's devices, but a virtual device
        made with relay=False); None otherwise. Use them on the loop."""
        return self._link_handle.raw.impairments if self._link_handle is not None else None

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) sending heartbeats without dropping the connection (the
        `faults.silence` action, kept under the name the Robot library uses)."""
        self.faults.silence(silent)

    def write_line(self, line: str) -> None:
        """Type one line into the device's console input (the firmware's test commands:
        ``silent 1``, ``forget``...)."""
        raise NotImplementedError(f"{self.name}: the {self.backend} backend has no console input")

    # -- a debugger (pytest --hil-gdb; bench.machines.gdb) ------------------------------------
    @property
    def gdb_port(self) -> int | None:
        """The port on 127.0.0.1 of the device's GDB server (None: it has none)."""
        return None

    @property
    def gdb_halted(self) -> bool:
        """Whether each boot waits at the reset vector for a debugger's continue."""
        return False

    def gdb_hint(self) -> str:
        """How to attach a debugger (the gdb-multiarch command line), "" without a server."""
        return ""

    @abstractmethod
    def forget_enrollment(self) -> None:
        """Erase the stored device id (keep the identity), as a factory reset of state would."""

    @property
    @abstractmethod
    def lifecycle_events(self) -> EventLog:
        """The event log on which lifecycle changes are emitted (on the harness loop)."""

    @property
    @abstractmethod
    def loop(self) -> LoopThread: ...

    def extra_seen(self) -> str:
        """Backend-specific detail for a failed wait ("" when none)."""
        return ""

    def wait_lifecycle(self, state: Lifecycle, timeout: float = 10.0) -> None:
        """Wait (on lifecycle events, not polling) until the device reaches `state`."""
        log = self.lifecycle_events

        async def wait() -> None:
            await log.wait_for(lambda: self.lifecycle is state, timeout,
                               f"{self.name} {state.value}")

        try:
            self.loop.run(wait(), timeout + 5)
        except AssertionError:
            seen = f"lifecycle is {self.lifecycle.value}"
            if self.last_reject:
                seen += f", last rejection {self.last_reject[0].name}: {self.last_reject[1]}"
            seen += self.extra_seen()
            raise self._timeout(state.value, timeout, seen) from None

    @property
    def powered(self) -> bool:
        """Whether the device has power now (between power_on and a power cut). A device
        just powered on is powered before its lifecycle leaves OFF (a board boots first)."""
        return self.lifecycle is not Lifecycle.OFF

    def installed_modules(self) -> dict[str, bytes] | None:
        """The applications the device holds, as the device itself knows them (app id ->
        SHA-256 of the module), read from the device rather than through the protocol; None
        when the backend cannot tell that way (the firmware reports them in heartbeats).
        Call it on the harness loop (the convergence check does): the device lives there."""
        return None

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters the backend keeps (connections, chunks received, heartbeat RTTs...)."""

    def close(self) -> None:
        self.power_off()

    # -- conveniences -------------------------------------------------------------------------
    def reboot(self) -> None:
        self.power_off()
        self.power_on()

    def reset(self) -> None:
        """A reset without a power cut (the CPU restarts; on boards RAM may survive).
        Backends without a distinct reset reboot."""
        self.reboot()

    def wait_online(self, timeout: float = 10.0) -> str:
        self.wait_lifecycle(Lifecycle.ONLINE, timeout)
        assert self.device_id is not None
        return self.device_id

    def wait_rejected(self, timeout: float = 10.0) -> tuple[ErrorCode, str]:
        self.wait_lifecycle(Lifecycle.REJECTED, timeout)
        assert self.last_reject is not None
        return self.last_reject

    def console_tail(self, n: int = 15) -> str:
        lines = self.console[-n:]
        return "\n".join(lines) if lines else "(console empty)"

    def _timeout(self, what: str, timeout: float, seen: str) -> WaitTimeout:
        return WaitTimeout(
            f"{self.name} ({self.backend}): {what} not reached within {timeout:g}s; {seen}\n"
            f"console tail:\n{self.console_tail()}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.lifecycle.value}>"
