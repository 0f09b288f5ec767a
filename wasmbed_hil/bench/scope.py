"""What one test (or one suite) started on the bench, and its orderly end.

Both entry points scope the bench the same way: the pytest fixtures per test (`hil_scope`),
the Robot library per test and per suite. A scope hands out backends, gateways and devices
and remembers them; `close()` stops them in the reverse order of their making (so a device
goes before the backend and the gateway it uses), carries on past a failure and returns the
failures, so a test's end is reported rather than lost. The loop thread and the fleet CA
outlive scopes: whoever made them (a session fixture, the Robot library) closes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..gateway import GatewayConfig
from ..pki import Credentials, FleetCA
from .backends import BackendUnavailable, get_backend
from .backends.base import Backend
from .device import DeviceHandle
from .gateway import GatewayHandle
from .loop import LoopThread

__all__ = ["BenchScope", "slug"]


def slug(text: str) -> str:
    """A file-name-safe short form of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:40] or "scope"


class BenchScope:
    def __init__(self, loop: LoopThread, ca: FleetCA, workdir: Path, label: str = "scope") -> None:
        self.loop = loop
        self.ca = ca
        self.workdir = workdir
        self.label = label
        self.backends: dict[str, Backend] = {}
        self.gateways: list[GatewayHandle] = []
        self.devices: list[DeviceHandle] = []
        self.closed = False
        self._closers: list[tuple[str, Callable[[], None]]] = []

    def callback(self, what: str, close: Callable[[], None]) -> None:
        """Call `close()` when the scope closes (`what` names it in a failure)."""
        if self.closed:
            raise RuntimeError(f"the bench scope {self.label!r} is closed")
        self._closers.append((what, close))

    def backend(self, name: str, workdir: Path | None = None) -> Backend:
        """This scope's instance of backend `name` (made on first use, in `workdir`, by
        default a directory of the scope's). BackendUnavailable when it cannot run here or
        the name is unknown, saying why."""
        if name in self.backends:
            return self.backends[name]
        cls = get_backend(name)
        reason = cls.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"backend {name!r} is unavailable here: {reason}")
        backend = cls(self.loop, workdir or self.workdir / f"backend-{name}")
        self.backends[name] = backend
        self.callback(f"backend {name}", lambda: backend.close())
        return backend

    def gateway(
        self, config: GatewayConfig, workdir: Path | None = None, start: bool = True
    ) -> GatewayHandle:
        """A gateway on an OS-chosen port (started unless `start=False`), closed with the
        scope, also when starting it fails."""
        handle = GatewayHandle(
            self.loop, self.ca, workdir or self.workdir / f"gateway-{slug(config.name)}", config
        )
        self.gateways.append(handle)
        self.callback(f"gateway {config.name}", handle.close)
        if start:
            handle.start()
        return handle

    def device(
        self,
        backend: Backend | str,
        name: str,
        gateway: GatewayHandle,
        *,
        credentials: Credentials | None = None,
        key_type: str = "p256",
        **options: Any,
    ) -> DeviceHandle:
        """A powered-off device on `backend` wired to `gateway`, with `credentials` or a
        fresh certificate from the fleet CA; `options` go to the backend."""
        be = self.backend(backend) if isinstance(backend, str) else backend
        creds = credentials or self.ca.issue_device(name, key_type=key_type)  # type: ignore[arg-type]
        handle = be.create(name, creds, gateway.endpoint, **options)
        self.devices.append(handle)
        self.callback(f"device {name}", handle.close)
        return handle

    def close(self) -> list[str]:
        """Stop everything made through this scope, last made first; returns the failures
        ("device d: TimeoutError(...)"), an empty list when all went well. Safe twice."""
        self.closed = True
        errors: list[str] = []
        while self._closers:
            what, close = self._closers.pop()
            try:
                close()
            except Exception as exc:  # keep closing the others
                errors.append(f"{what}: {exc!r}")
        return errors

    def __repr__(self) -> str:
        return (f"<BenchScope {self.label} {len(self.gateways)} gateways "
                f"{len(self.devices)} devices{' closed' if self.closed else ''}>")
