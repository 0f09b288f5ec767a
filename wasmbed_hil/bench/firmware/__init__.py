"""The bare-metal firmware image: per-device blob and build helpers (the QEMU command line
that runs it is wasmbed_hil.bench.machines.qemu.qemu_command)."""

from __future__ import annotations

from .blob import BLOB_ADDRESS, BLOB_MAX_SIZE, BlobError, build_blob, parse_blob
from .build import FirmwareBuildError, ensure_image, footprint

__all__ = [
    "BLOB_ADDRESS",
    "BLOB_MAX_SIZE",
    "BlobError",
    "FirmwareBuildError",
    "build_blob",
    "ensure_image",
    "footprint",
    "parse_blob",
]
