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
