"""The backend interface: what every device backend provides (registered in registry.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ...pki import Credentials
from ..device import DeviceHandle
from ..loop import LoopThread
from .registry import BackendUnavailable, register

__all__ = ["Backend", "BackendUnavailable", "register"]


class Backend(ABC):
    name: str

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        self.loop = loop
        self.workdir = workdir

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        return None

    @abstractmethod
    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> DeviceHandle:
        """A powered-off device that will connect to the gateway at `endpoint`."""

    def close(self) -> None:
        """Release what the backend holds beside its devices (each device closes itself).

        The default closes the TCP bridge of a firmware backend (attribute `bridge`), if it
        has one and the loop still runs; safe to call twice."""
        bridge = getattr(self, "bridge", None)
        if bridge is not None and self.loop.alive:
            self.loop.run(bridge.close())
