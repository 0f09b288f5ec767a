"""The one list of device backends: names mapped to the classes that implement them.

Listing names imports nothing: a backend's module (and what it needs: wasmtime, emulators'
drivers) is imported the first time the backend is asked for. Every other place that needs
backend names asks here: command-line choices, the pytest option, the Robot library, and
the device manager, which resolves a Device's `spec.emulation.backend` here (the resource
itself only checks that it is a name). A backend of another package registers through the
entry-point group `wasmbed_hil.backends` (`name = "package.module:Class"`).
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
    "renode-test": "wasmbed_hil.bench.backends.renode_test:RenodeTestBackend",
    "board": "wasmbed_hil.bench.backends.board:BoardBackend",
}
# The backend used when none is asked for (pytest, Robot, `wasmbed-hil up`, the platform).
DEFAULT_BACKEND = "virtual"

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


def backend_classes() -> list[type[Backend]]:
    """Every backend's class, importing each module (for the settings they declare); a
    plug-in backend that cannot be imported is left out (asking for it by name says why)."""
    classes = []
    for name in backend_names():
        try:
            classes.append(get_backend(name))
        except Exception as exc:  # a broken plug-in must not stop the others' options
            import warnings

            warnings.warn(f"wasmbed-hil: backend {name!r} cannot be imported: {exc!r}",
                          stacklevel=2)
    return classes


def require_known(name: str) -> None:
    """Raise BackendUnavailable unless a backend is called `name` (nothing is imported)."""
    if name not in _loaded and name not in _declared():
        raise BackendUnavailable(
            f"unknown backend {name!r}; available: {', '.join(backend_names())}"
        )


def get_backend(name: str) -> type[Backend]:
    """The class of backend `name`, importing its module on first use."""
    if name in _loaded:
        return _loaded[name]
    require_known(name)
    target = _declared()[name]
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _loaded.setdefault(name, cls)
    return _loaded[name]
