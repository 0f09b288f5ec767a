"""The Renode monitor client and machine driver, against recorded monitor exchanges.

A fake monitor (asyncio, here) replays a transcript from tests/data/renode/ and compares
every byte the client sends with it, so these tests pin down exactly which commands go to
Renode and in which order for a boot, a reset and a power cut, how replies are cut at
prompts, and how errors come out. A stand-in for the Renode process binds the monitor port
it is given (as ``renode --port`` does) and opens the script's socket terminals when the
script is included, so the console and the UART pipe are exercised too. The process
handling itself (ready line, port taken, crash, kill) runs with stand-in executables.

Nothing here ran against a real Renode: see renode/README.md.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import select
import shutil
import socket
import stat
import sys
import textwrap
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.link.bridge import Bridge
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.machines.renode import machine as renode_machine
from wasmbed_hil.bench.machines.renode.machine import (
    MachineError,
    RenodeMachine,
    RenodeProcess,
    UartPipe,
    _PortLost,
)
from wasmbed_hil.bench.machines.renode.monitor import (
    PROMPT,
    MonitorClient,
    MonitorCommandError,
    MonitorError,
    MonitorParser,
    Pyrenode3Monitor,
    TelnetDecoder,
    TerminalText,
    TranscriptStep,
    commands_of,
    escape,
    parse_transcript,
    parse_version,
    reply_from_block,
    unescape,
)
from wasmbed_hil.bench.machines.renode.refusals import PortNotAnnounced
from wasmbed_hil.bench.machines.renode.scripts import render_device_script

DATA = Path(__file__).parent / "data" / "renode"
TOKEN = "wasmbed_sync_test"
ONLINE_ID = "0123456789abcdef0123456789abcdef"


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def transcript(name: str, **values: str) -> list[TranscriptStep]:
    return parse_transcript((DATA / f"{name}.transcript").read_text(), {"token": TOKEN, **values})


class FakeMonitor:
    """Replays a transcript to one client, comparing every byte the client sends.

    ``steps`` may be a function: it is called again after each client line, so values that
    become known during the exchange (the ports of an included script) can be filled in."""

    def __init__(
        self, steps: list[TranscriptStep] | Callable[[], list[TranscriptStep]], chunk: int = 7,
        on_command: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self._source = steps if callable(steps) else (lambda: steps)
        self.steps = self._source()
        self.chunk = chunk
        self.on_command = on_command
        self.mismatch: str | None = None
        self.completed = False
        self.finished = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        renode_machine._nodelay(writer)  # small writes go out as they are made
        try:
            for index in range(len(self.steps)):
                step = self.steps[index]
                if step.direction == "close":
                    break
                if step.direction == "S":
                    for i in range(0, len(step.data), self.chunk):
                        writer.write(step.data[i : i + self.chunk])
                        await writer.drain()
                    continue
                try:
                    got = await asyncio.wait_for(reader.readexactly(len(step.data)), 10)
                except (asyncio.IncompleteReadError, TimeoutError) as exc:
                    partial = getattr(exc, "partial", b"")
                    self.mismatch = f"expected {step.data!r}, client sent {partial!r} and stopped"
                    return
                if got != step.data:
                    self.mismatch = f"expected {step.data!r}, client sent {got!r}"
                    return
                if self.on_command is not None:
                    await self.on_command(got)
                self.steps = self._source()
            self.completed = True
        except (ConnectionError, OSError) as exc:
            self.mismatch = f"connection lost: {exc}"
        finally:
            writer.close()
            self.finished.set()


async def serve(fake: FakeMonitor, port: int = 0) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(fake.serve, "127.0.0.1", port)
    return server, server.sockets[0].getsockname()[1]


# --- sans-I/O ------------------------------------------------------------------------------


def test_telnet_negotiation_gets_one_answer_per_do_and_will():
    renode_115 = bytes.fromhex("fffd00 fffb01 fffb03 fffc22")
    payload, answer = TelnetDecoder().feed(renode_115 + b"Renode")
    assert payload == b"Renode"
    assert answer == bytes.fromhex("fffb00 fffd01 fffd03")  # the 9 bytes Renode 1.15 reads
    renode_117 = bytes.fromhex("fffd00 fffd1f fffb01 fffb03 fffc22")
    assert TelnetDecoder().feed(renode_117)[1] == bytes.fromhex("fffb00 fffc1f fffd01 fffd03")
    # one byte at a time: the same answers; escaped 0xFF and subnegotiation handled
    decoder = TelnetDecoder()
    stream = renode_117 + b"a\xff\xffb" + bytes.fromhex("fffa1f0050fff0") + b"c"
    pieces = [decoder.feed(bytes([b])) for b in stream]
    assert b"".join(p for p, _ in pieces) == b"a\xffbc"
    assert b"".join(a for _, a in pieces) == bytes.fromhex("fffb00 fffc1f fffd01 fffd03")
    assert decoder.idle and decoder.options_seen == 5


def test_terminal_text_drops_escapes_and_remembers_red():
    term = TerminalText()
    runs = term.feed(b"\x1b[2J\x1b[33m(m) \x1b[0mok\r\n\x1b[31;1mbad\r\n\x1b[0m")
    assert "".join(t for t, _ in runs) == "(m) ok\nbad\n"
    assert [t for t, red in runs if red] == ["bad\n"]
    # an escape split across reads, UTF-8 split across reads
    term = TerminalText()
    parts = [term.feed(bytes([b])) for b in "\x1b[31mé\x1b[0m".encode()]
    assert [r for p in parts for r in p] == [("é", True)]


def test_a_prompt_is_only_a_prompt_at_a_line_start_ending_the_text():
    assert PROMPT.search("0x0\n(device_0) ")["name"] == "device_0"
    assert PROMPT.search("(monitor) ")["name"] == "monitor"
    for text in ("  sysbus (SystemBus)", "  cpu (CortexM) ", "(monitor) \nmore", "(a b) ",
                 "x(monitor) ", "(monitor)"):
        assert PROMPT.search(text) is None, text


def test_replies_are_cut_at_prompts_even_one_byte_at_a_time():
    steps = transcript("session", script="/w/device.resc", machine="device_0")
    parser = MonitorParser()
    answers = b""
    for step in (s for s in steps if s.direction == "S"):
        for b in step.data:
            answers += parser.receive(bytes([b]))
    # 1.16.1's negotiation: one answer per DO/WILL, 9 bytes in all (what 1.15.x reads).
    assert answers == bytes.fromhex("fffb00 fffd01 fffd03")
    blocks = parser.blocks
    assert [b.prompt for b in blocks] == ["monitor", "monitor", "device_0", "device_0",
                                          "device_0"]
    assert blocks[0].text.startswith("Renode, version 1.16.1 (")
    assert parse_version(blocks[0].text) == (1, 16, 1)
    assert parser.pending == "quit\nRenode is quitting\n"
    sync = reply_from_block(TOKEN, blocks[1])
    assert sync.errors == (f"No such command or device: {TOKEN}",) and sync.output.strip()
    include = reply_from_block("include @/w/device.resc", blocks[2])
    assert include.ok and include.output == "Starting emulation..."
    assert include.prompt == "device_0"


def test_errors_are_known_by_colour_and_by_wording():
    steps = transcript("refusal", script="/w/d.resc", machine="m", platform="/r/p.repl")
    parser = MonitorParser()
    for step in (s for s in steps if s.direction == "S"):
        parser.receive(step.data)
    refused = reply_from_block("include @/w/d.resc", parser.blocks[2])
    assert refused.errors[:3] == (
        "There was an error executing command 'machine LoadPlatformDescription @/r/p.repl':",
        "Error E04: Could not resolve type: 'Timers.Arm_CMSDK_Timer'.",
        "At /r/p.repl:39:9:",
    )
    assert refused.prompt == "m"
    plain = MonitorParser()  # --plain: no colours at all
    plain.receive(b"x\n\rThere was an error executing command 'x'\r\nnot an error\r\n(monitor) ")
    reply = reply_from_block("x", plain.blocks[0])
    assert reply.errors == ("There was an error executing command 'x'",)
    assert reply.output.endswith("not an error")


def test_transcript_escapes_round_trip_every_byte():
    data = bytes(range(256)) + b"\\n{x}"
    assert unescape(escape(data)) == data
    assert "\n" not in escape(data) and "\r" not in escape(data)
    with pytest.raises(ValueError):
        unescape("\\q")
    with pytest.raises(ValueError, match="line 1"):
        parse_transcript("X: nope")


# --- the client over a socket --------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_client_synchronises_then_reads_each_reply_whole(chunk):
    async def scenario() -> None:
        fake = FakeMonitor(transcript("replies"), chunk)
        server, port = await serve(fake)
        record = io.StringIO()
        client = await MonitorClient.connect(
            "127.0.0.1", port, timeout=10, record=record, sync_token=TOKEN
        )
        try:
            assert client.version == (1, 16, 1) and client.prompt == "monitor"
            assert "Renode, version 1.16.1" in client.greeting
            tree = await client.execute("peripherals")
            assert tree.output.splitlines()[0] == "Available peripherals:"
            assert tree.output.splitlines()[-1].strip() == "<0x40005000, 0x40005FFF>"
            assert "└── uart1 (CMSDK_APB_UART)" in tree.output and tree.ok
            value = await client.execute("sysbus ReadDoubleWord 0x40004004")
            assert value.output == "0x00000000"
            with pytest.raises(MonitorCommandError, match="No such command or device: bogus"):
                await client.execute("bogus arguments here")
            load = await client.execute("sysbus LoadBinary @/nonexistent 0x0", check=False)
            assert load.errors == (
                "There was an error executing command 'sysbus LoadBinary @/nonexistent 0x0':",
                "Could not find file '/nonexistent'.",
            )
            assert "Renode is quitting" in await client.quit(timeout=10)
            await asyncio.wait_for(fake.finished.wait(), 10)
            assert fake.mismatch is None and fake.completed
            assert client.history == [
                "peripherals", "sysbus ReadDoubleWord 0x40004004", "bogus arguments here",
                "sysbus LoadBinary @/nonexistent 0x0", "quit",
            ]
        finally:
            client.close()
            server.close()
            await server.wait_closed()
        # What the client recorded replays: the same bytes from the client, byte for byte.
        recorded = parse_transcript(record.getvalue())
        expected = transcript("replies")
        assert [s.data for s in recorded if s.direction == "C"] == [
            s.data for s in expected if s.direction == "C"
        ]
        assert b"".join(s.data for s in recorded if s.direction == "S") == b"".join(
            s.data for s in expected if s.direction == "S"
        )
        again = FakeMonitor(recorded, 64)
        server, port = await serve(again)
        client = await MonitorClient.connect("127.0.0.1", port, timeout=10, sync_token=TOKEN)
        for command in commands_of(recorded, skip=(TOKEN.encode(), b"quit")):
            await client.execute(command, check=False)
        await client.quit()
        client.close()
        await asyncio.wait_for(again.finished.wait(), 10)
        assert again.mismatch is None and again.completed
        server.close()
        await server.wait_closed()

    run(scenario())


def test_a_monitor_that_never_prompts_times_out_saying_what_it_sent():
    async def scenario() -> None:
        steps = [TranscriptStep("S", b"\xff\xfd\x00Renode, version 1.15.3 but no prompt"),
                 TranscriptStep("C", b"\xff\xfb\x00"), TranscriptStep("C", b"x" * 100)]
        fake = FakeMonitor(steps)
        server, port = await serve(fake)
        with pytest.raises(MonitorError, match=r"timed out waiting for an answer to the sync "
                                                r"token .*but no prompt"):
            await MonitorClient.connect("127.0.0.1", port, timeout=1.0, sync_token=TOKEN)
        server.close()
        await server.wait_closed()

    run(scenario())


def test_a_closed_or_absent_monitor_is_a_monitor_error():
    async def scenario() -> None:
        fake = FakeMonitor([TranscriptStep("S", b"\xff\xfd\x00"), TranscriptStep("close", b"")])
        server, port = await serve(fake)
        with pytest.raises(MonitorError, match="closed while waiting for the greeting"):
            await MonitorClient.connect("127.0.0.1", port, timeout=5)
        server.close()
        await server.wait_closed()
        with pytest.raises(MonitorError, match="cannot connect"):
            await MonitorClient.connect("127.0.0.1", port, timeout=5)

    run(scenario())


def test_commands_are_single_lines():
    async def scenario() -> None:
        client = MonitorClient(asyncio.StreamReader(), types.SimpleNamespace())  # type: ignore[arg-type]
        for bad in ("start\nquit", "a\rb", "", "   ", "x\x00"):
            with pytest.raises(ValueError):
                await client.execute(bad)

    run(scenario())


# --- the machine driver --------------------------------------------------------------------

TERMINAL = re.compile(r'^emulation CreateServerSocketTerminal (\d+) "(\w+)" false$', re.M)
CONNECT = re.compile(r"^connector Connect sysbus\.(\w+) (\w+)$", re.M)


class FakeRenode(RenodeProcess):
    """Stands in for one ``renode --disable-xwt --port P``: binds P as Renode does, replays a
    transcript on the monitor, and opens the socket terminals of an included script."""

    def __init__(
        self, binary: str, log: Path, *, name: str, machine: str, chunk: int = 7,
        console: tuple[str, ...] = (), link_out: bytes = b"",
    ) -> None:
        super().__init__(binary, log)
        self.name = name
        self.machine = machine
        self.chunk = chunk
        self.console_out = console
        self.link_out = link_out
        self.console_in = bytearray()
        self.link_in = bytearray()
        self.link_got = asyncio.Event()
        self.console_got = asyncio.Event()
        self.exited = asyncio.Event()
        self.fake: FakeMonitor | None = None
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.started = False

    async def start(self, port: int, timeout: float) -> int:
        self.script = self.log_path.parent / "device.resc"
        self.values = {"script": str(self.script), "machine": self.machine, "platform": "",
                       "link_port": "?"}
        steps = transcript(self.name, **self.values)
        # a transcript in which the script fails to bind a port opens no terminal
        self.opens_terminals = not any(b"Address already in use" in s.data for s in steps)
        self.fake = FakeMonitor(lambda: transcript(self.name, **self.values), self.chunk,
                                self._on_command)
        server = await asyncio.start_server(self._monitor, "127.0.0.1", port)
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])  # --port 0: Renode picks and says
        self.started = True
        self.output = [f"Monitor available in telnet mode on port {bound}"]
        return bound

    async def _monitor(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.fake is not None
        await self.fake.serve(reader, writer)
        if self.fake.completed:  # the transcript ends with quit: the process ends
            await self._shutdown()

    async def _on_command(self, line: bytes) -> None:
        if not line.startswith(b"include @"):
            return
        text = self.script.read_text()  # written by the machine just before include
        terminals = {term: int(p) for p, term in TERMINAL.findall(text)}
        uarts = {term: uart for uart, term in CONNECT.findall(text)}
        self.ports = {uarts[t]: p for t, p in terminals.items()}
        self.values["link_port"] = str(terminals[f"{self.machine}_link"])
        if self.opens_terminals:
            uart_of = {v: k for k, v in self.ports.items()}
            for port in self.ports.values():
                handler = self._console if uart_of[port] == "uart0" else self._link
                self._servers.append(await asyncio.start_server(handler, "127.0.0.1", port))

    async def _console(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        for line in self.console_out:
            writer.write(line.encode() + b"\r\n")
        await writer.drain()
        while data := await reader.read(4096):
            self.console_in += data
            self.console_got.set()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(self.link_out)
        await writer.drain()
        while data := await reader.read(4096):
            self.link_in += data
            self.link_got.set()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in self._writers:
            writer.close()
        self._servers.clear()
        self.exited.set()

    @property
    def running(self) -> bool:
        return self.started and not self.exited.is_set()

    @property
    def pid(self) -> int | None:
        return None

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def kill(self) -> None:
        await self._shutdown()

    def report(self) -> str:
        return "fake renode log"


def _device_files(tmp: Path) -> tuple[Path, Path]:
    elf, blob = tmp / "wasmbed.elf", tmp / "blob.bin"
    elf.write_bytes(b"\x7fELF")
    blob.write_bytes(b"WBLB")
    return elf, blob


def _script_factory(tmp: Path) -> Callable[[str, int, int], str]:
    elf, blob = _device_files(tmp)

    def script(machine: str, link_port: int, console_port: int) -> str:
        return render_device_script(
            machine=machine, elf=elf, blob=blob, link_port=link_port,
            console_port=console_port, console_log=tmp / "uart0.log",
        )

    return script


def test_boot_reset_and_power_cut_send_exactly_the_recorded_commands(tmp_path):
    async def scenario() -> None:
        got: dict[str, bytes] = {}
        bridge_saw = asyncio.Event()
        bridge_lost = asyncio.Event()

        async def link_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got["up"] = await reader.readexactly(14)
            bridge_saw.set()
            writer.write(b"\x16\x03\x03down")
            await writer.drain()
            await reader.read()  # until the pipe closes it
            bridge_lost.set()
            writer.close()

        link_listener = await asyncio.start_server(link_side, "127.0.0.1", 0)
        link = ("127.0.0.1", link_listener.sockets[0].getsockname()[1])
        lines: list[str] = []
        online = asyncio.Event()

        def on_line(line: str) -> None:
            lines.append(line)
            if line.startswith("online as"):
                online.set()

        fakes: list[FakeRenode] = []

        def factory(binary: str, log: Path) -> RenodeProcess:
            fake = FakeRenode(
                binary, log, name="session", machine="device_0",
                console=("connecting to 127.0.0.1:4433", f"online as {ONLINE_ID} (gw)"),
                link_out=b"\x16\x03\x01\x00\x09\x01\x00\x00\x05hello",
            )
            fakes.append(fake)
            return fake

        machine = RenodeMachine(
            "device_0", tmp_path / "machine", _script_factory(tmp_path), link=link,
            binary="renode", control="socket", sync_token=TOKEN, on_line=on_line,
            process_factory=factory,
        )
        await machine.start()
        fake = fakes[0]
        assert machine.running and machine.control == "socket" and machine.boots == 1
        await asyncio.wait_for(online.wait(), 10)
        assert lines[1:] == ["connecting to 127.0.0.1:4433", f"online as {ONLINE_ID} (gw)"]
        await asyncio.wait_for(bridge_saw.wait(), 10)  # UART1 -> bridge
        assert got["up"] == b"\x16\x03\x01\x00\x09\x01\x00\x00\x05hello"
        await asyncio.wait_for(fake.link_got.wait(), 10)  # bridge -> UART1
        assert bytes(fake.link_in) == b"\x16\x03\x03down"
        await machine.write_console("silent 1\n")
        await asyncio.wait_for(fake.console_got.wait(), 10)
        assert bytes(fake.console_in) == b"silent 1\n"
        assert set(fake.ports) == {"uart0", "uart1"}
        assert machine.ports["console"] == fake.ports["uart0"]
        assert machine.ports["link"] == fake.ports["uart1"]
        await machine.reset()
        await machine.power_cut()
        assert not machine.running
        await asyncio.wait_for(fake.fake.finished.wait(), 10)
        assert fake.fake.mismatch is None and fake.fake.completed
        script = tmp_path / "machine" / "device.resc"
        assert machine.history == [f"include @{script}", "machine Reset", "pause", "quit"]
        await asyncio.wait_for(bridge_lost.wait(), 10)  # the bridge saw the emulator go
        with pytest.raises(MachineError, match="not running"):
            await machine.reset()
        with pytest.raises(MachineError, match="not running"):
            await machine.write_console("x")
        await machine.close()
        link_listener.close()
        await link_listener.wait_closed()
        log = (tmp_path / "machine" / "console.log").read_text()
        assert "[harness] power on (boot 1, renode socket" in log
        assert "[harness] reset" in log and log.rstrip().endswith("[harness] power off")
        recorded = (tmp_path / "machine" / "monitor.transcript").read_text()
        assert commands_of(parse_transcript(recorded)) == [
            TOKEN, f"include @{script}", "machine Reset", "pause", "quit"
        ]

    run(scenario())


def test_a_port_taken_under_renode_means_a_new_boot_on_new_ports(tmp_path):
    async def scenario() -> None:
        fakes: list[FakeRenode] = []
        names = ["port-taken", "session"]

        def factory(binary: str, log: Path) -> RenodeProcess:
            fake = FakeRenode(binary, log, name=names[len(fakes)], machine="device_0", chunk=1)
            fakes.append(fake)
            return fake

        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), binary="renode",
            control="socket", sync_token=TOKEN, process_factory=factory,
        )
        await machine.start()
        assert len(fakes) == 2 and machine.boots == 1
        assert fakes[0].ports != fakes[1].ports
        await machine.reset()
        await machine.close()
        for fake in fakes:
            await asyncio.wait_for(fake.fake.finished.wait(), 10)
            assert fake.fake.mismatch is None and fake.fake.completed
        include = f"include @{tmp_path / 'm' / 'device.resc'}"
        assert machine.history == [include, "pause", "quit",
                                   include, "machine Reset", "pause", "quit"]

    run(scenario())


def test_a_refused_platform_is_reported_with_renodes_words_and_a_hint(tmp_path):
    async def scenario() -> None:
        fakes: list[FakeRenode] = []

        def factory(binary: str, log: Path) -> RenodeProcess:
            fake = FakeRenode(binary, log, name="refusal", machine="device_0")
            fakes.append(fake)
            return fake

        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), binary="renode",
            control="socket", sync_token=TOKEN, process_factory=factory,
        )
        with pytest.raises(MachineError) as err:
            await machine.start()
        message = str(err.value)
        assert "Renode refused 'include @" in message
        assert "Could not resolve type: 'Timers.Arm_CMSDK_Timer'" in message
        assert "has no peripheral model Timers.Arm_CMSDK_Timer that the platform uses" in message
        assert not machine.running and machine.boots == 0
        await asyncio.wait_for(fakes[0].fake.finished.wait(), 10)
        assert fakes[0].fake.completed, fakes[0].fake.mismatch
        assert machine.history[1:] == ["pause", "quit"]
        await machine.close()

    run(scenario())


class FakePyrenode3:
    """pyrenode3.wrappers.Monitor's shape: execute(command) -> (output, error) and
    execute_script(path) -> (output, error), blocking. As in Renode, an ``include`` run
    through execute() loses its errors (they go to the monitor's own interaction, which
    only execute_script reads): ``script_error`` is returned by execute_script alone."""

    def __init__(self, loop: asyncio.AbstractEventLoop, script_error: str = "") -> None:
        self.loop = loop
        self.script_error = script_error
        self.commands: list[str] = []
        self.servers: list[asyncio.Server] = []

    def execute(self, command: str) -> tuple[str, str]:
        self.commands.append(command)
        if command.startswith("include @"):
            self._run_script(command.removeprefix("include @"))
            return "", ""  # what pyrenode3's execute() gives back for an include
        return "", ""

    def execute_script(self, path: str) -> tuple[str, str]:
        self.commands.append(f"include @{path}")
        if self.script_error:
            return "", self.script_error
        self._run_script(path)
        return "Starting emulation...\n", ""

    def _run_script(self, path: str) -> None:
        text = Path(path).read_text()
        for port, _ in TERMINAL.findall(text):
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._sink, "127.0.0.1", int(port)), self.loop
            ).result(10)
            self.servers.append(server)

    @staticmethod
    async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()


def test_with_pyrenode3_each_boot_is_a_machine_in_the_shared_emulation(tmp_path):
    async def scenario() -> None:
        fake = FakePyrenode3(asyncio.get_running_loop())
        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), control="pyrenode3",
            monitor=Pyrenode3Monitor(fake),
        )
        await machine.start()
        assert machine.control == "pyrenode3" and machine.running
        script = tmp_path / "m" / "device.resc"
        assert 'mach create "device_0_b1"' in script.read_text()
        await machine.reset()
        await machine.power_cut()
        await machine.start()
        assert 'mach create "device_0_b2"' in script.read_text()
        await machine.close()
        for server in fake.servers:
            server.close()
            await server.wait_closed()
        include = f"include @{script}"
        expected = [
            include, 'mach set "device_0_b1"', "machine Reset",
            'mach set "device_0_b1"', "machine Pause", 'mach rem "device_0_b1"',
            include, 'mach set "device_0_b2"', "machine Pause", 'mach rem "device_0_b2"',
        ]
        assert fake.commands == expected and machine.history == expected
        # errors come through pyrenode3's own error channel
        monitor = Pyrenode3Monitor(types.SimpleNamespace(execute=lambda c: ("", "E: nope")))
        with pytest.raises(MonitorCommandError, match="E: nope"):
            await monitor.execute("start")

    run(scenario())


# --- the process and the UART pipe ---------------------------------------------------------


def _stand_in(tmp: Path, body: str) -> str:
    path = tmp / "renode"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


READY_BODY = """
    import subprocess, sys, time
    port = sys.argv[sys.argv.index("--port") + 1]
    assert "--disable-xwt" in sys.argv
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("\\x1b[32m12:00:00.0000 [INFO] Loaded monitor commands\\x1b[0m", flush=True)
    print(f"12:00:00.0001 [INFO] Monitor available in telnet mode on port {port}", flush=True)
    print(f"child {child.pid}", flush=True)
    time.sleep(600)
"""


def _exits_within(pid: int, timeout: float) -> bool:
    """True once the process has exited (a pidfd turns readable), False after timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def test_the_process_is_ready_when_renode_announces_its_monitor_and_dies_as_a_group(tmp_path):
    async def scenario() -> None:
        child_line: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_log(line: str) -> None:
            if line.startswith("child ") and not child_line.done():
                child_line.set_result(line)

        process = RenodeProcess(_stand_in(tmp_path, READY_BODY), tmp_path / "renode.log",
                                on_log)
        if shutil.which("setpriv"):
            assert process.argv(1)[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
        port = renode_machine.pick_free_ports(1)[0]
        assert await process.start(port, timeout=20) == port
        assert process.running and process.pid in renode_machine._LIVE
        pid = process.pid
        assert not await process.wait(0.05)
        child = int((await asyncio.wait_for(child_line, 10)).split()[1])
        await process.kill()
        assert not process.running and pid not in renode_machine._LIVE
        assert _exits_within(child, 10), "Renode's children must die with it"
        log = (tmp_path / "renode.log").read_text()
        assert "Loaded monitor commands" in log and "\x1b" not in log

    run(scenario())


@pytest.mark.parametrize("body, error, match", [
    ("import sys\nprint('Unhandled Exception: System.Net.Sockets.SocketException "
     "(0x80004005): Address already in use')\nsys.exit(1)\n", _PortLost, "Address already"),
    ("import sys\nprint('Cannot open assembly Renode.exe')\nsys.exit(3)\n", MachineError,
     r"exited \(code 3\) before opening its monitor:\nCannot open assembly"),
    ("import time\nprint('starting', flush=True)\ntime.sleep(600)\n", MachineError,
     "did not open its monitor within 1s:\nstarting"),
])
def test_a_renode_that_does_not_come_up_says_why(tmp_path, body, error, match):
    async def scenario() -> None:
        process = RenodeProcess(_stand_in(tmp_path, body), tmp_path / "renode.log")
        with pytest.raises(error, match=match):
            await process.start(renode_machine.pick_free_ports(1)[0], timeout=1.0)
        assert not process.running and process.pid not in renode_machine._LIVE

    run(scenario())


def test_a_missing_renode_is_a_machine_error_that_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("WASMBED_RENODE", raising=False)

    async def scenario() -> None:
        machine = RenodeMachine("d", tmp_path / "m", _script_factory(tmp_path), control="socket")
        with pytest.raises(MachineError, match=r"renode not found on PATH.*renode\.io"):
            await machine.start()
        await machine.close()

    run(scenario())


def test_the_uart_pipe_copies_both_ways_and_closes_both_sides_together():
    async def scenario() -> None:
        renode_side: dict[str, Any] = {}
        ready = asyncio.Event()

        async def terminal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            renode_side.update(reader=reader, writer=writer)
            ready.set()

        link_got = asyncio.Queue[bytes]()

        async def link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"to-uart")
            await writer.drain()
            while data := await reader.read(100):
                await link_got.put(data)
            await link_got.put(b"<eof>")
            writer.close()

        t_server = await asyncio.start_server(terminal, "127.0.0.1", 0)
        l_server = await asyncio.start_server(link, "127.0.0.1", 0)
        pipe = await UartPipe.open(("127.0.0.1", t_server.sockets[0].getsockname()[1]),
                                   ("127.0.0.1", l_server.sockets[0].getsockname()[1]))
        await ready.wait()
        assert await renode_side["reader"].readexactly(7) == b"to-uart"
        renode_side["writer"].write(b"\x00\xff from uart")
        await renode_side["writer"].drain()
        assert await link_got.get() == b"\x00\xff from uart"
        renode_side["writer"].close()  # Renode quits: the link sees the emulator go
        assert await link_got.get() == b"<eof>"
        await asyncio.wait_for(pipe.closed.wait(), 10)
        assert (pipe.bytes_from_uart, pipe.bytes_to_uart) == (12, 7)
        await pipe.close()
        with pytest.raises(MachineError, match="cannot join UART"):
            await UartPipe.open(("127.0.0.1", t_server.sockets[0].getsockname()[1]),
                                ("127.0.0.1", 1))
        for server in (t_server, l_server):
            server.close()
            await server.wait_closed()

    run(scenario())


# --- the device handle, end to end minus Renode --------------------------------------------


def test_the_renode_device_handle_follows_the_console_and_bridges_the_link(tmp_path):
    from wasmbed_hil.bench.backends.firmware import FirmwareDeviceHandle
    from wasmbed_hil.bench.device import FaultUnsupported, Lifecycle
    from wasmbed_hil.pki import FleetCA

    loop = LoopThread("renode-test-loop")
    try:
        gateway_got: asyncio.Queue[bytes] | None = None

        async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert gateway_got is not None
            await gateway_got.put(await reader.readexactly(14))
            writer.close()

        async def setup() -> tuple[asyncio.Server, Any, Any]:
            nonlocal gateway_got
            gateway_got = asyncio.Queue()
            server = await asyncio.start_server(gateway, "127.0.0.1", 0)
            bridge = Bridge()
            link = await bridge.open_link("device-0", ("127.0.0.1",
                                                       server.sockets[0].getsockname()[1]))
            return server, bridge, link

        server, bridge, link = loop.run(setup())
        fakes: list[FakeRenode] = []

        def factory(binary: str, log: Path) -> RenodeProcess:
            fake = FakeRenode(binary, log, name="session", machine="device_0",
                              console=("connecting to 127.0.0.1:1", f"online as {ONLINE_ID}"),
                              link_out=b"\x16\x03\x01\x00\x09\x01\x00\x00\x05hello")
            fakes.append(fake)
            return fake

        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), link=("127.0.0.1", link.port),
            binary="renode", control="socket", sync_token=TOKEN, process_factory=factory,
        )
        creds = FleetCA.create("t").issue_device("device-0")
        handle = FirmwareDeviceHandle(loop, "device-0", creds, machine, link, backend="renode")
        assert handle.backend == "renode" and handle.lifecycle is Lifecycle.OFF
        handle.power_on()
        assert handle.wait_online(10) == ONLINE_ID
        got = loop.run(asyncio.wait_for(gateway_got.get(), 10))
        assert got == b"\x16\x03\x01\x00\x09\x01\x00\x00\x05hello"
        assert link.stats.uart_connections == 1 and link.stats.upstream_connections == 1
        handle.reset()
        assert handle.lifecycle is Lifecycle.CONNECTING
        with pytest.raises(NotImplementedError, match="renode backend"):
            handle.faults.drop_link_after_chunks(1)
        with pytest.raises(FaultUnsupported, match="renode backend"):
            handle.faults.enroll_with(creds)
        handle.power_off()
        assert handle.lifecycle is Lifecycle.OFF and "renode not running" in handle.extra_seen()
        assert handle.stats()["control"] == "socket" and handle.stats()["boots"] == 1
        handle.close()
        assert fakes[0].fake.completed, fakes[0].fake.mismatch

        async def teardown() -> None:
            await bridge.close()
            server.close()
            await server.wait_closed()

        loop.run(teardown())
    finally:
        assert loop.close() == []


def test_with_pyrenode3_an_error_inside_the_include_is_not_lost(tmp_path):
    # Renode writes an included script's errors to the monitor's own interaction, not to
    # the caller's: the include must go through execute_script to see them.
    refusal = ("There was an error executing command 'machine LoadPlatformDescription @p'\n"
               "Error E04: Could not resolve type: 'Timers.Arm_CMSDK_Timer'.")

    async def scenario() -> None:
        fake = FakePyrenode3(asyncio.get_running_loop(), script_error=refusal)
        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), control="pyrenode3",
            monitor=Pyrenode3Monitor(fake),
        )
        with pytest.raises(MachineError, match=r"has no peripheral model Timers\.Arm_CMSDK_Timer"):
            await machine.start()
        assert not machine.running
        assert fake.commands[0].startswith("include @")
        assert fake.commands[1:] == ['mach set "device_0_b1"', "machine Pause",
                                     'mach rem "device_0_b1"']
        await machine.close()

    run(scenario())


@pytest.mark.parametrize("env, problem", [
    ({}, "set PYRENODE_BUILD_DIR"),
    ({"PYRENODE_PKG": "/p", "PYRENODE_BUILD_DIR": "/b"}, "both set"),
    ({"PYRENODE_BUILD_DIR": "/b"}, "needs PYRENODE_RUNTIME=coreclr"),
    ({"PYRENODE_BUILD_DIR": "/b", "PYRENODE_RUNTIME": "mono"}, "needs PYRENODE_RUNTIME=coreclr"),
    ({"PYRENODE_PKG": "/p", "PYRENODE_RUNTIME": "coreclr"}, "only with a Mono Renode package"),
    ({"PYRENODE_BUILD_DIR": "/b", "PYRENODE_RUNTIME": "dotnet"}, "knows mono and coreclr"),
    ({"PYRENODE_BUILD_DIR": "/b", "PYRENODE_RUNTIME": "coreclr"}, None),
    ({"PYRENODE_PKG": "/p"}, None),
    ({"PYRENODE_PKG": "/p", "PYRENODE_RUNTIME": "mono"}, None),
])
def test_pyrenode3_is_used_only_when_configured_to_load_renode(monkeypatch, env, problem):
    for name in ("PYRENODE_PKG", "PYRENODE_BUILD_DIR", "PYRENODE_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(renode_machine.importlib.util, "find_spec",
                        lambda name: object() if name == "pyrenode3" else None)
    found = renode_machine.pyrenode3_problem()
    if problem is None:
        assert found is None and renode_machine.pyrenode3_configured()
    else:
        assert found is not None and problem in found
        assert not renode_machine.pyrenode3_configured()
    monkeypatch.setattr(renode_machine.importlib.util, "find_spec", lambda name: None)
    if problem is None:  # configured, but pyrenode3 itself is missing
        assert "not installed" in (renode_machine.pyrenode3_problem() or "")


def test_pyrenode3_asked_for_but_misconfigured_makes_the_backend_say_why(monkeypatch):
    from wasmbed_hil.bench.backends.renode import RenodeBackend

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("WASMBED_RENODE", raising=False)
    monkeypatch.setenv("PYRENODE_PKG", "/opt/renode.pkg.tar.zst")
    monkeypatch.setenv("PYRENODE_RUNTIME", "coreclr")
    reason = RenodeBackend.unavailable_reason()
    assert reason is not None and reason.startswith("pyrenode3: PYRENODE_PKG works only")


def test_each_boot_logs_the_console_to_a_file_of_its_own(tmp_path, monkeypatch):
    # Under pyrenode3 a second boot's CreateFileBackend on the first boot's file is refused
    # (the backend outlives `mach rem`): the path follows the per-boot machine name.
    from wasmbed_hil.bench.backends.renode import RenodeBackend

    backend = RenodeBackend.__new__(RenodeBackend)
    backend.board_spec = renode_machine_board()
    backend.binary = None
    monkeypatch.setattr(RenodeBackend, "image_of", lambda self, name: tmp_path / "w.elf")
    (tmp_path / "w.elf").write_bytes(b"")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"")
    machine = backend.make_machine("device-0", tmp_path / "dev", blob,
                                   types.SimpleNamespace(port=1))
    first = machine.script("device_0_b1", 1001, 1002)
    second = machine.script("device_0_b2", 1003, 1004)
    logs = [re.search(r"CreateFileBackend @(\S+) true", text)[1] for text in (first, second)]
    assert logs[0] != logs[1]
    assert all(Path(log).parent == tmp_path / "dev" for log in logs)
    asyncio.run(machine.close())


def renode_machine_board():
    from wasmbed_hil.bench.boards import resolve_board

    return resolve_board()


ANNOUNCE_BODY = """
    import socket, sys, time
    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen(1)
    bound = server.getsockname()[1]
    # Every release up to 1.16.1 logs the requested port (options.Port); newer sources the
    # bound one (socket.Port.Value, infra 39bcc9f63).
    said = port if "{announce}" == "requested" else bound
    print(f"12:00:00.0001 [INFO] Monitor available in telnet mode on port {{said}}", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("announce", ["bound", "requested"])
def test_port_zero_is_taken_from_renodes_announcement_or_refused(tmp_path, announce):
    async def scenario() -> None:
        binary = _stand_in(tmp_path, ANNOUNCE_BODY.format(announce=announce))
        process = RenodeProcess(binary, tmp_path / "renode.log")
        try:
            if announce == "bound":
                port = await process.start(0, timeout=20)
                assert port > 0 and process.running
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass  # the announced port is the one Renode listens on
            else:
                with pytest.raises(PortNotAnnounced, match="announced port 0"):
                    await process.start(0, timeout=20)
                assert not process.running and process.pid not in renode_machine._LIVE
        finally:
            await process.kill()

    run(scenario())


def test_a_machine_falls_back_to_a_picked_monitor_port_when_renode_announces_0(tmp_path):
    # The driver's side of a release: --port 0 first, then (for good) a port picked here.
    starts: list[int] = []

    class Announces0(RenodeProcess):
        async def start(self, port: int, timeout: float) -> int:
            starts.append(port)
            if port == 0:
                raise PortNotAnnounced("announced port 0")
            raise MachineError("stop here")  # the fallback start is what this test checks

    async def scenario() -> None:
        machine = RenodeMachine("d", tmp_path / "m", _script_factory(tmp_path),
                                control="socket", binary="renode", attempts=1,
                                process_factory=Announces0)
        with pytest.raises(MachineError, match="stop here"):
            await machine.start()
        assert starts[0] == 0 and starts[1] > 0 and not machine.port_zero
        with pytest.raises(MachineError, match="stop here"):
            await machine.start()
        assert starts[2] > 0  # no second try of --port 0
        await machine.close()

    run(scenario())


class PortTakenOnce(FakePyrenode3):
    """A shared emulation whose first include finds a terminal port taken."""

    def execute_script(self, path: str) -> tuple[str, str]:
        if not any(c.startswith("include @") for c in self.commands):
            self.commands.append(f"include @{path}")
            return "", ("Unable to create '0.0.0.0:4001' socket:[AddressAlreadyInUse] "
                        "Address already in use")
        return super().execute_script(path)


def test_in_a_shared_emulation_a_retry_after_a_taken_port_is_a_new_machine(tmp_path):
    # The first attempt's terminals keep their names in the emulation after `mach rem`, so
    # the retry must not reuse the machine name (it would be refused).
    async def scenario() -> None:
        fake = PortTakenOnce(asyncio.get_running_loop())
        machine = RenodeMachine(
            "device_0", tmp_path / "m", _script_factory(tmp_path), control="pyrenode3",
            monitor=Pyrenode3Monitor(fake),
        )
        await machine.start()
        assert machine.running and machine.boots == 1
        script = (tmp_path / "m" / "device.resc").read_text()
        assert 'mach create "device_0_b2"' in script and "device_0_b1" not in script
        assert machine.current_machine == "device_0_b2"
        await machine.close()
        for server in fake.servers:
            server.close()
            await server.wait_closed()

    run(scenario())
