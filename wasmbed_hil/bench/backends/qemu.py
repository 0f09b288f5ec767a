"""The qemu backend: the firmware image on an emulated MPS2-AN385 (Cortex-M3) per device.

Each device is one qemu-system-arm process running firmware/build/mps2-an385/wasmbed.elf with
its identity in a per-device blob, its UART1 wired through the bridge to the gateway, and its
UART0 console read into the handle. Lifecycle states come from the console lines the
firmware prints (wasmbed_hil/bench/console.py), the same ones the virtual device prints.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..console import parse_line
from ..device import DeviceHandle
from ..link.bridge import Bridge, Link
from ..loop import LoopThread
from ..machines.qemu import QemuMachine, qemu_command
from ..virtual.device import Faults, Lifecycle
from .base import Backend, register

# device_factory(**options) the firmware accepts, carried in the blob's configuration entry.
DEVICE_OPTIONS = {"max_frame_size", "max_module_size", "window", "max_apps"}
# Reconnect timing like the virtual device's (the firmware's own defaults suit a fleet in the
# field: 30 s after a refusal), so scenarios need not wait half a minute.
HARNESS_TIMING = {"backoff_initial_ms": 50, "backoff_max_ms": 1000, "reject_backoff_ms": 1000}


class QemuFaults(Faults):
    """On qemu, faults are injected through the console (silence) or not at all yet."""

    def __setattr__(self, name: str, value: object) -> None:
        supported = {"silent"}
        if name not in supported and value not in (None, False):
            raise NotImplementedError(f"fault {name!r} is not available on the qemu backend yet")
        super().__setattr__(name, value)


class QemuDeviceHandle(DeviceHandle):
    backend = "qemu"

    def __init__(
        self,
        backend: QemuBackend,
        name: str,
        credentials: Credentials,
        link: Link,
        machine: QemuMachine,
    ) -> None:
        super().__init__(name, credentials)
        self._loop = backend.loop
        self.link = link
        self.machine = machine
        self.events = EventLog()
        self._lifecycle = Lifecycle.OFF
        self._device_id: str | None = None
        self._last_reject: tuple[ErrorCode, str] | None = None
        self._faults = QemuFaults()
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

    def power_on(self) -> None:
        self._loop.run(self.machine.start())

    def power_off(self) -> None:
        if self._loop.alive:
            self._loop.run(self.machine.power_cut())
            self._loop.call(self._set, Lifecycle.OFF)

    def reset(self) -> None:
        """System reset through QMP: same emulator process, the firmware boots again (a
        following wait_online() waits for the new session)."""
        self._loop.run(self.machine.reset())
        self._loop.call(self._set, Lifecycle.CONNECTING)

    def close(self) -> None:
        if self._loop.alive:
            self._loop.run(self.machine.close())
            self._loop.run(self.link.close())
            self._loop.call(self._set, Lifecycle.OFF)

    def set_silent(self, silent: bool) -> None:
        self._faults.silent = silent
        self._loop.run(self.machine.write_console(f"silent {int(silent)}\n"))

    def forget_enrollment(self) -> None:
        # The device id lives in RAM on this board: a power cycle forgets it; a running
        # device is told through its console.
        if self.machine.running:
            self._loop.run(self.machine.write_console("forget\n"))

    @property
    def lifecycle_events(self) -> EventLog:
        return self.events

    @property
    def loop(self) -> LoopThread:
        return self._loop

    def extra_seen(self) -> str:
        if self.machine.running:
            return ""
        return f", emulator not running ({self.machine.exit_report() or 'no stderr'})"

    def stats(self) -> dict[str, Any]:
        s = self.link.stats
        return {
            "connections": s.upstream_connections,
            "boots": self.machine.boots,
            "bytes_up": s.bytes_up,
            "bytes_down": s.bytes_down,
            "online_count": self.online_count,
        }


@register
class QemuBackend(Backend):
    name = "qemu"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = [
            t for t in ("qemu-system-arm", "arm-none-eabi-gcc", "make") if shutil.which(t) is None
        ]
        if missing:
            return (
                f"{', '.join(missing)} not installed (Debian: qemu-system-arm gcc-arm-none-eabi "
                "picolibc-arm-none-eabi)"
            )
        return None

    def __init__(self, loop: Any, workdir: Path) -> None:
        super().__init__(loop, workdir)
        from ..firmware.build import ensure_image

        self.elf = ensure_image()
        self.bridge = Bridge()

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> QemuDeviceHandle:
        from ..firmware.blob import build_blob

        unknown = set(options) - DEVICE_OPTIONS
        if unknown:
            raise TypeError(
                f"options not supported on the qemu backend: {sorted(unknown)} "
                f"(supported: {sorted(DEVICE_OPTIONS)})"
            )
        devdir = self.workdir / "machines" / name
        devdir.mkdir(parents=True, exist_ok=True)
        blob = devdir / "blob.bin"
        config = {**HARNESS_TIMING, **options}
        blob.write_bytes(
            build_blob(credentials, name, "localhost", seed=os.urandom(32), config=config)
        )
        link = self.loop.run(self.bridge.open_link(name, endpoint))
        argv = qemu_command(self.elf, blob, link.port)
        machine = QemuMachine(name, argv, devdir)
        return QemuDeviceHandle(self, name, credentials, link, machine)
