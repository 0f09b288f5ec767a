"""A GDB server on an emulated device: the request (--hil-gdb), the port, how to attach.

pytest's ``--hil-gdb=halted|running`` (and ``--hil-gdb-device NAME``) travel in the
environment (WASMBED_HIL_GDB, WASMBED_HIL_GDB_DEVICE) as the backends' settings do, so every
part of the bench that starts machines (the device fixtures, a control plane's device
manager, ``wasmbed-hil up``) sees the same request.

The port is never guessed: the harness binds a listening TCP socket on 127.0.0.1, port 0
(the kernel chooses), and hands that socket to the emulator (QEMU: ``-chardev
socket,fd=N,server=on`` and ``-gdb chardev:ID``). The socket stays with the machine for its
lifetime, so the port is the same over power cycles and resets. ``halted`` also starts the
CPU stopped at its reset vector (QEMU ``-S``) on every boot until a debugger says
``continue`` (or detaches).
"""

from __future__ import annotations

import fnmatch
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GDB_DEVICE_ENV", "GDB_ENV", "GDB_MODES", "GdbListener", "GdbRequest", "attach_hint"]

GDB_ENV = "WASMBED_HIL_GDB"
GDB_DEVICE_ENV = "WASMBED_HIL_GDB_DEVICE"
GDB_MODES = ("halted", "running")
_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]-]{1,128}")


@dataclass(frozen=True)
class GdbRequest:
    """Which devices get a GDB server, and whether their CPU starts halted."""

    mode: str  # "halted" or "running"
    device: str | None = None  # a device name or a glob (device-*); None: every device

    def __post_init__(self) -> None:
        if self.mode not in GDB_MODES:
            raise ValueError(f"gdb mode must be one of {', '.join(GDB_MODES)}, not {self.mode!r}")
        if self.device is not None and not _PATTERN.fullmatch(self.device):
            raise ValueError(
                f"gdb device filter {self.device!r}: a device name or a glob of letters, "
                "digits, '-', '_', '.', '*', '?' and [] (at most 128 characters)"
            )

    @property
    def halted(self) -> bool:
        return self.mode == "halted"

    def applies_to(self, name: str) -> bool:
        return self.device is None or fnmatch.fnmatchcase(name, self.device)

    @classmethod
    def from_env(cls) -> GdbRequest | None:
        """The request the environment carries (None: no GDB server); ValueError when it is
        malformed, naming the variable."""
        mode = os.environ.get(GDB_ENV, "").strip()
        if not mode:
            return None
        device = os.environ.get(GDB_DEVICE_ENV, "").strip() or None
        try:
            return cls(mode, device)
        except ValueError as exc:
            raise ValueError(f"${GDB_ENV}/${GDB_DEVICE_ENV}: {exc}") from None

    def export(self) -> None:
        """Put the request into the environment, for every part of the bench."""
        os.environ[GDB_ENV] = self.mode
        if self.device is None:
            os.environ.pop(GDB_DEVICE_ENV, None)
        else:
            os.environ[GDB_DEVICE_ENV] = self.device

    @classmethod
    def for_device(cls, name: str) -> GdbRequest | None:
        """The environment's request if it applies to device `name`, else None."""
        request = cls.from_env()
        return request if request is not None and request.applies_to(name) else None


class GdbListener:
    """A listening TCP socket on 127.0.0.1 with a port the kernel chose, to hand over to an
    emulator as its GDB server's socket (it keeps listening while the emulator is off)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, 0))
            self._sock.listen(1)
        except OSError:
            self._sock.close()
            raise
        self.host = host
        self.port: int = self._sock.getsockname()[1]

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


def attach_hint(elf: Path | str, port: int, name: str = "", halted: bool = False) -> str:
    """How to attach: the gdb-multiarch command line for `elf` on 127.0.0.1:`port`."""
    who = f"{name}: " if name else ""
    state = (" The CPU is halted at its reset vector: 'continue' (or detach) lets it boot."
             if halted else "")
    return (f"{who}GDB server on 127.0.0.1:{port}. Attach with: gdb-multiarch {elf} "
            f"-ex 'target remote 127.0.0.1:{port}'.{state}")
