"""The device seams: the small vocabulary every device backend is written against.

Two kinds of seam, in the spirit of labgrid's protocols (`PowerProtocol`, `ConsoleProtocol`):

- What a scenario drives, synchronously, from the test thread: `Power`, `Reset`, `Console`
  and `Faults`. A `DeviceHandle` (bench.device) offers all four, whatever the backend.
- What a console-driven firmware handle is built from, asynchronously, on the harness loop:
  a `Link` (the byte path between the device's UART and its gateway; bench.link.bridge's
  `Link` is one) and a Machine (bench.machines.base).

`Lifecycle` is the shared state vocabulary: the virtual device sets it directly, firmware
handles derive it from console lines (bench.console).

Faults are actions, not fields: `handle.faults.silence(True)`, `.enroll_with(creds)`,
`.corrupt_proof()`, `.drop_link_after_chunks(5)`, `.cut_link()`, `.impair(Latency(0.1))`
(which is `device.link.impair`: link impairments act on the device's `Link`, which every
backend has). A backend implements the
ones it can by overriding them; the others raise `FaultUnsupported`, naming the backend and
the action, and `faults.supported` lists what is there.

Nothing here knows any backend, machine or the virtual device (.importlinter keeps it so).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractContextManager

    from ..pki import Credentials
    from .link.pump import Impairment, Impairments


class Lifecycle(Enum):
    """Where a device is, from power to running applications (labgrid-style strategy states)."""

    OFF = "off"
    CONNECTING = "connecting"  # TCP + TLS to the gateway
    ENROLLING = "enrolling"  # Hello sent / proving its key
    ONLINE = "online"  # Welcome received: session established
    REJECTED = "rejected"  # enrollment refused; retrying later
    BACKOFF = "backoff"  # disconnected, waiting before reconnecting


# ----------------------------------------------------------------- what a scenario drives


@runtime_checkable
class Power(Protocol):
    def power_on(self) -> None:
        """Power on: the device boots and connects to its gateway (no wait)."""

    def power_off(self) -> None:
        """Cut power now: the connection drops without goodbye, persistent storage is kept."""

    def reboot(self) -> None:
        """Cut power, then power on again."""


@runtime_checkable
class Reset(Protocol):
    def reset(self) -> None:
        """A reset without a power cut (the CPU restarts; on boards RAM may survive)."""


@runtime_checkable
class Console(Protocol):
    @property
    def console(self) -> Sequence[str]:
        """The device's console, oldest line first (UART0 on emulated boards); a handle's
        is a bench.consolelog.DeviceConsole, which adds expect() and write_line()."""

    def write_line(self, line: str) -> None:
        """Type one line into the device's console input (the firmware's test commands)."""


class FaultUnsupported(NotImplementedError):
    """The device's backend cannot inject this fault (a scenario that needs it should be
    marked backend_specific, or check `faults.supported` first)."""

    def __init__(self, backend: str, action: str, supported: frozenset[str]) -> None:
        offered = ", ".join(sorted(supported)) or "none"
        super().__init__(
            f"fault {action!r} is not available on the {backend} backend (it offers: {offered})"
        )
        self.backend = backend
        self.action = action


class Faults:
    """Misbehaviour to inject, as actions. Every action raises FaultUnsupported here; a
    backend overrides the ones it implements, which makes them `supported`."""

    ACTIONS = ("silence", "enroll_with", "corrupt_proof", "drop_link_after_chunks", "cut_link",
               "impair")

    def __init__(self, backend: str) -> None:
        self.backend = backend

    @property
    def supported(self) -> frozenset[str]:
        """The actions this backend implements."""
        return frozenset(a for a in self.ACTIONS
                         if getattr(type(self), a) is not getattr(Faults, a))

    def _unsupported(self, action: str) -> FaultUnsupported:
        return FaultUnsupported(self.backend, action, self.supported)

    def silence(self, silent: bool = True) -> None:
        """Stop (or resume) sending heartbeats; the connection stays up."""
        raise self._unsupported("silence")

    def enroll_with(self, credentials: Credentials | None) -> None:
        """Prove enrollment with another key than the TLS one (None: its own again)."""
        raise self._unsupported("enroll_with")

    def corrupt_proof(self, corrupt: bool = True) -> None:
        """Send an enrollment signature that does not verify."""
        raise self._unsupported("corrupt_proof")

    def drop_link_after_chunks(self, chunks: int | None) -> None:
        """Close the connection once, when the device has received `chunks` deployment
        chunks in all (None: not at all)."""
        raise self._unsupported("drop_link_after_chunks")

    def cut_link(self) -> None:
        """Drop the connection to the gateway now; the device sees its session die and
        reconnects as it would after any outage."""
        raise self._unsupported("cut_link")

    def impair(self, impairment: Impairment) -> AbstractContextManager[Impairment]:
        """Apply a link impairment (bench.link.impairments) to the device's byte path for
        the `with` block: `with device.faults.impair(Partition()): ...`. The same as
        ``device.link.impair(...)`` (bench.linkhandle), which it calls."""
        raise self._unsupported("impair")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend}: {', '.join(sorted(self.supported))}>"


# ------------------------------------------------------ what a firmware handle is built of


class LinkStats(Protocol):
    """The counters a link keeps (bench.link.bridge.LinkStats has these and more)."""

    bytes_up: int  # device -> gateway
    bytes_down: int  # gateway -> device
    upstream_connections: int  # connections opened to the gateway


class Link(Protocol):
    """A device's byte path to its gateway: the device (its UART, or a virtual device's
    TCP client) dials `port`, the link carries the bytes (the TLS session runs end to end)
    and can be cut. bench.link.bridge's Link and bench.link.faultproxy's FaultProxy are
    ones; bench.linkhandle's LinkHandle drives any of them from a test."""

    @property
    def port(self) -> int: ...

    @property
    def stats(self) -> LinkStats: ...

    @property
    def impairments(self) -> Impairments:
        """What is in force on the link: every chunk each way passes through them."""

    async def drop_upstream(self) -> None:
        """Close the gateway side now (the device sees its TLS session die)."""

    async def close(self) -> None: ...
