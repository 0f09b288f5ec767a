"""The qemu backend: the firmware image on an emulated MPS2-AN385 (Cortex-M3) per device.

Each device is one qemu-system-arm process (bench.machines.qemu.QemuMachine) running
firmware/build/mps2-an385/wasmbed.elf with its identity in a per-device blob, its UART1
wired through the bridge to the gateway and its UART0 console read into the handle, the
firmware backends' FirmwareDeviceHandle (bench.backends.firmware).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..machines.gdb import GdbRequest
from ..machines.qemu import QemuMachine, qemu_command
from ..seams import Link
from .base import register
from .firmware import FirmwareBackend


@register
class QemuBackend(FirmwareBackend):
    name = "qemu"
    board = "mps2-an385 (Cortex-M3, QEMU)"

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

    @classmethod
    def environment(cls) -> dict[str, str]:
        try:
            out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True,
                                 text=True, timeout=10)
            version = out.stdout.splitlines()[0] if out.returncode == 0 else "not installed"
        except (OSError, subprocess.TimeoutExpired, IndexError):
            version = "not installed"
        return {"qemu": version}

    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> QemuMachine:
        # --hil-gdb (WASMBED_HIL_GDB): a GDB server when the request names this device.
        return QemuMachine(name, qemu_command(self.elf, blob, link.port), devdir,
                           gdb=GdbRequest.for_device(name))
