"""A real board as a Machine: power, flash and console through a `BoardControl`.

The board backend (bench.backends.board) allocates a board (bench.machines.labgrid: a
labgrid target of an environment file, or a place acquired through a labgrid coordinator)
and hands its control here. The machine:

- flashes the firmware image and the device's blob once, powered off, before the first
  power-on (the blob carries the device's identity and configuration);
- powers on and off through the control (labgrid's PowerProtocol driver); a power cut
  also closes the link's gateway side, as the end of an emulator's UART connection does,
  since a board's UART has no connection to lose; a reset is a power cycle;
- reads the console UART line by line from the moment it first powers on.

Control calls are blocking (labgrid is synchronous): they run in `LABGRID_THREAD`, one
thread per process, since labgrid's remote client keeps one event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ...aio import cancel_and_wait
from ..consolelog import ConsoleLog
from ..errors import MachineDied, MachineError

T = TypeVar("T")
LABGRID_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labgrid")
UartOpener = Callable[[], Awaitable[tuple[asyncio.StreamReader, Any]]]


class BoardControl(Protocol):
    """What the machine needs of an allocated board; every method blocks."""

    name: str  # the target or place

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def power_cycle(self) -> None: ...

    def flash(self, image: Path, blob: Path) -> None: ...

    def uart(self, role: str) -> UartOpener:
        """How to open the board's serial port `role` ("console" or "link") raw."""


async def in_labgrid(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking labgrid call in the labgrid thread."""
    return await asyncio.get_running_loop().run_in_executor(LABGRID_THREAD, fn, *args)


class BoardMachine:
    """A bench.machines.base.Machine on a board behind `control`."""

    label = "board"

    def __init__(
        self, name: str, workdir: Path, control: BoardControl, image: Path, blob: Path,
        on_power_cut: Callable[[], Awaitable[None]] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.control = control
        self.image = image
        self.blob = blob
        self.on_power_cut = on_power_cut
        self.on_line = on_line
        self.console = ConsoleLog()
        # A board has no process of ours that could end on its own: a board that stops
        # answering shows as a closed console or a silent link, not as a death.
        self.died: MachineDied | None = None
        self.boots = 0
        self._running = False
        self._closed = False
        self._flashed = False
        self._console_writer: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._last_error = ""
        workdir.mkdir(parents=True, exist_ok=True)
        self._console_file = (workdir / "console.log").open("a", buffering=1)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pid(self) -> int | None:
        return None  # the board is not a process of ours

    def _line(self, text: str) -> None:
        self.console.append(text)
        if not self._console_file.closed:
            self._console_file.write(text + "\n")
        if self.on_line is not None:
            self.on_line(text)

    async def _control(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            await in_labgrid(fn, *args)
        except Exception as exc:  # labgrid raises its own and subprocess/HTTP errors
            self._last_error = f"{what} failed: {exc}"
            raise MachineError(f"{self.name} on board {self.control.name}: {what} failed: "
                               f"{exc}") from exc

    async def _open_console(self) -> None:
        if self._reader_task is not None:
            return
        try:
            reader, self._console_writer = await self.control.uart("console")()
        except ConnectionError as exc:
            raise MachineError(f"{self.name}: console of board {self.control.name}: "
                               f"{exc}") from exc
        self._reader_task = asyncio.create_task(self._read_console(reader))

    async def _read_console(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ConnectionError, ValueError):
            while line := await reader.readline():
                self._line(line.decode("utf-8", "replace").rstrip("\r\n"))
        self._line(f"[harness] console of board {self.control.name} closed")

    async def start(self) -> None:
        if self._running:
            return
        if self._closed:  # e.g. a trigger's power-on (bench.points) after the device closed
            raise MachineError(f"{self.name}: cannot start, the machine is closed")
        if not self._flashed:
            await self._control("power off", self.control.power_off)
            await self._control("flash", self.control.flash, self.image, self.blob)
            self._flashed = True
            self._line(f"[harness] flashed {self.image.name} and the device blob on board "
                       f"{self.control.name}")
        await self._open_console()
        try:
            await self._control("power on", self.control.power_on)
        except asyncio.CancelledError:
            # The labgrid call goes on in its thread: the board comes on after the cancel
            # (a power_on() wait that timed out). Counted as on, so that close() and
            # power_cut() power it off (queued behind the power-on in that one thread).
            self._running = True
            raise
        self._running = True
        if self._closed:
            # close() ran during the start and found the board off: it is on now, with a
            # console opened after close() released it.
            try:
                await self._control("power off", self.control.power_off)
                self._running = False
            finally:
                await self._release_console()
            raise MachineError(f"{self.name}: closed while starting")
        self.boots += 1
        self._line(f"[harness] power on (boot {self.boots}, board {self.control.name})")

    async def power_cut(self) -> None:
        if not self._running:
            return
        await self._control("power off", self.control.power_off)
        self._running = False
        if self.on_power_cut is not None:
            await self.on_power_cut()
        self._line("[harness] power off")

    async def reset(self) -> None:
        if not self._running:
            raise MachineError(f"{self.name}: cannot reset, not running")
        await self._control("power cycle", self.control.power_cycle)
        if self.on_power_cut is not None:
            await self.on_power_cut()
        self._line("[harness] reset (power cycle)")

    async def write_console(self, text: str) -> None:
        if not self._running or self._console_writer is None:
            raise MachineError(f"{self.name}: not running")
        self._console_writer.write(text.encode())
        await self._console_writer.drain()

    async def close(self) -> None:
        self._closed = True
        try:
            if self._running:
                await self.power_cut()
        finally:
            await self._release_console()

    async def _release_console(self) -> None:
        if self._console_writer is not None:
            self._console_writer.close()
            self._console_writer = None
        if self._reader_task is not None:
            await cancel_and_wait([self._reader_task])
            self._reader_task = None
        self._console_file.close()

    def exit_report(self) -> str:
        return self._last_error

    def stats(self) -> dict[str, Any]:
        return {"boots": self.boots, "board": self.control.name}
