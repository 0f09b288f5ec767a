"""What the control plane asks of a device manager, as protocols (the bench implements them).

Devices whose spec asks for emulation need someone to issue their credentials (the REST API
asks a `Provisioner` when such a Device is created) and to start and stop their machines
(the Device controller asks a `MachineManager`). In a cluster neither exists and the
controllers say so in the Device's `Emulated` condition; on a test bench the device manager
(`wasmbed_hil.bench.devicemanager`) implements both. The product depends only on these
protocols, never on the bench (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Protocol


class EmulationError(RuntimeError):
    """A machine that cannot be started (unknown backend, no credentials, no gateway); the
    message becomes the reason of the Device's `Emulated` condition."""


class DeviceManagerUnreachable(EmulationError):
    """The device manager did not answer (a manager in another process: refused, reset,
    timed out); the Device controller says so and asks again later."""


class StartedMachine(Protocol):
    """What the controller reports of a started machine."""

    @property
    def backend(self) -> str: ...

    @property
    def gateway(self) -> str: ...


class MachineManager(Protocol):
    """Starts and stops the emulated machine of a Device (synchronous, thread-safe)."""

    def start(
        self,
        name: str,
        identity: str,
        backend: str,
        board: str | None = None,
        preferred_gateway: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> StartedMachine:
        """Start (power on) the machine of Device `name`; raises EmulationError."""
        ...

    def stop(self, name: str) -> bool:
        """Power off and discard the machine of `name`; returns whether one was running."""
        ...


class Provisioner(Protocol):
    """Issues credentials for an emulated device (the device manager implements it)."""

    def check_backend(self, backend: str) -> None:
        """Raise ValueError when no backend is called `backend` (the product cannot list
        them: they are the bench's); the REST API answers 422 with the message."""
        ...

    async def provision(self, name: str, backend: str, board: str | None) -> str:
        """Credentials for Device `name`; returns its SubjectPublicKeyInfo DER, base64."""
        ...
