"""Device backends: how a DeviceHandle comes to life. Chosen with --hil-backend."""

from __future__ import annotations

from .base import BACKENDS, Backend, BackendUnavailable, get_backend
from .virtual import VirtualBackend

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "VirtualBackend", "get_backend"]
