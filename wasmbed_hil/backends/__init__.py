"""Device backends: how a DeviceHandle comes to life. Chosen with --hil-backend."""

from __future__ import annotations

from .base import BACKENDS, Backend, BackendUnavailable, get_backend
from .qemu import QemuBackend
from .renode import RenodeBackend
from .virtual import VirtualBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "QemuBackend",
    "RenodeBackend",
    "VirtualBackend",
    "get_backend",
]
