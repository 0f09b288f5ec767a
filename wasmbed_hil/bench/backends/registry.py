"""The one list of device backends: names mapped to the classes that implement them.

Listing names imports nothing: a backend's module (and what it needs: wasmtime, emulators'
drivers) is imported the first time the backend is asked for. Every other place that needs
backend names (command-line choices, the pytest option, the Robot library, the device
manager) asks here. A backend of another package registers through the entry-point group
`wasmbed_hil.backends` (`name = "package.module:Class"`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backend

ENTRY_POINT_GROUP = "wasmbed_hil.backends"

# name -> "module:Class"; a new backend of this package is one line here.
BUILTIN: dict[str, str] = {
    "virtual": "wasmbed_hil.bench.backends.virtual:VirtualBackend",
    "qemu": "wasmbed_hil.bench.backends.qemu:QemuBackend",
    "renode": "wasmbed_hil.bench.backends.renode:RenodeBackend",
}

_loaded: dict[str, type[Backend]] = {}


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says why (tests skip with it)."""


def _declared() -> dict[str, str]:
    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    declared.update(BUILTIN)  # ours win: a plugin cannot shadow a built-in backend
    return declared


def backend_names() -> list[str]:
    """Every backend that can be asked for, sorted (nothing is imported)."""
    return sorted(set(_declared()) | set(_loaded))


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make `cls` available under `cls.name`."""
    _loaded[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    """The class of backend `name`, importing its module on first use."""
    if name in _loaded:
        return _loaded[name]
    target = _declared().get(name)
    if target is None:
        raise BackendUnavailable(
            f"unknown backend {name!r}; available: {', '.join(backend_names())}"
        )
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _loaded.setdefault(name, cls)
    return _loaded[name]
