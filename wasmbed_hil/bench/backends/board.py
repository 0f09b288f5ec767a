"""The board backend: the firmware image on real boards, through labgrid.

Each device takes a free board of a lab (bench.machines.labgrid): locally a target of a
labgrid environment file (``--board-env``), or through a labgrid coordinator a place whose
tags match (``--board-coordinator`` and ``--board-places``). The machine
(bench.machines.board.BoardMachine) flashes the firmware image and the device's blob, powers
the board through labgrid's PowerProtocol driver and reads its console UART; the device's
link UART is a serial port the harness opens (a tty, or ser2net's port through the
exporter) and the bridge carries its bytes to the gateway as for an emulator
(Bridge.open_serial_link). The device gives the board back when it is closed.

``--board-lab=qemu:N`` (or ``qemu:N:coordinator``) starts a lab of N QEMU stand-in boards
for the run (bench.lab), so the backend runs where there is no hardware; it is started
once by the process that runs the session and shared by the pytest-xdist workers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InfrastructureError
from ..loop import LoopThread
from ..machines.board import BoardMachine, in_labgrid
from ..machines.labgrid import LabgridBoard, labgrid_unavailable_reason, take_local, take_remote
from ..seams import Link
from .base import BackendOption, register
from .firmware import FirmwareBackend, image_unavailable_reason

ENV = BackendOption("--board-env", "WASMBED_BOARD_ENV",
                    "a labgrid environment file naming the boards (local mode)")
COORDINATOR = BackendOption("--board-coordinator", "WASMBED_BOARD_COORDINATOR",
                            "HOST:PORT of a labgrid coordinator sharing the boards")
PLACES = BackendOption(
    "--board-places", "WASMBED_BOARD_PLACES",
    "which boards: tags KEY=VALUE[,KEY=VALUE] of the coordinator's places (default "
    "board=standin), or a glob of the environment file's targets (default *)",
)
LAB = BackendOption(
    "--board-lab", "WASMBED_BOARD_LAB",
    "start a lab of QEMU stand-in boards for the run: qemu:N (environment file) or "
    "qemu:N:coordinator (through a labgrid coordinator and exporter)",
)
WAIT = BackendOption("--board-wait", "WASMBED_BOARD_WAIT",
                     "seconds a device waits for a free board (default 120)")


def _wait() -> float:
    raw = WAIT.value() or "120"
    try:
        value = float(raw)
    except ValueError:
        raise InfrastructureError(f"{WAIT.env}={raw!r}: seconds expected") from None
    if not 0 < value <= 3600:
        raise InfrastructureError(f"{WAIT.env}={raw!r}: 0 < seconds <= 3600")
    return value


@register
class BoardBackend(FirmwareBackend):
    name = "board"
    board = "mps2-an385 (Cortex-M3) boards through labgrid"
    options = (ENV, COORDINATOR, PLACES, LAB, WAIT)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        reason = labgrid_unavailable_reason()
        if reason:
            return reason
        if not (ENV.value() or COORDINATOR.value() or LAB.value()):
            return ("no boards: give a labgrid environment file (--board-env), a coordinator "
                    "(--board-coordinator) or a stand-in lab (--board-lab=qemu:N)")
        if LAB.value() and not (ENV.value() or COORDINATOR.value()):
            from .qemu import QemuBackend

            return QemuBackend.unavailable_reason()  # a stand-in lab not started (yet)
        return image_unavailable_reason()

    @classmethod
    def provenance(cls) -> dict[str, str]:
        labels = super().provenance()
        if COORDINATOR.value():
            labels["lab"] = f"coordinator {COORDINATOR.value()} ({PLACES.value() or ''})"
        elif ENV.value():
            labels["lab"] = f"environment {ENV.value()}"
        if LAB.value():
            labels["board"] = "mps2-an385 QEMU stand-in boards through labgrid"
        return labels

    @classmethod
    def environment(cls) -> dict[str, str]:
        try:
            from importlib.metadata import version

            return {"labgrid": version("labgrid")}
        except Exception:
            return {"labgrid": "not installed"}

    @classmethod
    @contextlib.contextmanager
    def run_resources(cls) -> Iterator[None]:
        """With --board-lab (and no lab given otherwise): a stand-in lab for the run, its
        environment file or coordinator exported to the environment for every worker."""
        spec = LAB.value()
        if not spec or ENV.value() or COORDINATOR.value():
            yield
            return
        from ..lab.process import LabProcess, parse_spec

        boards, coordinator = parse_spec(spec)
        lab = LabProcess(boards, coordinator)
        info = lab.start()
        saved = {k: os.environ.get(k) for k in (ENV.env, COORDINATOR.env, PLACES.env)}
        if coordinator:
            os.environ[COORDINATOR.env] = info["coordinator"]
            os.environ.setdefault(PLACES.env, info["places"])
        else:
            os.environ[ENV.env] = info["env"]
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            lab.close()

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.boards: dict[str, LabgridBoard] = {}

    def _take(self) -> LabgridBoard:
        coordinator = COORDINATOR.value()
        if coordinator:
            return take_remote(coordinator, PLACES.value() or "board=standin", _wait())
        env = ENV.value()
        if not env:
            raise InfrastructureError(
                "no boards: --board-env or --board-coordinator (or --board-lab) is needed")
        return take_local(Path(env), PLACES.value() or "*", _wait())

    async def open_link(self, name: str, endpoint: tuple[str, int]) -> Link:
        board = await in_labgrid(self._take)
        try:
            link = await self.bridge.open_serial_link(name, endpoint, board.uart("link"))
        except BaseException as exc:
            await in_labgrid(board.release)
            if isinstance(exc, ConnectionError):
                raise InfrastructureError(f"link UART of board {board.name}: {exc}") from exc
            raise
        self.boards[name] = board
        return link

    async def close_link(self, name: str) -> None:
        try:
            await self.bridge.close_link(name)
        finally:
            board = self.boards.pop(name, None)
            if board is not None:
                await in_labgrid(board.release)

    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> BoardMachine:
        return BoardMachine(name, devdir, self.boards[name], self.image_of(name), blob,
                            on_power_cut=link.drop_upstream)

    def close(self) -> None:
        if self.loop.alive:
            for name in list(self.boards):
                self.loop.run(self.close_link(name))
        super().close()
