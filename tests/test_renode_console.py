"""Console expect and write_line on the Renode backend's machine, against the modelled Renode
of tests/test_renode_monitor.py (its monitor replays tests/data/renode/session.transcript;
its console terminal answers the firmware's console commands as the firmware does)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_renode_monitor import ONLINE_ID, TOKEN, FakeRenode, _script_factory

from wasmbed_hil.bench.backends.firmware import FirmwareDeviceHandle
from wasmbed_hil.bench.consolelog import ConsoleTimeout
from wasmbed_hil.bench.device import Lifecycle
from wasmbed_hil.bench.errors import MachineDied
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.machines.renode import RenodeMachine
from wasmbed_hil.bench.machines.renode.machine import RenodeProcess
from wasmbed_hil.pki import FleetCA

ANSWERS = {"silent 1": "wb: heartbeats silenced", "silent 0": "wb: heartbeats resumed",
           "forget": "wb: device id forgotten"}


class AnsweringRenode(FakeRenode):
    """The modelled Renode, whose console UART answers each command line it is typed."""

    async def _console(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        for line in self.console_out:
            writer.write(line.encode() + b"\r\n")
        await writer.drain()
        while raw := await reader.readline():
            self.console_in += raw
            command = raw.decode().strip()
            answer = ANSWERS.get(command, f'console: unknown command "{command}"')
            writer.write(answer.encode() + b"\r\n")
            await writer.drain()


class _Link:
    port = 1
    impairments: Any = None

    class stats:  # the link's counters, unused here
        bytes_up = bytes_down = upstream_connections = 0

    async def drop_upstream(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("renode-console-loop")
    yield thread
    assert thread.close() == []


def test_expect_and_write_line_through_renodes_console_terminal(loop: LoopThread,
                                                                 tmp_path: Path) -> None:
    fakes: list[AnsweringRenode] = []

    def factory(binary: str, log: Path) -> RenodeProcess:
        fake = AnsweringRenode(binary, log, name="session", machine="device_0",
                               console=("tls: connecting to \"localhost\"",
                                        f"wb: online as {ONLINE_ID} (enrolled_now=1)"))
        fakes.append(fake)
        return fake

    machine = RenodeMachine("device_0", tmp_path / "machine", _script_factory(tmp_path),
                            binary="renode", control="socket", sync_token=TOKEN,
                            process_factory=factory)
    creds = FleetCA.create("renode console CA").issue_device("device_0")
    handle = FirmwareDeviceHandle(loop, "device_0", creds, machine, _Link(), backend="renode")
    try:
        handle.power_on()
        online = handle.console.expect(r"online as ([0-9a-f]{32})", timeout=10)
        assert online.group(1) == ONLINE_ID
        assert handle.wait_online(timeout=10) == ONLINE_ID
        handle.console.write_line("silent 1")
        assert handle.console.expect_exact("heartbeats silenced", timeout=10).string == (
            "wb: heartbeats silenced")
        handle.console.write_line("dance")
        handle.console.expect_exact('unknown command "dance"', timeout=10)
        assert bytes(fakes[0].console_in) == b"silent 1\ndance\n"
        with pytest.raises(ConsoleTimeout, match="heartbeats silenced"):
            handle.console.expect_exact("heartbeats silenced", timeout=0)  # matched already
        handle.reset()
        handle.power_off()
        assert handle.lifecycle is Lifecycle.OFF and handle.died is None
        assert handle.console[-1] == "[harness] power off"
    finally:
        handle.close()
    assert fakes[0].fake is not None and fakes[0].fake.mismatch is None
    assert machine.history == [f"include @{tmp_path / 'machine' / 'device.resc'}",
                               "machine Reset", "pause", "quit"]


def test_a_renode_that_exits_on_its_own_raises_machine_died(loop: LoopThread,
                                                             tmp_path: Path) -> None:
    fakes: list[AnsweringRenode] = []

    def factory(binary: str, log: Path) -> RenodeProcess:
        fake = AnsweringRenode(binary, log, name="session", machine="device_0",
                               console=(f"wb: online as {ONLINE_ID} (enrolled_now=1)",))
        fakes.append(fake)
        return fake

    machine = RenodeMachine("device_0", tmp_path / "machine", _script_factory(tmp_path),
                            binary="renode", control="socket", sync_token=TOKEN,
                            process_factory=factory)
    creds = FleetCA.create("renode console CA").issue_device("device_0")
    handle = FirmwareDeviceHandle(loop, "device_0", creds, machine, _Link(), backend="renode")
    try:
        handle.power_on()
        handle.console.expect_exact("online as", timeout=10)
        handle.console.skip_to_end()
        loop.run(fakes[0]._shutdown())  # the process ends: its terminals close
        with pytest.raises(MachineDied) as caught:
            handle.console.expect("never printed", timeout=10)
        assert str(caught.value).startswith("device_0: renode exited without a power cut")
        assert "online as" in str(caught.value) and "fake renode log" in str(caught.value)
        assert handle.died is caught.value
        with pytest.raises(MachineDied):
            handle.wait_online(timeout=10)
    finally:
        handle.close()
    assert handle.died is not None  # a power cut afterwards does not undo a death
