"""The renode backend: the qemu backend's firmware image on Renode's MPS2-AN385 per device
(another board: --hil-board, whose file names its .repl under renode/, its UARTs and its blob
address; another image: --hil-firmware or firmware=).

Each device is one Renode machine (bench.machines.renode.machine.RenodeMachine) built from
renode/wasmbed-device.resc: the same firmware/build/mps2-an385/wasmbed.elf and the same
per-device blob as on the qemu backend, UART1 joined to the bridge (the gateway sees the
same TLS byte stream), UART0 read as the console. The handle is the firmware backends'
FirmwareDeviceHandle (bench.backends.firmware), with a Renode machine behind it.

Where Renode is: $WASMBED_RENODE (a path or a command name; pytest's --renode-binary sets
it), else ``renode`` on PATH; or pyrenode3 when it is importable and configured
(pyrenode3_problem(): PYRENODE_BUILD_DIR with PYRENODE_RUNTIME=coreclr for a .NET Renode).
Without any of them the backend is unavailable and the scenarios
skip, saying so; likewise when the Renode found has no model of a peripheral type the
board's platform uses (a probe loads it once on a scratch machine: Error E04).
"""

from __future__ import annotations

from pathlib import Path

from ..boards import Board, BoardError, resolve_board
from ..errors import MachineError
from ..loop import LoopThread
from ..machines.gdb import GdbRequest
from ..machines.renode import probe
from ..machines.renode.machine import (
    RenodeMachine,
    ScriptFactory,
    find_renode,
    pyrenode3_configured,
    pyrenode3_problem,
    pyrenode3_requested,
)
from ..machines.renode.scripts import RENODE_DIR, machine_name, render_device_script
from ..seams import Link
from .base import BackendOption, register
from .firmware import FirmwareBackend, image_unavailable_reason

__all__ = ["RENODE_MISSING", "RenodeBackend", "device_script"]

RENODE_MISSING = (
    "renode not found on PATH (install Renode 1.15 or newer from https://renode.io; "
    "or pass --renode-binary to pytest, or set WASMBED_RENODE)"
)
BINARY = BackendOption(
    "--renode-binary", "WASMBED_RENODE",
    "the renode executable (default: $WASMBED_RENODE, else renode on PATH)",
)


@register
class RenodeBackend(FirmwareBackend):
    name = "renode"
    emulator = "Renode"
    options = (*FirmwareBackend.options, BINARY)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        configured = BINARY.value()
        if find_renode() is None and not pyrenode3_configured():
            if pyrenode3_requested():
                return f"pyrenode3: {pyrenode3_problem()}"
            if configured:
                return f"{BINARY.env}={configured!r} is not an executable renode"
            return RENODE_MISSING
        return cls.missing_model_reason() or image_unavailable_reason()

    @classmethod
    def missing_model_reason(cls) -> str | None:
        """A peripheral type of the board's platform that this Renode has no model of (found
        by loading it on a scratch machine once per binary; bench.machines.renode.probe).
        A probe that fails otherwise does not make the backend unavailable: the boot then
        fails with Renode's own words."""
        binary = find_renode()
        repl = resolve_board().renode_repl
        if binary is None or pyrenode3_configured() or repl is None:
            return None
        try:
            return probe.profile(binary, RENODE_DIR / repl).unavailable_reason()
        except MachineError:
            return None

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.binary = find_renode()

    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> RenodeMachine:
        elf = self.image_of(name)
        script = device_script(self.board_spec, elf, blob, devdir)
        return RenodeMachine(
            machine_name(name), devdir, script, link=("127.0.0.1", link.port),
            binary=self.binary, gdb=GdbRequest.for_device(name), image=elf,
            port_zero=self.port_zero,
        )

    @property
    def port_zero(self) -> bool:
        """Start Renode with --port 0 unless the probe saw it announce port 0 (a release)."""
        known = probe.cached(self.binary) if self.binary else None
        return known.port_zero if known is not None else True


def device_script(board: Board, elf: Path, blob: Path, devdir: Path) -> ScriptFactory:
    """The device script of ``board`` (renode/wasmbed-device.resc or its template), rendered
    per boot: what the renode and renode-test backends give RenodeMachine."""
    if board.renode_repl is None:
        raise BoardError(f"board {board.name} has no Renode platform ([renode] repl in "
                         f"{board.source})")
    platform = RENODE_DIR / board.renode_repl

    def script(machine: str, link_port: int, console_port: int) -> str:
        # One file per machine name: in a shared emulation (pyrenode3, renode-test) each
        # boot is a new machine (<name>_b<N>) and Renode refuses a file another UART backend
        # still holds ("is alredy used as UART file backend"; it outlives `mach rem`).
        return render_device_script(
            machine=machine, elf=elf, blob=blob, link_port=link_port,
            console_port=console_port, console_log=devdir / f"renode-{machine}-uart.log",
            platform=platform, console_uart=board.renode_console_uart or "uart0",
            link_uart=board.renode_link_uart or "uart1", blob_address=board.blob_address,
        )

    return script
