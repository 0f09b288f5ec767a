"""The stand-in's emulation (see server.py): machines run by QEMU, Renode-like socket
terminals, file backends and terminal testers, and the monitor commands it accepts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from wasmbed_hil.bench.machines.qemu import qemu_command


class KeywordError(Exception):
    """A keyword failed: Renode answers status FAIL with this text."""


class Terminal:
    """A server socket terminal (raw): one client at a time; what the UART sends before a
    client connects is kept for it."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("0.0.0.0", port))
        except OSError as exc:
            self.sock.close()
            raise KeywordError(f"SocketException: could not bind port {port}: {exc}") from exc
        self.sock.listen(1)
        self.lock = threading.Lock()
        self.client: socket.socket | None = None
        self.pending = bytearray()
        self.on_input: Any = None  # callable(bytes)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                old, self.client = self.client, conn
                if self.pending:
                    with contextlib.suppress(OSError):
                        conn.sendall(bytes(self.pending))
                    self.pending.clear()
            if old is not None:
                old.close()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                if self.on_input is not None:
                    self.on_input(data)
        with self.lock:
            if self.client is conn:
                self.client = None

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.client is None:
                self.pending += data
                return
            try:
                self.client.sendall(data)
            except OSError:
                self.client = None

    def close(self) -> None:
        self.closed = True
        with self.lock:
            client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Tester:
    """A terminal tester: the lines of one UART since it was created, waited on."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.cond = threading.Condition()
        self.lines: list[str] = []
        self.partial = ""
        self.next = 0
        self.write: Any = None  # callable(bytes): the UART's input

    def feed(self, text: str) -> None:
        with self.cond:
            self.partial += text
            *done, self.partial = self.partial.replace("\r", "").split("\n")
            self.lines += done
            self.cond.notify_all()

    def wait_for(self, content: str, timeout: float, regex: bool) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(self.next, len(self.lines)):
                    line = self.lines[i]
                    match = re.search(content, line) if regex else (content in line)
                    if match:
                        self.next = i + 1
                        groups = list(match.groups()) if regex else []  # type: ignore[union-attr]
                        return terminal_result(line, groups)
                self.next = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KeywordError(f"Terminal tester failed!\n\nExpected: {content!r} "
                                       f"within {timeout:g}s; last lines:\n"
                                       + "\n".join(self.lines[-10:]))
                self.cond.wait(left)


class Machine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.platform: str | None = None
        self.uarts: dict[str, Terminal] = {}
        self.file_backends: dict[str, Path] = {}
        self.elf: str | None = None
        self.blob: tuple[str, int] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.link_listener: socket.socket | None = None
        self.testers: list[Tester] = []
        self.lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            if self.proc is not None:
                os.kill(self.proc.pid, signal.SIGCONT)
            return
        if self.elf is None or self.blob is None:
            raise KeywordError(f"machine {self.name}: nothing loaded (LoadELF, LoadBinary)")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.link_listener = listener
        argv = qemu_command(Path(self.elf), Path(self.blob[0]), listener.getsockname()[1])
        argv = [a if not a.startswith("loader,") else
                f"loader,file={self.blob[0]},addr={self.blob[1]:#x},force-raw=on" for a in argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._link, args=(listener,), daemon=True).start()
        threading.Thread(target=self._console, args=(self.proc,), daemon=True).start()
        console = self.uarts.get("uart0")
        if console is not None:
            console.on_input = self.write_console

    def _link(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        terminal = self.uarts.get("uart1")
        if terminal is None:
            conn.close()
            return
        terminal.on_input = lambda data: _send_quietly(conn, data)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                terminal.send(data)
        conn.close()

    def _console(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        log = None
        if "uart0" in self.file_backends:
            log = self.file_backends["uart0"].open("ab", buffering=0)
        try:
            while data := proc.stdout.read1(65536):
                terminal = self.uarts.get("uart0")
                if terminal is not None:
                    terminal.send(data)
                if log is not None:
                    log.write(data)
                for tester in list(self.testers):
                    tester.feed(data.decode("utf-8", "replace"))
        finally:
            if log is not None:
                log.close()

    def write_console(self, data: bytes) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(data)
                proc.stdin.flush()

    def pause(self) -> None:
        if self.running and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.link_listener is not None:
            self.link_listener.close()
            self.link_listener = None


def terminal_result(line: str, groups: list[str]) -> dict[str, Any]:
    """A TerminalTesterResult (infrastructure 0c7d0762, TerminalTester.cs:872) as a struct of
    its public members; how XML-RPC.NET names them on the wire is not verified."""
    return {"Line": line, "Timestamp": 0.0, "Groups": groups, "IsFailingString": False}


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)


def flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


class Emulation:
    """What the keywords act on: machines, socket terminals, file backends, testers."""

    def __init__(self, missing_types: tuple[str, ...] = ()) -> None:
        self.lock = threading.RLock()
        self.missing_types = missing_types
        self.machines: dict[str, Machine] = {}
        self.terminals: dict[str, Terminal] = {}
        self.file_backends: set[str] = set()
        self.current: Machine | None = None
        self.testers: list[Tester] = []
        self.uart_timeout = 8.0
        self.started = False

    def clear(self) -> None:
        with self.lock:
            for machine in self.machines.values():
                machine.stop()
            for terminal in self.terminals.values():
                terminal.close()
            self.__init__(self.missing_types)  # type: ignore[misc]

    # --- monitor commands --------------------------------------------------------------
    def command(self, command: str, machine: str | None = None) -> str:
        with self.lock:
            if machine:
                if machine not in self.machines:
                    raise KeywordError(f"Could not find machine named {machine} in the emulation")
                self.current = self.machines[machine]
            try:
                return self._command(command.strip())
            except KeywordError as exc:
                raise KeywordError(f"There was an error when executing command '{command}': "
                                   f"{exc}") from None

    def _need_machine(self) -> Machine:
        if self.current is None:
            raise KeywordError("No machine selected")
        return self.current

    def _command(self, c: str) -> str:
        if m := re.fullmatch(r'emulation CreateServerSocketTerminal (\d+) "(\w+)" false', c):
            if m.group(2) in self.terminals:
                raise KeywordError(f"Name {m.group(2)} is already used")
            self.terminals[m.group(2)] = Terminal(m.group(2), int(m.group(1)))
            return ""
        if m := re.fullmatch(r'mach create "(\w+)"', c):
            if m.group(1) in self.machines:
                raise KeywordError(f"Machine {m.group(1)} already exists")
            self.current = self.machines[m.group(1)] = Machine(m.group(1))
            return ""
        if m := re.fullmatch(r'mach set "(\w+)"', c):
            if m.group(1) not in self.machines:
                raise KeywordError(f"No such machine: {m.group(1)}")
            self.current = self.machines[m.group(1)]
            return ""
        if m := re.fullmatch(r'mach rem "(\w+)"', c):
            gone = self.machines.pop(m.group(1), None)
            if gone is None:
                raise KeywordError(f"No such machine: {m.group(1)}")
            gone.stop()  # its terminals stay, as Renode keeps externals
            if self.current is gone:
                self.current = None
            return ""
        if m := re.fullmatch(r"machine LoadPlatformDescription @(\S+)", c):
            text = Path(m.group(1)).read_text()
            for missing in self.missing_types:
                if missing in text:
                    raise KeywordError(f"Error E04: Could not resolve type: '{missing}'.")
            self._need_machine().platform = m.group(1)
            return ""
        if m := re.fullmatch(r"connector Connect sysbus\.(\w+) (\w+)", c):
            if m.group(2) not in self.terminals:
                raise KeywordError(f"No such external: {m.group(2)}")
            self._need_machine().uarts[m.group(1)] = self.terminals[m.group(2)]
            return ""
        if m := re.fullmatch(r"sysbus\.(\w+) CreateFileBackend @(\S+) true", c):
            if m.group(2) in self.file_backends:
                raise KeywordError(f"File {m.group(2)} is alredy used as UART file backend")
            self.file_backends.add(m.group(2))
            self._need_machine().file_backends[m.group(1)] = Path(m.group(2))
            return ""
        if c.startswith("macro reset") and '"""' in c:
            machine = self._need_machine()
            if m := re.search(r"sysbus LoadELF @(\S+)", c):
                machine.elf = m.group(1)
            if m := re.search(r"sysbus LoadBinary @(\S+) (0x[0-9A-Fa-f]+)", c):
                machine.blob = (m.group(1), int(m.group(2), 16))
            return ""
        if c == "runMacro $reset":
            self._need_machine()
            return ""
        if c in ("start", "s"):
            for machine in self.machines.values():
                machine.start()
            self.started = True
            return "Starting emulation..."
        if c == "machine Start":
            self._need_machine().start()
            return ""
        if c in ("pause", "p"):
            for machine in self.machines.values():
                machine.pause()
            return ""
        if c == "machine Pause":
            self._need_machine().pause()
            return ""
        if c == "machine Reset":
            machine = self._need_machine()
            machine.stop()
            machine.start()
            return ""
        raise KeywordError(f"No such command or device: {c.split()[0] if c else c}")

    # --- testers -------------------------------------------------------------------------
    def create_tester(self, uart: str, timeout: float | None, machine: str | None) -> int:
        with self.lock:
            target = self.machines.get(machine) if machine else self.current
            if target is None:
                raise KeywordError(f"no machine {machine or '(current)'}")
            name = uart.removeprefix("sysbus.")
            if name != "uart0":
                raise KeywordError(f"stand-in: only the console UART (uart0) has a tester, "
                                   f"not {uart}")
            tester = Tester(self.uart_timeout if timeout is None else timeout)
            tester.write = target.write_console
            target.testers.append(tester)
            self.testers.append(tester)
            return len(self.testers) - 1

    def tester(self, tester_id: int | None) -> Tester:
        if not self.testers:
            raise KeywordError("No terminal tester has been created")
        index = len(self.testers) - 1 if tester_id is None else tester_id
        if not 0 <= index < len(self.testers):
            raise KeywordError(f"no terminal tester {tester_id}")
        return self.testers[index]
