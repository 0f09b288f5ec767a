"""Device backends: how a DeviceHandle comes to life. Chosen with --hil-backend."""

from __future__ import annotations

from .base import BACKENDS, Backend, BackendUnavailable, get_backend
from .qemu import QemuBackend
from .virtual import VirtualBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "QemuBackend",
    "VirtualBackend",
    "get_backend",
]
