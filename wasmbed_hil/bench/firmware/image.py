"""A user's own firmware image (--hil-firmware, the hil_firmware marker, firmware=): checked
before any emulator is started, so a wrong path or a wrong file says so at once.

The harness runs ELF images only (QEMU's -kernel and Renode's LoadELF both take one): a
32-bit little-endian ELF for ARM (e_machine EM_ARM), an executable. Whether it meets the
firmware contract is what the conformance suite (wasmbed_hil.conformance) finds out.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["FIRMWARE_ENV", "FirmwareImageError", "check_image"]

#: The environment variable that carries --hil-firmware to every part of the bench.
FIRMWARE_ENV = "WASMBED_HIL_FIRMWARE"

EM_ARM = 40
ET_EXEC = 2
_ELF_CLASSES = {1: "32-bit", 2: "64-bit"}


class FirmwareImageError(ValueError):
    """The given firmware image cannot be run: missing, unreadable or not an ARM ELF."""


def check_image(path: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute Path once it is known to be a 32-bit little-endian ARM ELF
    executable; FirmwareImageError says what it is instead."""
    image = Path(path).expanduser().resolve()
    if not image.exists():
        raise FirmwareImageError(f"firmware image {image}: no such file")
    if not image.is_file():
        raise FirmwareImageError(f"firmware image {image}: not a file")
    try:
        with image.open("rb") as f:
            header = f.read(20)
    except OSError as exc:
        raise FirmwareImageError(f"firmware image {image}: cannot read it: {exc}") from exc
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise FirmwareImageError(
            f"firmware image {image}: not an ELF file (a raw .bin or .hex image cannot be "
            "run: give the ELF the linker wrote)")
    elf_class, data = header[4], header[5]
    if elf_class != 1:
        raise FirmwareImageError(f"firmware image {image}: a "
                                 f"{_ELF_CLASSES.get(elf_class, 'unknown-class')} ELF; an "
                                 "ARM Cortex-M image is a 32-bit ELF")
    if data != 1:
        raise FirmwareImageError(f"firmware image {image}: a big-endian ELF; the boards are "
                                 "little-endian")
    e_type, e_machine = struct.unpack_from("<HH", header, 16)
    if e_machine != EM_ARM:
        raise FirmwareImageError(f"firmware image {image}: an ELF for machine {e_machine}, "
                                 f"not for ARM (EM_ARM = {EM_ARM})")
    if e_type != ET_EXEC:
        raise FirmwareImageError(f"firmware image {image}: not an executable ELF (type "
                                 f"{e_type}: an object file or a shared library?)")
    return image
