"""The qemu backend: a firmware image on an emulated board (default MPS2-AN385, Cortex-M3)
per device.

Each device is one qemu-system-arm process (bench.machines.qemu.QemuMachine) running the
image (ours, firmware/build/mps2-an385/wasmbed.elf, or --hil-firmware / firmware=) on the
board of --hil-board (bench.boards: machine, CPU, blob address, UART roles), with its
identity in a per-device blob, its link wired through the bridge to the gateway and its
console UART read into the handle, the firmware backends' FirmwareDeviceHandle
(bench.backends.firmware).

The link (`link_of`): our image on the MPS2-AN385 uses the board's LAN9118 Ethernet
controller (QEMU's ``-nic socket`` to the bridge, frames with credits: bench.link.ethernet),
which moves whole frames where QEMU's UART model moves one byte per main-loop iteration;
any other image keeps the link UART of the firmware contract. ``--qemu-link uart|ethernet``
or a device's ``link=`` choose; impairments act on the byte stream either way, so
``Bandwidth.uart(115200)`` gives a scenario a real serial line's rate on either.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ...pki import Credentials
from ..firmware.blob import LINK_ETHERNET
from ..link.ethernet import open_ethernet
from ..machines.gdb import GdbRequest
from ..machines.qemu import ETHERNET_MODELS, LINKS, QemuMachine, qemu_command
from ..seams import Link
from .base import BackendOption, register
from .firmware import BOARD, FIRMWARE, FirmwareBackend, FirmwareDeviceHandle, given_image

QEMU_LINK_ENV = "WASMBED_QEMU_LINK"
DEFAULT_LINK = "ethernet"
QEMU_LINK = BackendOption(
    "--qemu-link", QEMU_LINK_ENV,
    "the device's link on qemu: ethernet (the board's LAN9118, whole frames; the default for "
    "our firmware) or uart (the link UART, one byte per QEMU main-loop iteration; what a "
    "given --hil-firmware image gets unless this says otherwise)",
)


def link_choice() -> str | None:
    """--qemu-link ($WASMBED_QEMU_LINK) when given, checked; None when not given."""
    value = QEMU_LINK.value()
    if value is not None and value not in LINKS:
        raise ValueError(f"--qemu-link ({QEMU_LINK_ENV}={value!r}): one of {', '.join(LINKS)}")
    return value


@register
class QemuBackend(FirmwareBackend):
    name = "qemu"
    emulator = "QEMU"
    options = (FIRMWARE, BOARD, QEMU_LINK)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._links: dict[str, str] = {}

    def create(self, name: str, credentials: Credentials, endpoint: tuple[str, int],
               **options: Any) -> FirmwareDeviceHandle:
        """``link="uart"|"ethernet"``: this device's link (else link_of's choice); the other
        options are the firmware backends' (``firmware=``, the blob's configuration)."""
        link = options.pop("link", None)
        if link is not None and link not in LINKS:
            raise ValueError(f"link must be one of {', '.join(LINKS)}, not {link!r}")
        if link is None:
            self._links.pop(name, None)
        else:
            self._links[name] = link
        return super().create(name, credentials, endpoint, **options)

    def link_of(self, name: str) -> str:
        """Device `name`'s link: its ``link=``, else --qemu-link when given; else Ethernet
        for our own image on a board whose QEMU machine has a controller our firmware
        drives, the UART otherwise (another image speaks the firmware contract's link UART)."""
        chosen = self._links.get(name) or link_choice()
        if chosen is not None:
            return chosen
        ours = name not in self._images and given_image() is None
        has_eth = self.board_spec.qemu_machine in ETHERNET_MODELS
        return DEFAULT_LINK if ours and has_eth else "uart"

    def link_config(self, name: str) -> dict[str, int]:
        return {"link": LINK_ETHERNET} if self.link_of(name) == "ethernet" else {}

    async def open_link(self, name: str, endpoint: tuple[str, int]) -> Link:
        if self.link_of(name) == "ethernet":
            return await self.bridge.open_link(name, endpoint, framing=open_ethernet)
        return await self.bridge.open_link(name, endpoint)

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
        argv = qemu_command(self.image_of(name), blob, link.port, board=self.board_spec,
                            link=self.link_of(name))
        return QemuMachine(name, argv, devdir, gdb=GdbRequest.for_device(name))
