"""Device backends: how a DeviceHandle comes to life. Chosen with --hil-backend.

Import a backend through the registry (`get_backend(name)`): this package imports no backend
module itself, so naming the backends costs nothing.
"""

from __future__ import annotations

from .registry import (
    DEFAULT_BACKEND,
    BackendUnavailable,
    backend_classes,
    backend_names,
    get_backend,
    register,
)

__all__ = [
    "DEFAULT_BACKEND",
    "BackendUnavailable",
    "backend_classes",
    "backend_names",
    "get_backend",
    "register",
]
