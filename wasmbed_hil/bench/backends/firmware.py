"""What every firmware backend shares: the console-driven device handle and the backend base.

A firmware device is the real firmware image on a Machine (bench.machines.base: QEMU,
Renode, later a board), its identity in a per-device blob, its UART1 wired through a Link
(bench.seams.Link; the bridge's) to the gateway and its UART0 console read into the handle.
Lifecycle states come from the console lines the firmware prints (bench.console), the same
ones the virtual device prints, so the handle needs nothing of the machine beyond the
Machine protocol: one handle for every firmware backend.

A firmware backend is a FirmwareBackend with a `make_machine` (and its own availability
check and board label); option checks, the blob and the link live here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..console import parse_line
from ..device import DeviceHandle, Faults, Lifecycle
from ..errors import InfrastructureError
from ..link.bridge import Bridge
from ..link.pump import Impairment
from ..linkhandle import LinkHandle
from ..loop import LoopThread
from ..machines.base import Machine
from ..points import DeviceAction
from ..seams import Link
from .base import Backend

# device_factory(**options) the firmware accepts, carried in the blob's configuration entry.
DEVICE_OPTIONS = {"max_frame_size", "max_module_size", "window", "max_apps"}
# Reconnect timing like the virtual device's (the firmware's own defaults suit a fleet in the
# field: 30 s after a refusal), so scenarios need not wait half a minute.
HARNESS_TIMING = {"backoff_initial_ms": 50, "backoff_max_ms": 1000, "reject_backoff_ms": 1000,
                  "setup_timeout_ms": 5000}
# What building the image needs (an emulator is not needed to build it).


class FirmwareFaults(Faults):
    """Faults a firmware device shows on command: silence through its console, a cut link
    through the link. The others need hooks in the firmware that it does not have."""

    def __init__(self, handle: FirmwareDeviceHandle) -> None:
        super().__init__(handle.backend)
        self._handle = handle

    def silence(self, silent: bool = True) -> None:
        self._handle.write_line(f"silent {int(silent)}")

    def cut_link(self) -> None:
        self._handle.loop.run(self._handle.on_loop("cut_link"))

    def impair(self, impairment: Impairment) -> contextlib.AbstractContextManager[Impairment]:
        return self._handle.link.impair(impairment)  # one path: the device's LinkHandle


class FirmwareDeviceHandle(DeviceHandle):
    """A DeviceHandle over a Machine and a Link: power, reset and console go to the machine,
    the lifecycle follows the console, byte counters come from the link."""

    def __init__(
        self,
        loop: LoopThread,
        name: str,
        credentials: Credentials,
        machine: Machine,
        link: Link,
        *,
        backend: str,
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`release()` closes the link for good when the device is closed (default:
        `link.close`; a backend that keeps its links by name also forgets this one)."""
        super().__init__(name, credentials)
        self.backend = backend
        self._loop = loop
        self.machine = machine
        self._link = link
        self._link_handle = LinkHandle(loop, link, name)
        self._release = release or link.close
        self.events = EventLog()
        self._lifecycle = Lifecycle.OFF
        self._device_id: str | None = None
        self._last_reject: tuple[ErrorCode, str] | None = None
        self._faults = FirmwareFaults(self)
        self.online_count = 0
        machine.on_line = self._on_line

    # Console lines arrive on the loop thread.
    def _on_line(self, line: str) -> None:
        event = parse_line(line)
        if event is None:
            return
        if event.kind == "online":
            self._device_id = event.device_id
            self._last_reject = None
            self.online_count += 1
            self._set(Lifecycle.ONLINE)
        elif event.kind == "rejected":
            assert event.code is not None
            self._last_reject = (event.code, event.reason)
            self._set(Lifecycle.REJECTED)
        elif event.kind == "down" and self._lifecycle is not Lifecycle.REJECTED:
            self._set(Lifecycle.BACKOFF)
        elif event.kind == "connecting" and self._lifecycle is not Lifecycle.REJECTED:
            self._set(Lifecycle.CONNECTING)

    def _set(self, state: Lifecycle) -> None:
        self._lifecycle = state
        self.events.emit("lifecycle", None, state=state.value)

    @property
    def device_id(self) -> str | None:
        return self._device_id

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle

    @property
    def console(self) -> list[str]:
        return list(self.machine.console)

    @property
    def last_reject(self) -> tuple[ErrorCode, str] | None:
        return self._last_reject

    @property
    def faults(self) -> Faults:
        return self._faults

    async def on_loop(self, action: DeviceAction) -> None:
        if action == "power_on":
            await self.machine.start()
        elif action == "power_off":
            await self.machine.power_cut()
            self._set(Lifecycle.OFF)
        elif action == "reset":
            # The machine's reset (QMP system_reset, Renode's machine Reset...): the same
            # machine, the firmware boots again.
            await self.machine.reset()
            self._set(Lifecycle.CONNECTING)
        elif action == "reboot":
            await self.on_loop("power_off")
            await self.on_loop("power_on")
        elif action == "cut_link":
            await self._link.drop_upstream()
        else:
            raise ValueError(f"unknown device action {action!r}")

    @property
    def powered(self) -> bool:
        return self.machine.running

    def power_on(self) -> None:
        self._loop.run(self.on_loop("power_on"))

    def power_off(self) -> None:
        if self._loop.alive:
            self._loop.run(self.on_loop("power_off"))

    def reset(self) -> None:
        """The machine's reset: the firmware boots again (a following wait_online() waits
        for the new session)."""
        self._loop.run(self.on_loop("reset"))

    def close(self) -> None:
        if self._loop.alive:
            self._loop.run(self.machine.close())
            self._loop.run(self._release())
            self._loop.call(self._set, Lifecycle.OFF)

    def write_line(self, line: str) -> None:
        self._loop.run(self.machine.write_console(line + "\n"))

    def forget_enrollment(self) -> None:
        # The device id lives in RAM on these boards: a power cycle forgets it; a running
        # device is told through its console.
        if self.machine.running:
            self.write_line("forget")

    @property
    def lifecycle_events(self) -> EventLog:
        return self.events

    @property
    def loop(self) -> LoopThread:
        return self._loop

    def extra_seen(self) -> str:
        if self.machine.running:
            return ""
        report = self.machine.exit_report() or "nothing reported"
        return f", {self.machine.label} not running ({report})"

    def stats(self) -> dict[str, Any]:
        s = self._link.stats
        return {
            "connections": s.upstream_connections,
            **self.machine.stats(),
            "bytes_up": s.bytes_up,
            "bytes_down": s.bytes_down,
            "online_count": self.online_count,
        }


_DIGESTS: dict[Path, str] = {}


def firmware_digest(path: Path | None = None) -> str | None:
    """A short sha256 of the built firmware image (None when there is none), for reports."""
    from ..firmware.build import image_path

    if path is None:
        try:
            path = image_path()
        except (ValueError, InfrastructureError):  # no such board, or no sources at all
            return None
    if path not in _DIGESTS:
        try:
            data = path.read_bytes()
        except OSError:
            return None  # not built (yet): asked again later
        _DIGESTS[path] = f"{path.name} sha256:{hashlib.sha256(data).hexdigest()[:16]}"
    return _DIGESTS[path]


def firmware_image() -> Path:
    """The firmware image, built if the toolchain is here (no emulator needed for that),
    else one built earlier."""
    from ..firmware.build import FirmwareBuildError, ensure_image, image_path, missing_tools

    missing = missing_tools()
    if not missing:
        return ensure_image()
    elf = image_path()
    if elf.is_file():
        return elf
    raise FirmwareBuildError(
        f"no firmware image at {elf} and {', '.join(missing)} not installed to build it"
    )


def image_unavailable_reason() -> str | None:
    """Why no firmware image can be had here (neither built nor buildable), or None."""
    from ..firmware.build import image_path, missing_tools

    missing = missing_tools()
    if missing and not image_path().is_file():
        return (
            f"{', '.join(missing)} not installed and no firmware image at "
            f"{image_path()} (Debian: gcc-arm-none-eabi picolibc-arm-none-eabi make)"
        )
    return None


class FirmwareBackend(Backend):
    """A backend that runs the firmware image, one Machine per device.

    Subclasses set `board` (the report's label) and implement `make_machine`; they usually
    also say when they are unavailable. The devices are FirmwareDeviceHandles.
    """

    board: ClassVar[str]

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.elf = self.firmware_image()
        self.bridge = Bridge()

    @classmethod
    def firmware_image(cls) -> Path:
        return firmware_image()

    @classmethod
    def provenance(cls) -> dict[str, str]:
        labels = {"board": cls.board}
        digest = firmware_digest()
        if digest:
            labels["firmware"] = digest
        return labels

    @abstractmethod
    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> Machine:
        """A powered-off machine for device `name`: the image `self.elf`, the device's
        `blob`, its link UART dialling `link.port`; `devdir` is its own directory."""

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> FirmwareDeviceHandle:
        from ..firmware.blob import build_blob

        unknown = set(options) - DEVICE_OPTIONS
        if unknown:
            raise TypeError(
                f"options not supported on the {self.name} backend: {sorted(unknown)} "
                f"(supported: {sorted(DEVICE_OPTIONS)})"
            )
        devdir = (self.workdir / "machines" / name).resolve()
        devdir.mkdir(parents=True, exist_ok=True)
        blob = devdir / "blob.bin"
        config = {**HARNESS_TIMING, **options}
        blob.write_bytes(
            build_blob(credentials, name, "localhost", seed=os.urandom(32), config=config)
        )
        link = self.loop.run(self.open_link(name, endpoint))
        try:
            machine = self.make_machine(name, devdir, blob, link)
        except BaseException:
            self.loop.run(self.close_link(name))
            raise
        # Closing the device frees its name on the bridge: a device of the same name (a
        # Device resource deleted and made again) gets a new link.
        return FirmwareDeviceHandle(self.loop, name, credentials, machine, link,
                                    backend=self.name,
                                    release=functools.partial(self.close_link, name))

    async def open_link(self, name: str, endpoint: tuple[str, int]) -> Link:
        """The link of device `name` to the gateway at `endpoint` (on the loop): a bridge
        listener its machine's UART dials; a backend whose UART the harness opens (a
        board's serial port) overrides it."""
        return await self.bridge.open_link(name, endpoint)

    async def close_link(self, name: str) -> None:
        """Close device `name`'s link (after its machine is closed)."""
        await self.bridge.close_link(name)

    def close(self) -> None:
        if self.loop.alive:
            self.loop.run(self.bridge.close())
