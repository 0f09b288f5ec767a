"""BoardMachine (bench.machines.board) against a fake board control: power state when a
labgrid call is interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from wasmbed_hil.bench.errors import MachineError
from wasmbed_hil.bench.machines.board import BoardMachine


class FakeControl:
    """A board whose power-on blocks in the labgrid thread until released."""

    name = "fake-board"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.powering_on = threading.Event()
        self.release = threading.Event()

    def power_on(self) -> None:
        self.powering_on.set()
        assert self.release.wait(10), "the test never released the power-on"
        self.calls.append("power_on")

    def power_off(self) -> None:
        self.calls.append("power_off")

    def power_cycle(self) -> None:
        self.calls.append("power_cycle")

    def flash(self, image: Path, blob: Path) -> None:
        self.calls.append("flash")

    def uart(self, role: str):
        async def opener():
            reader = asyncio.StreamReader()
            reader.feed_eof()
            return reader, _Writer()
        return opener


class _Writer:
    def close(self) -> None:
        pass


async def _start_held_at_power_on(control: FakeControl, tmp_path: Path
                                  ) -> tuple[BoardMachine, asyncio.Task[None]]:
    """A board machine whose start() is under way, held where labgrid switches it on."""
    machine = BoardMachine("dev", tmp_path, control, tmp_path / "fw.elf", tmp_path / "blob.bin")
    start = asyncio.create_task(machine.start())
    assert await asyncio.to_thread(control.powering_on.wait, 10)
    return machine, start


def test_a_board_whose_start_was_cancelled_during_power_on_is_powered_off_by_close(tmp_path):
    # power_on() through the loop timed out (or the test was interrupted) while labgrid was
    # switching the board on: the call still completes in the labgrid thread. close() must
    # power the board off after it, not leave it running (and dialling the gateway).
    control = FakeControl()

    async def main() -> None:
        machine, start = await _start_held_at_power_on(control, tmp_path)
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start
        control.release.set()
        await machine.close()

    asyncio.run(main())
    assert control.calls == ["power_off", "flash", "power_on", "power_off"]


def test_a_board_closed_during_its_power_on_is_powered_off_and_starts_no_more(tmp_path):
    # close() ran while start() waited for labgrid to switch the board on (the test's
    # teardown while a trigger's power-on ran): close() found the board off, so the start
    # must power it off again itself. A start after close() powers nothing on.
    control = FakeControl()

    async def main() -> None:
        machine, start = await _start_held_at_power_on(control, tmp_path)
        await machine.close()
        control.release.set()
        with pytest.raises(MachineError, match="closed while starting"):
            await start
        assert not machine.running and machine._reader_task is None
        with pytest.raises(MachineError, match="closed"):
            await machine.start()

    asyncio.run(main())
    assert control.calls == ["power_off", "flash", "power_on", "power_off"]
