"""The bare-metal firmware image for QEMU mps2-an385: per-device blob and build helpers."""

from __future__ import annotations

from .blob import BLOB_ADDRESS, BLOB_MAX_SIZE, BlobError, build_blob, parse_blob
from .build import FirmwareBuildError, ensure_image, footprint, qemu_command

__all__ = [
    "BLOB_ADDRESS",
    "BLOB_MAX_SIZE",
    "BlobError",
    "FirmwareBuildError",
    "build_blob",
    "ensure_image",
    "footprint",
    "parse_blob",
    "qemu_command",
]
