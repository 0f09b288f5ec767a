"""The backend interface: what every device backend provides (registered in registry.py).

A backend owns everything about itself that the rest of the bench needs: its name, whether
it can run here (`unavailable_reason`), its settings (`options`: a command-line flag for
pytest and the environment variable behind it), its provenance labels for the reports
(`provenance`, `environment`), the devices it makes (`create`) and what it holds for them
until `close()`. The pytest plugin, the Robot library, the device manager and the CLI ask
the backend; none of them names one.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ...pki import Credentials
from ..device import DeviceHandle
from ..loop import LoopThread
from .registry import BackendUnavailable, register

__all__ = ["Backend", "BackendOption", "BackendUnavailable", "register"]


@dataclass(frozen=True)
class BackendOption:
    """One setting of a backend. Its value travels in the environment variable `env`, so
    every part of the bench sees the same value (the device manager of a control plane,
    `wasmbed-hil up`, the Robot library); `flag` sets it from pytest's command line."""

    flag: str  # e.g. "--renode-binary"
    env: str  # e.g. "WASMBED_RENODE"
    help: str
    backends: str = ""  # whom it is for, when several backends share it (default: the one)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def value(self) -> str | None:
        return os.environ.get(self.env) or None


class OptionGroup(Protocol):
    """What add_options needs of an option group (pytest's OptionGroup is one)."""

    def addoption(self, *opts: str, **attrs: Any) -> None: ...


class Backend(ABC):
    name: ClassVar[str]
    options: ClassVar[tuple[BackendOption, ...]] = ()
    #: Whether the backend runs firmware images (--hil-firmware, --hil-board apply to it).
    runs_firmware: ClassVar[bool] = False
    #: Seconds within which a device of this backend answers one protocol message even on a
    #: loaded machine, measured, with a wide margin: a scenario that waits out the gateway's
    #: reply timeout on purpose (a message lost by a fault) sets the timeout to this. None:
    #: not established for this backend, the scenario keeps its own (longer) value.
    answers_within_s: ClassVar[float | None] = None

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        self.loop = loop
        self.workdir = workdir

    # -- the backend class: settings, availability, provenance -----------------------------
    @classmethod
    def add_options(cls, group: OptionGroup) -> None:
        """Declare this backend's settings as command-line options of `group`."""
        for option in cls.options:
            group.addoption(
                option.flag, dest=option.dest, default=None,
                help=f"{option.help} (for {option.backends or '--hil-backend=' + cls.name}; "
                f"sets ${option.env})",
            )

    @classmethod
    def apply_options(cls, getoption: Callable[[str], Any]) -> None:
        """Export the settings given on the command line (`getoption(dest)`) to the
        environment, where the backend and every other part of the bench read them."""
        for option in cls.options:
            value = getoption(option.dest)
            if value:
                os.environ[option.env] = str(value)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        return None

    @classmethod
    def run_resources(cls) -> AbstractContextManager[None]:
        """What the backend shares across a whole test run (a lab of stand-in boards),
        entered once by the process that runs the session (under pytest-xdist the
        controller, before the workers start: what it exports to the environment reaches
        them) and left at the session's end. Nothing by default."""
        return contextlib.nullcontext()

    @classmethod
    def provenance(cls) -> dict[str, str]:
        """Labels every test run on this backend carries in its report (board, firmware
        image digest...); the caller adds the backend's name."""
        return {}

    @classmethod
    def image(cls) -> dict[str, str]:
        """The firmware image the devices run (path, board, sha256, size, map: the linker
        map's path), for the report; empty when the backend runs no image (virtual)."""
        return {}

    @classmethod
    def environment(cls) -> dict[str, str]:
        """Facts about the run's machine worth recording once per run (tool versions)."""
        return {}

    # -- an instance: devices --------------------------------------------------------------
    @abstractmethod
    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> DeviceHandle:
        """A powered-off device that will connect to the gateway at `endpoint`."""

    def close(self) -> None:
        """Release what the backend holds for its devices (links, listeners). Devices are
        closed first, by whoever made them; closing twice is harmless."""
        return None
