"""The qemu backend: a firmware image on an emulated board (default MPS2-AN385, Cortex-M3)
per device.

Each device is one qemu-system-arm process (bench.machines.qemu.QemuMachine) running the
image (ours, firmware/build/mps2-an385/wasmbed.elf, or --hil-firmware / firmware=) on the
board of --hil-board (bench.boards: machine, CPU, blob address, UART roles), with its
identity in a per-device blob, its link UART wired through the bridge to the gateway and its
console UART read into the handle, the firmware backends' FirmwareDeviceHandle
(bench.backends.firmware).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..machines.gdb import GdbRequest
from ..machines.qemu import QemuMachine, qemu_command
from ..seams import Link
from .base import register
from .firmware import FIRMWARE, FirmwareBackend


@register
class QemuBackend(FirmwareBackend):
    name = "qemu"
    emulator = "QEMU"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        needed = ["qemu-system-arm"]
        if not FIRMWARE.value():  # our image is built: the toolchain is needed too
            needed += ["arm-none-eabi-gcc", "make"]
        missing = [t for t in needed if shutil.which(t) is None]
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
        argv = qemu_command(self.image_of(name), blob, link.port, board=self.board_spec)
        return QemuMachine(name, argv, devdir, gdb=GdbRequest.for_device(name))
