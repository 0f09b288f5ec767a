"""What a machine offers: the interface QemuMachine and RenodeMachine implement.

A machine runs the firmware image: it powers on and off, resets, shows its console (UART0)
line by line and takes console input. Its other UART dials the link (bench.seams.Link) the
backend opened for it; the machine does not know the gateway. The console-driven handle
(bench.backends.firmware.FirmwareDeviceHandle) is written against this protocol only, so a
new kind of machine (a real board behind a power switch and a serial port) is one class
that implements it, and reuses that handle unchanged.

Every coroutine runs on the harness loop; failures of the machine itself (it cannot start,
it does not answer) raise bench.errors.MachineError, an infrastructure error. A machine
whose process ends on its own records a MachineDied in `died` and ends its console with it
(`console.end(died)`), so every wait on the device raises it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..consolelog import ConsoleLog
from ..errors import MachineDied, MachineError

__all__ = ["Machine", "MachineDied", "MachineError"]


@runtime_checkable
class Machine(Protocol):
    name: str
    #: Every console line so far, oldest first, with its arrival time ("[harness] ..."
    #: lines mark power and resets); appending to it wakes the console's waits.
    console: ConsoleLog
    #: Set when the machine's process ended on its own (not by `power_cut`): the exit
    #: status and last words, an infrastructure error. A new `start()` clears it.
    died: MachineDied | None
    #: Called on the loop with each new console line (the handle's lifecycle listens here).
    on_line: Callable[[str], None] | None
    #: Boots so far (power-ons; a reset is not a boot).
    boots: int

    @property
    def label(self) -> str:
        """What messages call the machine: "emulator", "renode", later "board"."""

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None:
        """The process behind the machine, when there is one."""

    async def start(self) -> None:
        """Power on and boot (nothing when running already); MachineError once closed: a
        closed machine starts nothing, as close() may have run during the start."""

    async def power_cut(self) -> None:
        """Stop now, as pulling the plug would: RAM is lost, the next start boots afresh."""

    async def reset(self) -> None:
        """Reset the CPU and peripherals without a power cut; MachineError when not running."""

    async def write_console(self, text: str) -> None:
        """Type `text` into the console UART; MachineError when not running."""

    async def close(self) -> None:
        """Power cut, then release what the machine holds (files, directories)."""

    def exit_report(self) -> str:
        """What the machine said last (stderr, log), to explain why it stopped ("" if none)."""

    def stats(self) -> dict[str, Any]:
        """The machine's own counters (boots, and e.g. how it is controlled)."""
