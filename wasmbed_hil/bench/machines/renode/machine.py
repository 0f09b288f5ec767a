"""One emulated device in Renode: its process (or pyrenode3), its monitor, console and UART.

Control, chosen per machine (``control=``):

- ``"socket"``: one ``renode --disable-xwt --port P`` process per boot, driven through its
  monitor's telnet port (monitor.MonitorClient). A power cut sends ``pause`` and ``quit``
  and kills the process group if it has not exited in a few seconds; the next power-on
  starts a new process, so RAM is lost and the blob and image are loaded afresh.
- ``"pyrenode3"``: Renode inside this Python process through pyrenode3 (used by "auto"
  when pyrenode3 is importable and configured so that it can load Renode:
  pyrenode3_problem()). All machines of the process share one emulation; a power cut
  pauses and removes the machine. Each boot uses a new machine name (``<name>_b<N>``),
  because the socket terminals and UART file backends of a removed machine keep their
  names (and ports, and files) until the process exits; the backend names the console log
  after the machine, so each boot has its own.
- ``"remote"``: a machine of renode-test's own Renode, the script sent command by command
  through its Robot keyword server (remote.py; the renode-test backend). Named per boot
  as with pyrenode3; a power cut is ``machine Pause`` and ``mach rem``.

Boot (both): render the script (renode/wasmbed-device.resc or a board template) with fresh
ports, ``include @<script>`` (the script loads the platform, the image and the blob, opens
the two socket terminals and starts), then connect to the console terminal (lines go to
``console`` and console.log, as with QemuMachine) and pipe the link terminal into the
bridge's link listener (UartPipe). Reset is ``machine Reset``: Renode resets the CPU and the
peripherals and runs the script's ``reset`` macro, which loads the image and blob again.

Ports. The monitor: ``renode --port 0`` lets Renode bind a free port, and Renode sources
after infra 39bcc9f63 (2026-05-08) log the bound one ("Monitor available in telnet mode on
port N"), so there is no race. Every release up to 1.16.1 logs the requested 0 instead
(PortNotAnnounced): then, for this machine and (through bench.machines.renode.probe) for
the backend's later machines, a port is proposed: pick_free_ports has the kernel choose
one (bind to port 0) and releases it for Renode to bind, and another process can take it
during Renode's start-up. The terminal ports are always proposed this way (Renode binds
them itself, on 0.0.0.0): they are picked only once the monitor answers, right before
``include``, and the script creates the terminals first, so their window is one monitor
round trip. When a port is lost Renode says so (it exits before announcing its monitor,
the monitor does not answer as Renode does, or CreateServerSocketTerminal fails with an
address-in-use error): the boot is torn down and retried with new ports, ``attempts``
times in all.

GDB (pytest --hil-gdb, bench.machines.gdb): right after ``include`` the machine sends
``machine StartGdbServer PORT`` (its port picked with the terminals' and as racy as theirs:
Renode binds it itself); ``halted`` first pauses the emulation and resets the machine
(``pause``, ``machine Reset``: the CPU at its reset vector) and passes Renode's
autostartEmulation flag (``machine StartGdbServer PORT true``), so the emulation goes on
when a debugger attaches and continues. Written from Renode's documentation and sources,
not run here (Renode cannot be installed on this project's machines):
tests/test_renode_gdb.py checks the commands against a transcript written from them.

No process outlives the harness: each runs in its own process group under
``setpriv --pdeathsig KILL`` where available, is killed as a group when it does not quit,
and an atexit hook kills whatever is still registered.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ....aio import cancel_and_wait
from ...consolelog import ConsoleLog
from ...errors import MachineDied, MachineError
from ...link.pump import Pump
from ..gdb import GdbRequest, attach_hint
from .monitor import (
    MonitorClient,
    MonitorCommandError,
    MonitorError,
    MonitorTransport,
    Pyrenode3Monitor,
)
from .refusals import MISSING_TYPE, PortNotAnnounced, missing_types
from .remote import RemoteControl, RemoteMonitor
from .scripts import check_name, include_command

log = logging.getLogger(__name__)

Endpoint = tuple[str, int]
#: (machine name, link port, console port) -> the script's text
ScriptFactory = Callable[[str, int, int], str]

READY = re.compile(r"Monitor available in telnet mode on port (\d+)")
PORT_IN_USE = re.compile(
    r"address already in use|EADDRINUSE|only one usage of each socket address"
    r"|could not bind|SocketException",
    re.IGNORECASE,
)
#: Renode's refusal of a peripheral type it has no model of (Error E04), naming the type.
MISSING_MODEL = MISSING_TYPE
ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[@-~]|.)")
READ_SIZE = 16 * 1024

_LIVE: set[int] = set()  # process groups of running Renode processes


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class _PortLost(Exception):
    """A port picked for Renode was taken before Renode bound it: retry with new ports."""


def pick_free_ports(count: int, host: str = "0.0.0.0") -> list[int]:
    """``count`` distinct ports that are free now (bound together, then all released).

    Renode binds its ports on all interfaces, so they are probed there too."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def find_renode(explicit: str | None = None) -> str | None:
    """The renode executable: ``explicit``, else $WASMBED_RENODE, else ``renode`` on PATH."""
    candidate = explicit or os.environ.get("WASMBED_RENODE") or "renode"
    if os.sep in candidate:
        return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    return shutil.which(candidate)


def pyrenode3_requested() -> bool:
    """One of pyrenode3's variables is set: the user means Renode to run in-process."""
    return bool(os.environ.get("PYRENODE_PKG") or os.environ.get("PYRENODE_BUILD_DIR"))


def pyrenode3_problem() -> str | None:
    """Why pyrenode3 cannot load Renode as configured, or None when it can (as far as its
    variables tell; pyrenode3 __init__.py decides the same way, and raises at import).

    Renode is a .NET 8 program since 1.16: pyrenode3 loads it from a source build
    (PYRENODE_BUILD_DIR) with PYRENODE_RUNTIME=coreclr. PYRENODE_PKG takes only the old
    Mono Arch package (PYRENODE_RUNTIME=mono, pyrenode3's default); with coreclr pyrenode3
    refuses it ("Using dotnet package is not supported")."""
    pkg = os.environ.get("PYRENODE_PKG")
    build = os.environ.get("PYRENODE_BUILD_DIR")
    runtime = os.environ.get("PYRENODE_RUNTIME", "mono")
    if not (pkg or build):
        return ("pyrenode3 is not configured: set PYRENODE_BUILD_DIR to a Renode build "
                "directory and PYRENODE_RUNTIME=coreclr")
    if pkg and build:
        return "PYRENODE_PKG and PYRENODE_BUILD_DIR are both set (pyrenode3 takes one)"
    if runtime not in ("mono", "coreclr"):
        return f"PYRENODE_RUNTIME={runtime!r}: pyrenode3 knows mono and coreclr"
    if pkg and runtime != "mono":
        return ("PYRENODE_PKG works only with a Mono Renode package (PYRENODE_RUNTIME=mono); "
                "for a .NET Renode set PYRENODE_BUILD_DIR and PYRENODE_RUNTIME=coreclr")
    if build and runtime != "coreclr":
        return ("PYRENODE_BUILD_DIR needs PYRENODE_RUNTIME=coreclr (current Renode builds "
                "for .NET 8; pyrenode3's default runtime, mono, does not load it)")
    if importlib.util.find_spec("pyrenode3") is None:
        return "pyrenode3 is not installed (pip install pyrenode3)"
    return None


def pyrenode3_configured() -> bool:
    """pyrenode3 is importable and configured so that it can load Renode."""
    return pyrenode3_problem() is None


def _set_quickack(sock: socket.socket | None) -> None:
    # Renode's terminal socket sets NoDelay (infra SocketsManager.cs:51, :86) and writes
    # one byte per Write (SocketServerProvider.cs): many small segments. Answering each at
    # once keeps our delayed ACK (about 40 ms) out of the reply path; harmless otherwise.
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _nodelay(writer: asyncio.StreamWriter) -> socket.socket | None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock  # type: ignore[no-any-return]


class UartPipe:
    """Joins a Renode socket terminal to the bridge's link listener.

    Renode serves a UART as a TCP server; the bridge's link (wasmbed_hil.bench.link.bridge) is a
    listener that the emulator dials, as QEMU does. This pipe dials both and copies bytes
    each way unchanged (a byte pump, wasmbed_hil.bench.link.pump: up is UART -> link), so the
    bridge sees an emulator connect when the machine boots and disconnect when it is powered
    off, exactly as with QEMU: when one side goes, the pump closes both.
    """

    def __init__(self, pump: Pump) -> None:
        self.pump = pump

    @property
    def closed(self) -> asyncio.Event:
        return self.pump.ended

    @property
    def bytes_from_uart(self) -> int:
        return self.pump.up.bytes

    @property
    def bytes_to_uart(self) -> int:
        return self.pump.down.bytes

    @classmethod
    async def open(cls, uart: Endpoint, link: Endpoint, timeout: float = 10.0) -> UartPipe:
        opened: list[asyncio.StreamWriter] = []
        try:
            u_reader, u_writer = await asyncio.wait_for(asyncio.open_connection(*uart), timeout)
            opened.append(u_writer)
            l_reader, l_writer = await asyncio.wait_for(asyncio.open_connection(*link), timeout)
            opened.append(l_writer)
        except (OSError, TimeoutError) as exc:
            for writer in opened:
                writer.close()
            raise MachineError(f"cannot join UART {uart} to link {link}: {exc}") from exc
        u_sock = _nodelay(u_writer)
        _nodelay(l_writer)
        pump = Pump((u_reader, u_writer), (l_reader, l_writer),
                    on_read_up=lambda: _set_quickack(u_sock), read_size=READ_SIZE)
        return cls(pump.start())

    async def close(self) -> None:
        await self.pump.close()


class ConsoleTerminal:
    """The console UART's socket terminal: lines in, text out."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        on_line: Callable[[str], None], on_eof: Callable[[], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_line = on_line
        self._on_eof = on_eof
        self._task = asyncio.create_task(self._read(reader))

    @classmethod
    async def open(
        cls, endpoint: Endpoint, on_line: Callable[[str], None], timeout: float = 10.0,
        on_eof: Callable[[], None] | None = None,
    ) -> ConsoleTerminal:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*endpoint, limit=1 << 20), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise MachineError(f"cannot connect to the console terminal {endpoint}: {exc}") from exc
        _nodelay(writer)
        return cls(reader, writer, on_line, on_eof)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError, ValueError):
            while line := await reader.readline():
                self._on_line(line.decode("utf-8", "replace").rstrip("\r\n"))
        if self._on_eof is not None:  # Renode closed the terminal (not our close())
            self._on_eof()

    async def write(self, text: str) -> None:
        self._writer.write(text.encode())
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        await cancel_and_wait([self._task])


class RenodeProcess:
    """``renode --disable-xwt --port P``: started, watched for its monitor, stopped."""

    def __init__(self, binary: str, log: Path, on_log: Callable[[str], None] | None = None):
        self.binary = binary
        self.log_path = log
        self.on_log = on_log
        self.output: list[str] = []  # the last lines of Renode's log (stdout and stderr)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[int] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def argv(self, port: int) -> list[str]:
        wrapper = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        return [*wrapper, self.binary, "--disable-xwt", "--port", str(port)]

    async def start(self, port: int, timeout: float) -> int:
        """Launch and wait for "Monitor available in telnet mode on port P"; returns P.
        ``port`` 0 lets Renode pick one (returned as announced; PortNotAnnounced when this
        Renode announces 0). Raises _PortLost when Renode could not bind the port,
        MachineError otherwise."""
        argv = self.argv(port)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            raise MachineError(f"cannot start {argv[0]}: {exc}") from exc
        _LIVE.add(self._proc.pid)
        self._ready = asyncio.get_running_loop().create_future()
        assert self._proc.stdout is not None
        self._reader = asyncio.create_task(self._read_log(self._proc.stdout, port))
        exited = asyncio.ensure_future(self._proc.wait())
        try:
            done, _ = await asyncio.wait({self._ready, exited}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if self._ready in done:
            if self._ready.exception() is not None:
                await self.kill()
            return self._ready.result()
        await self.kill()
        tail = self.report()
        if not done:
            raise MachineError(f"renode did not open its monitor within {timeout:g}s:\n{tail}")
        if PORT_IN_USE.search(tail):
            raise _PortLost(f"monitor port {port}: {tail.splitlines()[-1] if tail else ''}")
        raise MachineError(
            f"renode exited (code {self._proc.returncode}) before opening its monitor:\n{tail}"
        )

    async def _read_log(self, stream: asyncio.StreamReader, port: int) -> None:
        with self.log_path.open("a") as log:
            while raw := await stream.readline():
                line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                self.output = [*self.output[-199:], line]
                if self.on_log is not None:
                    self.on_log(line)
                m = READY.search(line)
                ready = self._ready
                if m is None or ready is None or ready.done():
                    continue
                announced = int(m.group(1))
                if port == 0 and announced == 0:  # a release: it logs the requested port
                    ready.set_exception(PortNotAnnounced(
                        f"{self.binary} announced port 0 for --port 0 (it logs the requested "
                        "port, not the bound one)"))
                elif announced == port or (port == 0 and announced > 0):
                    ready.set_result(announced)

    def report(self) -> str:
        return "\n".join(self.output[-40:]).strip()

    async def wait(self, timeout: float) -> bool:
        """True when the process exited within timeout."""
        if self._proc is None:
            return True
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        else:  # the leader exited on its own; children left in its group die with it here
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        _LIVE.discard(proc.pid)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)
            await cancel_and_wait([self._reader])

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None


class _SocketControl:
    """One Renode process per boot, driven through the monitor's telnet port."""

    kind = "socket"

    def __init__(self, machine: RenodeMachine) -> None:
        self.m = machine
        self.process: RenodeProcess | None = None
        self.monitor: MonitorTransport | None = None
        self.port: int | None = None  # the monitor port of this boot
        self._record: TextIO | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def has_state(self) -> bool:
        """Something of an earlier boot is left (a Renode that died on its own)."""
        return self.process is not None or self.monitor is not None

    async def boot(self, name: str, prepare: Callable[[], Path], monitor_port: int) -> None:
        m = self.m
        binary = m.binary or find_renode()
        if binary is None:
            raise MachineError(
                "renode not found on PATH (install Renode 1.15 or newer from https://renode.io, "
                "or set WASMBED_RENODE)"
            )
        self.process = m.process_factory(binary, m.workdir / "renode.log")
        if monitor_port == 0:
            try:
                monitor_port = await self.process.start(0, m.start_timeout)
            except PortNotAnnounced:
                m.port_zero = False  # this Renode logs the requested port: pick one from now
                await self.process.kill()
                monitor_port = pick_free_ports(1)[0]
                self.process = m.process_factory(binary, m.workdir / "renode.log")
                await self.process.start(monitor_port, m.start_timeout)
        else:
            await self.process.start(monitor_port, m.start_timeout)
        self.port = monitor_port
        self._record = (m.workdir / "monitor.transcript").open("a", buffering=1)
        self._record.write(f"# boot {m.boots + 1}: {' '.join(self.process.argv(monitor_port))}\n")
        try:
            client = await MonitorClient.connect(
                "127.0.0.1", monitor_port, timeout=m.start_timeout, record=self._record,
                sync_token=m.sync_token,
            )
        except MonitorError as exc:
            # Refused or not Renode's answers: another process may own the port.
            raise _PortLost(f"monitor port {monitor_port}: {exc}") from exc
        self.monitor = client
        await m.run(self.monitor, include_command(prepare()), m.include_timeout)

    async def reset(self) -> None:
        await self.m.run(self._need_monitor(), "machine Reset", 30)

    def _need_monitor(self) -> MonitorTransport:
        if self.monitor is None:
            raise MachineError(f"{self.m.name}: not running")
        return self.monitor

    async def power_cut(self) -> None:
        monitor, self.monitor = self.monitor, None
        process, self.process = self.process, None
        if monitor is not None:
            if process is None or process.running:
                with contextlib.suppress(MonitorError):
                    self.m.history.append("pause")
                    await monitor.execute("pause", timeout=5, check=False)
                    self.m.history.append("quit")
                    await monitor.quit(timeout=5)
            monitor.close()
        if process is not None:
            await process.wait(5)
            await process.kill()
            self.m.last_report = process.report()
        if self._record is not None:
            self._record.close()
            self._record = None

    def report(self) -> str:
        return self.process.report() if self.process else self.m.last_report

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class _Pyrenode3Control:
    """Renode inside this process (pyrenode3): one shared emulation, a machine per boot."""

    kind = "pyrenode3"
    _shared: MonitorTransport | None = None  # one Renode per Python process

    def __init__(self, machine: RenodeMachine, monitor: MonitorTransport | None = None) -> None:
        self.m = machine
        self._monitor = monitor
        self.current: str | None = None

    @property
    def monitor(self) -> MonitorTransport:
        if self._monitor is None:
            if _Pyrenode3Control._shared is None:
                if problem := pyrenode3_problem():
                    raise MachineError(f"{self.m.name}: {problem}")
                _Pyrenode3Control._shared = Pyrenode3Monitor.load()
            self._monitor = _Pyrenode3Control._shared
        return self._monitor

    @property
    def running(self) -> bool:
        return self.current is not None

    has_state = running

    async def boot(self, name: str, prepare: Callable[[], Path], monitor_port: int) -> None:
        self.current = name
        await self.m.run(self.monitor, include_command(prepare()), self.m.include_timeout)

    async def reset(self) -> None:
        if self.current is None:
            raise MachineError(f"{self.m.name}: not running")
        await self.m.run(self.monitor, f'mach set "{check_name(self.current)}"', 10)
        await self.m.run(self.monitor, "machine Reset", 30)

    async def power_cut(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        for command in (f'mach set "{current}"', "machine Pause", f'mach rem "{current}"'):
            self.m.history.append(command)
            with contextlib.suppress(MonitorError):
                await self.monitor.execute(command, timeout=10, check=False)

    def report(self) -> str:
        return self.m.last_report

    @property
    def pid(self) -> int | None:
        return os.getpid() if self.current else None


class RenodeMachine:
    """A Renode machine: a bench.machines.base.Machine, as QemuMachine is, so the firmware
    device handle and the harness treat both alike.

    ``script(machine_name, link_port, console_port)`` renders the script for one boot;
    ``link`` is the bridge link's listener that the UART pipe joins (None: no pipe).
    ``sync_token``, ``monitor`` (a pyrenode3 transport) and ``process_factory`` let tests
    stand in for Renode; ``history`` lists every monitor command sent, over all boots.
    """

    label = "renode"

    def __init__(
        self,
        name: str,
        workdir: Path,
        script: ScriptFactory,
        *,
        link: Endpoint | None = None,
        on_line: Callable[[str], None] | None = None,
        binary: str | None = None,
        control: str = "auto",
        attempts: int = 3,
        start_timeout: float = 40.0,
        include_timeout: float = 60.0,
        sync_token: str | None = None,
        monitor: MonitorTransport | None = None,
        process_factory: Callable[[str, Path], RenodeProcess] = RenodeProcess,
        port_zero: bool = True,
        gdb: GdbRequest | None = None,
        image: Path | None = None,
    ) -> None:
        self.name = check_name(name, "machine name")
        self.gdb = gdb
        self.image = image  # the ELF, for the debugger's attach command
        #: The port of this boot's GDB server (picked before include, started after it).
        self.gdb_port: int | None = None
        self.workdir = workdir
        self.script = script
        self.link = link
        self.on_line = on_line
        self.binary = binary
        self.attempts = attempts
        self.start_timeout = start_timeout
        self.include_timeout = include_timeout
        self.sync_token = sync_token
        self.process_factory = process_factory
        #: Start Renode with --port 0 (cleared for good once it announces port 0).
        self.port_zero = port_zero
        self.console = ConsoleLog()
        self.died: MachineDied | None = None
        self.boots = 0
        self.started_at = 0.0
        self.last_report = ""
        self.ports: dict[str, int] = {}
        self.history: list[str] = []  # every monitor command sent, over all boots
        self.pipe: UartPipe | None = None
        self._console: ConsoleTerminal | None = None
        self._cutting = False  # a power cut by the harness is under way
        self._death: asyncio.Task[None] | None = None
        self._attempts_named = 0  # boot attempts named so far (shared emulations)
        if control == "auto":
            control = "pyrenode3" if pyrenode3_configured() else "socket"
        if control == "socket":
            self._control: _SocketControl | _Pyrenode3Control | RemoteControl = (
                _SocketControl(self))
        elif control == "pyrenode3":
            self._control = _Pyrenode3Control(self, monitor)
        elif control == "remote":  # a machine of renode-test's Renode: see remote.py
            if not isinstance(monitor, RemoteMonitor):
                raise ValueError("control='remote' needs monitor=RemoteMonitor(url)")
            self._control = RemoteControl(self, monitor)
        else:
            raise ValueError(
                f"control must be auto, socket, pyrenode3 or remote, not {control!r}")
        workdir.mkdir(parents=True, exist_ok=True)
        self._console_file = (workdir / "console.log").open("a", buffering=1)

    @property
    def control(self) -> str:
        return self._control.kind

    @property
    def running(self) -> bool:
        return self._control.running

    @property
    def current_machine(self) -> str | None:
        """The Renode machine of this boot (``<name>_b<N>`` in a shared emulation), or None
        when powered off: what Renode's own keywords take as ``machine=``."""
        if not self.running:
            return None
        return getattr(self._control, "current", None) or self.name

    @property
    def pid(self) -> int | None:
        return self._control.pid

    def _line(self, text: str) -> None:
        self.console.append(text)
        self._console_file.write(text + "\n")
        if self.on_line is not None:
            self.on_line(text)

    async def run(self, monitor: MonitorTransport, command: str, timeout: float) -> None:
        """One command through ``monitor``; Renode's errors become MachineError (or a retry
        when a port was taken)."""
        self.history.append(command)
        try:
            await monitor.execute(command, timeout=timeout)
        except MonitorCommandError as exc:
            text = "\n".join([*exc.reply.errors, exc.reply.output])
            if PORT_IN_USE.search(text):
                raise _PortLost(text) from exc
            hint = ""
            if missing := missing_types(text):
                hint = (
                    f"\nThis Renode has no peripheral model {', '.join(missing)} that the "
                    "platform uses (Error E04; see renode/README.md)."
                )
            raise MachineError(f"{self.name}: Renode refused {command!r}:\n{text}{hint}") from exc
        except MonitorError as exc:
            raise MachineError(f"{self.name}: {exc}") from exc

    def _boot_name(self) -> str:
        """The machine name of the next boot attempt. In a shared emulation (pyrenode3,
        remote) every attempt gets a new name, a retry after a taken port included: the
        terminals of a removed machine keep their names until the emulation ends."""
        if self._control.kind != "socket":
            self._attempts_named += 1
            return check_name(f"{self.name[:40]}_b{self._attempts_named}", "machine name")
        return self.name

    async def start(self) -> None:
        if self.running:
            return
        if self._console is not None or self.pipe is not None or self._control.has_state:
            await self.power_cut()  # Renode ended on its own: clear what is left of it
        name = self.name
        script = self.workdir / "device.resc"
        terminal_ports: list[int] = []

        def prepare() -> Path:
            # Called right before `include`: the terminal ports' window is one round trip.
            ports = pick_free_ports(2 if self.gdb is None else 3)
            terminal_ports[:] = ports[:2]
            self.gdb_port = ports[2] if self.gdb is not None else None
            script.write_text(self.script(name, *terminal_ports))
            return script

        problems: list[str] = []
        for _ in range(self.attempts):
            # --port 0 (Renode binds a free port and says which) removes the monitor port's
            # race where Renode announces the bound port; otherwise a port picked here.
            monitor_port = 0 if self.port_zero else pick_free_ports(1)[0]
            name = self._boot_name()
            try:
                await self._control.boot(name, prepare, monitor_port)
                monitor_port = getattr(self._control, "port", None) or monitor_port
                await self._start_gdb()
                break
            except _PortLost as exc:
                problems.append(str(exc))
                await self._control.power_cut()
            except BaseException:
                await self._control.power_cut()
                raise
        else:
            raise MachineError(
                f"{self.name}: ports taken before Renode could bind them, {self.attempts} "
                "times:\n" + "\n".join(problems)
            )
        link_port, console_port = terminal_ports
        self.ports = {"monitor": monitor_port, "link": link_port, "console": console_port}
        if self.gdb_port is not None:
            self.ports["gdb"] = self.gdb_port
        self.boots += 1
        self.started_at = time.monotonic()
        self.died = None
        self.console.end(None)
        self._line(f"[harness] power on (boot {self.boots}, renode {self._control.kind}, "
                   f"pid {self.pid})")
        if self.gdb_port is not None:
            hint = self.gdb_hint()
            self._line(f"[harness] {hint}")
            log.warning("%s", hint)
        try:
            self._console = await ConsoleTerminal.open(("127.0.0.1", console_port), self._line,
                                                       on_eof=self._console_closed)
            if self.link is not None:
                self.pipe = await UartPipe.open(("127.0.0.1", link_port), self.link)
        except BaseException:
            await self.power_cut()
            raise

    async def _start_gdb(self) -> None:
        """The GDB server of this boot (after include: the machine exists and runs)."""
        if self.gdb is None or self.gdb_port is None:
            return
        monitor = self._control.monitor
        assert monitor is not None
        if self.gdb.halted:
            await self.run(monitor, "pause", 30)
            await self.run(monitor, "machine Reset", 30)
        autostart = " true" if self.gdb.halted else ""
        await self.run(monitor, f"machine StartGdbServer {int(self.gdb_port)}{autostart}", 30)

    def gdb_hint(self) -> str:
        """How to attach a debugger ("" without a GDB server)."""
        if self.gdb is None or self.gdb_port is None:
            return ""
        return attach_hint(self.image or "path/to/wasmbed.elf", self.gdb_port, self.name,
                           self.gdb.halted)
    def _console_closed(self) -> None:
        """Renode closed the console terminal: unless the harness is cutting the power, the
        process ended on its own; record its death once it has exited."""
        if not self._cutting and self._death is None:
            self._death = asyncio.create_task(self._record_death())

    async def _record_death(self) -> None:
        process = getattr(self._control, "process", None)
        if process is None or not await process.wait(5) or self._cutting:
            self._death = None
            return  # in-process Renode, a process still running, or a power cut meanwhile
        status = process.returncode
        self.died = MachineDied(self.name, "renode", status, self.console.tail(),
                                self.exit_report())
        self._line(f"[harness] renode exited on its own (status {status})")
        self.console.end(self.died)
        self._death = None

    async def power_cut(self) -> None:
        """Stop the machine now (pause, then quit or remove it); RAM is lost."""
        was_running = self.running or self._console is not None
        self._cutting = True
        try:
            if self._death is not None:
                await cancel_and_wait([self._death])
                self._death = None
            await self._control.power_cut()
            if self.pipe is not None:
                await self.pipe.close()
                self.pipe = None
            if self._console is not None:
                await self._console.close()
                self._console = None
        finally:
            self._cutting = False
        if was_running:
            self._line("[harness] power off")

    async def reset(self) -> None:
        """``machine Reset``: CPU and peripherals reset, the reset macro reloads image and blob."""
        if not self.running:
            raise MachineError(f"{self.name}: cannot reset, not running")
        await self._control.reset()
        self._line("[harness] reset")

    async def write_console(self, text: str) -> None:
        """Type text into the console UART."""
        if self._console is None:
            raise MachineError(f"{self.name}: not running")
        await self._console.write(text)

    async def close(self) -> None:
        await self.power_cut()
        self._console_file.close()

    def exit_report(self) -> str:
        """Renode's last log lines (for errors that say why it stopped)."""
        return self._control.report()[-2000:]

    def stats(self) -> dict[str, object]:
        return {"boots": self.boots, "control": self.control}
