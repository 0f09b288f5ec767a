"""Devices: the backend they run on, creating them, power, heartbeats, their gateway's view."""

from __future__ import annotations

from typing import Any

from robot.api import SkipExecution, logger
from robot.api.deco import keyword
from robot.utils import is_truthy

from ...bench.backends import get_backend
from ...bench.points import Trigger, action_named, named_point
from ...gateway import DeviceStatus
from .. import arguments
from ..arguments import Timeout
from .component import LibraryComponent


class DeviceKeywords(LibraryComponent):
    @keyword
    def require_backend(self, backend: str | None = None) -> str:
        """Skips the calling suite or test when ``backend`` cannot run on this machine.

        Meant for ``Suite Setup``. ``backend`` defaults as in `Create Device`. An unknown
        backend name fails (a typo must not pass as a skip). On ``qemu`` it also builds the
        firmware image now (cached), so a build failure fails the setup, not a test.
        Returns the backend name.

        | Suite Setup    Require Backend
        """
        name = self.ctx.backend_name(backend)
        reason = get_backend(name).unavailable_reason()
        if reason:
            raise SkipExecution(f"backend {name} unavailable here: {reason}")
        self.ctx.backend_for(name)
        logger.info(f"backend {name} available")
        return name

    @keyword
    def create_device(
        self,
        name: str | None = None,
        backend: str | None = None,
        gateway: str | None = None,
        power_on: bool = True,
        key_type: str = "p256",
        **options: Any,
    ) -> str:
        """Creates a device on ``backend`` with a fresh certificate from the fleet CA, wired to
        ``gateway``, and (unless ``power_on=False``) powers it on. It becomes the current
        device. Does not wait: follow with `Wait Until Connected` or `Wait Until Rejected`.

        ``backend`` defaults to the library's ``backend``, else ``${BACKEND}``, else
        ``virtual``. Fails with the reason when the backend cannot run here. ``options`` go
        to the backend (both: ``max_frame_size``, ``max_module_size``, ``window``,
        ``max_apps``; virtual: any VirtualDeviceConfig field). Returns the device's name
        (``device-N`` when not given).

        | Create Device    sensor-1
        | Create Device    small    max_module_size=4096
        """
        name = name or self.ctx.new_device_name()
        backend_name = self.ctx.backend_name(backend)
        dev = self.ctx.add_device(
            name, backend_name, gateway, key_type,
            {k: arguments.coerce(v) for k, v in options.items()},
        )
        host, port = dev.gateway.endpoint
        logger.info(
            f"device {name} on {backend_name} (identity {dev.handle.identity[:12]}) -> gateway "
            f"{dev.gateway_name} at {host}:{port}"
        )
        if is_truthy(power_on):
            dev.handle.power_on()
        return name

    @keyword
    def power_on(self, device: str | None = None) -> None:
        """Powers a device on; it boots and connects to its gateway (no wait)."""
        self.ctx.device(device).handle.power_on()

    @keyword
    def cut_power(self, device: str | None = None) -> None:
        """Cuts a device's power now: its connection drops without goodbye (on qemu the
        emulator is killed and RAM is lost; virtual devices keep their flash)."""
        self.ctx.device(device).handle.power_off()

    @keyword
    def reboot_device(self, device: str | None = None) -> None:
        """Cuts the power and powers the device on again (no wait)."""
        self.ctx.device(device).handle.reboot()

    @keyword
    def do_at_protocol_point(
        self, action: str, point: str, n: int = 1, app_id: str | None = None,
        device: str | None = None,
    ) -> Trigger:
        """Arms a one-shot trigger: ``action`` (power off, power on, reset, reboot, cut link)
        happens to the device the moment its gateway sees ``point`` (docs/faults.md, "Power
        and reset at protocol points"): ``after chunk acked`` (``n``: the n-th ChunkAck),
        ``after start``, ``result in flight``, ``during handshake`` (``n``: the n-th
        handshake); ``app_id`` narrows the first three to one application. Returns the
        trigger, for `Wait For Protocol Point`.

        | ${cut}=    Do At Protocol Point    power off    after chunk acked    3
        | Deploy Module    data:40000    entry=checksum    wait=False
        | Wait For Protocol Point    ${cut}
        """
        dev = self.ctx.device(device)
        return dev.gateway.when(dev.handle, named_point(point, int(n), app_id),
                                action_named(action))

    @keyword
    def wait_for_protocol_point(self, trigger: Trigger, timeout: Timeout = None) -> None:
        """Waits until a trigger of `Do At Protocol Point` has fired and its action is done;
        fails saying how many matching points were seen when it does not in time."""
        trigger.wait(self.seconds(timeout))
        logger.info(f"{trigger.describe()}: done")

    @keyword
    def silence_device(self, device: str | None = None, silent: bool = True) -> None:
        """Makes a device stop sending heartbeats while keeping its connection (``silent=False``
        resumes them; see also `Resume Heartbeats`)."""
        self.ctx.device(device).handle.set_silent(is_truthy(silent))

    @keyword
    def resume_heartbeats(self, device: str | None = None) -> None:
        """Undoes `Silence Device`."""
        self.silence_device(device, silent=False)

    @keyword
    def get_device_id(self, device: str | None = None) -> str:
        """The id the gateway gave the device at enrollment (fails before enrollment)."""
        return self._status(device).device_id

    @keyword
    def get_device_phase(self, device: str | None = None) -> str:
        """The device's phase as its gateway sees it: Enrolling, Enrolled, Connected,
        Disconnected or Unreachable."""
        return self._status(device).phase.value

    @keyword
    def device_phase_should_be(self, phase: str, device: str | None = None) -> None:
        """Fails unless the gateway sees the device in ``phase`` now (no wait), and says the
        phases it went through.

        | Device Phase Should Be    Connected
        """
        dev = self.ctx.device(device)
        expected = arguments.phase(phase)
        status = self._status(dev.name)
        if status.phase is not expected:
            path = " -> ".join(p.value for p in status.history)
            raise AssertionError(
                f"{dev.name} is {status.phase.value}, expected {expected.value}; "
                f"its phases were {path}"
            )

    def _status(self, device: str | None) -> DeviceStatus:
        dev = self.ctx.device(device)
        status = dev.gateway.enrolled(dev.handle)
        if status is None:
            raise AssertionError(f"{dev.name} is not enrolled at gateway {dev.gateway.config.name}")
        return status
