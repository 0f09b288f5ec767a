"""The backend interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..harness.device import DeviceHandle
from ..harness.loop import LoopThread
from ..pki import Credentials


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine; the message says why (tests skip with it)."""


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


BACKENDS: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}"
        ) from None
