"""The renode backend: the qemu backend's firmware image on Renode's MPS2-AN385 per device.

Each device is one Renode machine (bench.machines.renode.machine.RenodeMachine) built from
renode/wasmbed-device.resc: the same firmware/build/mps2-an385/wasmbed.elf and the same
per-device blob as on the qemu backend, UART1 joined to the bridge (the gateway sees the
same TLS byte stream), UART0 read as the console. Lifecycle states come from the console
lines (wasmbed_hil/bench/console.py), so the handle is the qemu backend's, with a Renode
machine behind it.

Where Renode is: $WASMBED_RENODE (a path or a command name), else ``renode`` on PATH; or
pyrenode3 when it is importable and configured (PYRENODE_PKG / PYRENODE_BUILD_DIR). Without
any of them the backend is unavailable and the scenarios skip, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...pki import Credentials
from ..link.bridge import Bridge, Link
from ..machines.renode.machine import RenodeMachine, find_renode, pyrenode3_configured
from ..machines.renode.scripts import machine_name, render_device_script
from ..virtual.device import Faults
from .base import Backend, register
from .qemu import DEVICE_OPTIONS, HARNESS_TIMING, QemuDeviceHandle

RENODE_MISSING = (
    "renode not found on PATH (install Renode ≥1.15 from https://renode.io; "
    "or pass --renode-binary to pytest, or set WASMBED_RENODE)"
)


class RenodeFaults(Faults):
    """On renode, as on qemu, faults are injected through the console (silence) or not yet."""

    def __setattr__(self, name: str, value: object) -> None:
        if name != "silent" and value not in (None, False):
            raise NotImplementedError(f"fault {name!r} is not available on the renode backend yet")
        super().__setattr__(name, value)


class RenodeDeviceHandle(QemuDeviceHandle):
    """The qemu backend's handle (console-driven lifecycle, bridge link, power and reset)
    over a RenodeMachine, which offers QemuMachine's interface."""

    backend = "renode"

    def __init__(
        self,
        backend: RenodeBackend,
        name: str,
        credentials: Credentials,
        link: Link,
        machine: RenodeMachine,
    ) -> None:
        super().__init__(backend, name, credentials, link, machine)  # type: ignore[arg-type]
        self._faults = RenodeFaults()
        self.renode = machine

    def reset(self) -> None:
        """``machine Reset`` through the monitor: the same Renode process, the reset macro
        loads the image and the blob again (a following wait_online() waits for the new
        session)."""
        super().reset()

    def extra_seen(self) -> str:
        if self.renode.running:
            return ""
        return f", renode not running ({self.renode.exit_report() or 'no log'})"

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["control"] = self.renode.control
        return stats


def firmware_image() -> Path:
    """The MPS2-AN385 image, built if the toolchain is here (QEMU itself is not needed), else
    one built earlier."""
    from ..firmware.build import FirmwareBuildError, ensure_image, image_path, missing_tools

    missing = missing_tools()
    if not missing:
        return ensure_image()
    elf = image_path()
    if elf.is_file():
        return elf
    raise FirmwareBuildError(
        f"no firmware image at {elf} and {', '.join(missing)} not installed to build it"
    )


@register
class RenodeBackend(Backend):
    name = "renode"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        configured = os.environ.get("WASMBED_RENODE")
        if find_renode() is None and not pyrenode3_configured():
            if configured:
                return f"WASMBED_RENODE={configured!r} is not an executable renode"
            return RENODE_MISSING
        from ..firmware.build import image_path, missing_tools

        missing = missing_tools()
        if missing and not image_path().is_file():
            return (
                f"{', '.join(missing)} not installed and no firmware image at "
                f"{image_path()} (Debian: gcc-arm-none-eabi picolibc-arm-none-eabi make)"
            )
        return None

    def __init__(self, loop: Any, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.elf = firmware_image()
        self.binary = find_renode()
        self.bridge = Bridge()

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> RenodeDeviceHandle:
        from ..firmware.blob import build_blob

        unknown = set(options) - DEVICE_OPTIONS
        if unknown:
            raise TypeError(
                f"options not supported on the renode backend: {sorted(unknown)} "
                f"(supported: {sorted(DEVICE_OPTIONS)})"
            )
        devdir = (self.workdir / "renode" / name).resolve()
        devdir.mkdir(parents=True, exist_ok=True)
        blob = devdir / "blob.bin"
        config = {**HARNESS_TIMING, **options}
        blob.write_bytes(
            build_blob(credentials, name, "localhost", seed=os.urandom(32), config=config)
        )
        link = self.loop.run(self.bridge.open_link(name, endpoint))
        elf = self.elf
        console_log = devdir / "renode-uart0.log"

        def script(machine: str, link_port: int, console_port: int) -> str:
            return render_device_script(
                machine=machine, elf=elf, blob=blob, link_port=link_port,
                console_port=console_port, console_log=console_log,
            )

        machine = RenodeMachine(
            machine_name(name), devdir, script, link=("127.0.0.1", link.port),
            binary=self.binary,
        )
        return RenodeDeviceHandle(self, name, credentials, link, machine)
