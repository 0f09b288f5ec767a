"""--hil-gdb on the renode backend: the monitor commands RenodeMachine sends for a GDB
server, replayed against a modelled transcript (tests/data/renode/gdb.transcript).

Renode cannot be installed on this project's machines: this checks what is sent, in which
order and how the port is reported, not that Renode's GDB server then behaves as its
documentation says (StartGdbServer PORT [autostartEmulation]).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import test_renode_monitor as rm  # the fake Renode (a module import: its tests stay there)

from wasmbed_hil.bench.machines.gdb import GdbRequest
from wasmbed_hil.bench.machines.renode.machine import RenodeMachine, RenodeProcess
from wasmbed_hil.bench.machines.renode.monitor import commands_of, parse_transcript


def test_a_halted_renode_machine_pauses_resets_and_serves_gdb_after_include(tmp_path):
    async def scenario() -> None:
        machines: list[RenodeMachine] = []

        class GdbFake(rm.FakeRenode):
            async def _on_command(self, line: bytes) -> None:
                await super()._on_command(line)
                if line.startswith(b"include @"):  # the port the machine picked for GDB
                    self.values["gdb_port"] = str(machines[0].gdb_port)

        fakes: list[GdbFake] = []

        def factory(binary: str, log: Path) -> RenodeProcess:
            fakes.append(GdbFake(binary, log, name="gdb", machine="device_0",
                                 console=("connecting to 127.0.0.1:4433",)))
            return fakes[-1]

        elf = tmp_path / "wasmbed.elf"
        machine = RenodeMachine(
            "device_0", tmp_path / "machine", rm._script_factory(tmp_path), binary="renode",
            control="socket", sync_token=rm.TOKEN, process_factory=factory,
            gdb=GdbRequest("halted"), image=elf,
        )
        machines.append(machine)
        await machine.start()
        port = machine.gdb_port
        assert port is not None and machine.ports["gdb"] == port
        assert port not in (machine.ports["link"], machine.ports["console"])
        hint = f"gdb-multiarch {elf} -ex 'target remote 127.0.0.1:{port}'"
        assert hint in machine.gdb_hint()
        await machine.power_cut()
        fake = fakes[0]
        assert fake.fake is not None
        await asyncio.wait_for(fake.fake.finished.wait(), 10)
        assert fake.fake.mismatch is None and fake.fake.completed
        script = tmp_path / "machine" / "device.resc"
        assert machine.history == [f"include @{script}", "pause", "machine Reset",
                                   f"machine StartGdbServer {port} true", "pause", "quit"]
        recorded = (tmp_path / "machine" / "monitor.transcript").read_text()
        assert f"machine StartGdbServer {port} true" in commands_of(parse_transcript(recorded))
        log = (tmp_path / "machine" / "console.log").read_text()
        assert hint in log  # the attach command is in the device's console (and report)
        await machine.close()

    rm.run(scenario())


def test_without_a_request_renode_gets_no_gdb_commands(tmp_path):
    machine = RenodeMachine("device_0", tmp_path / "m", rm._script_factory(tmp_path),
                            control="socket")
    assert machine.gdb_port is None and machine.gdb_hint() == ""
    rm.run(machine.close())
