"""Waits on a device's life as its gateway and the device itself see it; all end on events."""

from __future__ import annotations

from robot.api.deco import keyword

from ...gateway import DeviceStatus
from ...protocol import DevicePhase
from .. import arguments
from ..arguments import Deadline, Timeout
from .component import LibraryComponent


class WaitKeywords(LibraryComponent):
    def _wait_gateway(
        self, device: str | None, phase: DevicePhase | None, timeout: Timeout
    ) -> DeviceStatus:
        """Wait (on gateway events) until the device is enrolled at its gateway and, if
        `phase` is given, in that phase."""
        dev = self.ctx.device(device)
        seconds = self.seconds(timeout)
        with self.ctx.evidence(dev.handle):
            if phase is None:
                return dev.gateway.wait_enrolled(dev.handle, seconds)
            return dev.gateway.wait_phase(dev.handle, phase, seconds)

    @keyword
    def wait_until_enrolled(self, device: str | None = None, timeout: Timeout = None) -> str:
        """Waits until the device's gateway has enrolled it; returns its device id."""
        return self._wait_gateway(device, None, timeout).device_id

    @keyword
    def wait_until_connected(self, device: str | None = None, timeout: Timeout = None) -> str:
        """Waits until the device has a session (it was welcomed) and its gateway sees it
        Connected; returns its device id. Both within one ``timeout``.

        A device that is refused or never boots fails this wait with its state, its last
        refusal and its console tail.
        """
        dev = self.ctx.device(device)
        deadline = Deadline(self.seconds(timeout))
        dev.handle.wait_online(deadline.seconds)
        return self._wait_gateway(dev.name, DevicePhase.CONNECTED, deadline.left()).device_id

    @keyword
    def wait_until_unreachable(self, device: str | None = None, timeout: Timeout = None) -> None:
        """Waits until the gateway marks the device Unreachable (no heartbeat within its
        heartbeat timeout while the connection stays open)."""
        self._wait_gateway(device, DevicePhase.UNREACHABLE, timeout)

    @keyword
    def wait_until_disconnected(self, device: str | None = None, timeout: Timeout = None) -> None:
        """Waits until the gateway marks the device Disconnected (its connection ended)."""
        self._wait_gateway(device, DevicePhase.DISCONNECTED, timeout)

    @keyword
    def wait_until_rejected(
        self, device: str | None = None, code: str | None = None, timeout: Timeout = None
    ) -> tuple[str, str]:
        """Waits until the device has been refused by its gateway; returns the error code's
        name and the reason. With ``code`` (e.g. ``PAIRING_DISABLED``, ``REVOKED``) it fails
        when refused for another reason.

        | ${code}    ${reason}=    Wait Until Rejected    code=PAIRING_DISABLED
        """
        dev = self.ctx.device(device)
        got, reason = dev.handle.wait_rejected(self.seconds(timeout))
        if code is not None and got is not arguments.error_code(code):
            raise AssertionError(
                f"{dev.name} was refused with {got.name} ({reason}), "
                f"expected {arguments.error_code(code).name}"
            )
        return got.name, reason

    @keyword
    def wait_for_heartbeats(
        self, count: int = 1, device: str | None = None, timeout: Timeout = None
    ) -> None:
        """Waits until the gateway has acknowledged ``count`` more heartbeats from the device."""
        dev = self.ctx.device(device)
        with self.ctx.evidence(dev.handle):
            dev.gateway.wait_heartbeats(dev.handle, int(count), self.seconds(timeout))
