"""One emulated machine: a qemu-system-arm process with its console and its controls.

UART0 is the console: QEMU's stdio, read line by line into `console` (a
bench.consolelog.ConsoleLog, and console.log). Reset goes through QMP (a unix socket in the
machine's directory: no port to pick). A power cut kills the process at once, as pulling the
plug would; `start()` again boots afresh. A process that ends on its own (a crash, a kill
from outside) is recorded in `died` (bench.errors.MachineDied: exit status, console tail,
stderr), and the console's waits raise it.

With a GDB request (bench.machines.gdb, pytest's --hil-gdb), QEMU's GDB server listens on a
socket the harness bound on 127.0.0.1 with a kernel-chosen port and handed over
(``-chardev socket,fd=N,server=on`` + ``-gdb chardev:gdb``), kept for the machine's
lifetime: ``gdb_port`` is known before QEMU starts and stays the same over power cycles.
``halted`` adds ``-S``: every boot waits at the reset vector for the debugger's continue.

No process outlives its harness: each is killed explicitly on stop, is started under
`setpriv --pdeathsig KILL` where available (the kernel kills it if the harness thread dies),
and an atexit hook kills whatever is still registered.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ...aio import cancel_and_wait, kill_process_group
from ..boards import DEFAULT_BOARD, Board, BoardError, load_board
from ..consolelog import ConsoleLog
from ..errors import MachineDied, MachineError
from .gdb import GdbListener, GdbRequest, attach_hint

log = logging.getLogger(__name__)

_LIVE: set[int] = set()  # pids of running machines, for the atexit safety net


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin

QEMU = "qemu-system-arm"
LINKS = ("uart", "ethernet")
#: QEMU machines whose Ethernet controller our firmware drives as its link (-nic model).
ETHERNET_MODELS = {"mps2-an385": "lan9118"}
ETHERNET_MAC = "02:57:42:00:00:01"  # the firmware's (firmware/ports/mps2-an385/eth.c)


def qemu_command(
    elf: Path,
    blob: Path,
    uart1_port: int,
    qmp_socket: Path | None = None,
    *,
    board: Board | str = DEFAULT_BOARD,
    qemu: str = QEMU,
    link: str = "uart",
) -> list[str]:
    """The qemu-system-arm argv running ``elf`` on ``board`` with the per-device ``blob``.

    ``board``: a Board (bench.boards) or the name/path of a board file. It gives the machine
    (-M) and CPU (-cpu), the blob's load address, and the UART roles, which decide the
    -serial order: the console UART is the process's stdin/stdout, the link UART dials out to
    127.0.0.1:``uart1_port`` (the harness listens first; nodelay avoids 40 ms Nagle stalls),
    any other UART below them is ``null``.
    ``link="ethernet"``: the board's Ethernet controller dials 127.0.0.1:``uart1_port``
    instead (``-nic socket,connect=``: a 4-byte length before each frame;
    bench.link.ethernet), and the link UART is ``null``.
    ``qmp_socket``: a unix socket path on which QEMU serves QMP (server, no wait).
    (A GDB server is added per boot by QemuMachine: gdb_arguments.)
    """
    spec = board if isinstance(board, Board) else load_board(board)
    if spec.qemu_machine is None:
        raise BoardError(f"no QEMU machine for board {spec.name!r}: its board file "
                         f"({spec.source}) has no [qemu] table")
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, not {link!r}")
    model = ETHERNET_MODELS.get(spec.qemu_machine)
    if link == "ethernet" and model is None:
        raise BoardError(f"board {spec.name!r}: no Ethernet link on QEMU machine "
                         f"{spec.qemu_machine!r} (known: {sorted(ETHERNET_MODELS)})")
    serial = {
        "console": "chardev:uart0",
        "link": f"tcp:127.0.0.1:{int(uart1_port)},nodelay=on" if link == "uart" else "null",
        "none": "null",
    }
    argv = [qemu, "-M", spec.qemu_machine]
    if spec.qemu_cpu:
        argv += ["-cpu", spec.qemu_cpu]
    argv += [
        "-nographic",
        "-kernel", str(elf),
        "-device", f"loader,file={blob},addr={spec.blob_address:#x},force-raw=on",
        "-chardev", "stdio,id=uart0,signal=off",
    ]
    for role in spec.serial_roles():
        argv += ["-serial", serial[role]]
    if link == "ethernet":
        argv += ["-nic", f"socket,model={model},mac={ETHERNET_MAC},"
                         f"connect=127.0.0.1:{int(uart1_port)}"]
    argv += ["-monitor", "none"]
    if qmp_socket is not None:
        argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    return argv


def gdb_arguments(fd: int, halted: bool) -> list[str]:
    """QEMU's GDB server on the listening socket `fd` (inherited); -S when `halted`."""
    args = ["-chardev", f"socket,id=gdb,fd={int(fd)},server=on,wait=off", "-gdb", "chardev:gdb"]
    return [*args, "-S"] if halted else args


#: Linux's task flag "getting shut down" (PF_EXITING), field 9 of /proc/PID/stat: set as
#: the process begins to exit, before it closes its files (its sockets), long before it is
#: a zombie.
PF_EXITING = 0x4


def _exited(proc: asyncio.subprocess.Process) -> bool:
    """Whether our child process has ended or is ending, even if asyncio has not said so
    yet: a zombie is looked at without being reaped (WNOWAIT); no such child means asyncio's
    watcher has reaped it already and is about to set its returncode; a process already
    exiting (killed from outside, its sockets closed so the gateway saw it go) is not a
    zombie yet but is on its way (_exiting)."""
    if proc.returncode is not None:
        return True
    try:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
    except ChildProcessError:
        return True
    return _exiting(proc.pid)


def _exiting(pid: int) -> bool:
    """Whether Linux shows the process exiting (PF_EXITING); False where it cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        flags = int(stat[stat.rindex(")") + 2:].split()[6])  # fields 3.. after "(comm) "
    except (OSError, ValueError, IndexError):
        return False
    return bool(flags & PF_EXITING)


class QemuMachine:
    """A bench.machines.base.Machine: one qemu-system-arm process per boot.

    ``gdb``: serve GDB on every boot (see the module's docstring); ``gdb_port`` is its port.
    """

    label = "emulator"

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        on_line: Callable[[str], None] | None = None,
        gdb: GdbRequest | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.gdb = gdb
        # Bound now, kept until close(): the port is known before a boot, the same after.
        self._gdb_listener = GdbListener() if gdb is not None else None
        self.workdir = workdir
        self.on_line = on_line
        self.console = ConsoleLog()
        self.died: MachineDied | None = None
        self.stderr = b""
        self.boots = 0
        self.started_at = 0.0
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._cuts = 0  # power cuts so far: a start spawning meanwhile must not stay on
        self._start_lock = asyncio.Lock()
        self.qmp_path = workdir / "qmp.sock"
        self._short_dir: Path | None = None
        if len(str(self.qmp_path)) > UNIX_PATH_MAX:
            # A UNIX socket path is limited to 107 bytes; deep work directories exceed it.
            self._short_dir = Path(tempfile.mkdtemp(prefix="wbqmp-"))
            self.qmp_path = self._short_dir / "qmp.sock"
        workdir.mkdir(parents=True, exist_ok=True)
        self._console_file = (workdir / "console.log").open("a", buffering=1)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def gdb_port(self) -> int | None:
        """The port of the GDB server on 127.0.0.1 (None without a GDB request)."""
        return self._gdb_listener.port if self._gdb_listener is not None else None

    @property
    def elf(self) -> str:
        """The image QEMU runs (its -kernel)."""
        return self.argv[self.argv.index("-kernel") + 1] if "-kernel" in self.argv else "?"

    def gdb_hint(self) -> str:
        """How to attach a debugger ("" without a GDB server)."""
        port = self.gdb_port
        if port is None or self.gdb is None:
            return ""
        return attach_hint(self.elf, port, self.name, self.gdb.halted)

    async def start(self) -> None:
        # One start at a time: two at once (a test's power_on and a trigger's) each spawned
        # an emulator, and the first, no longer referenced, ran on with nobody to kill it.
        async with self._start_lock:
            await self._start()

    async def _start(self) -> None:
        if self.running:
            return
        if self._closed:  # e.g. a trigger's power-on (bench.points) after the device closed
            raise MachineError(f"{self.name}: cannot start, the machine is closed")
        if shutil.which(self.argv[0]) is None:
            raise MachineError(f"{self.name}: cannot start {self.argv[0]}: not found")
        wrapper = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        argv = [*wrapper, *self.argv]
        if "-qmp" not in self.argv:
            self.qmp_path.unlink(missing_ok=True)
            argv += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        pass_fds: tuple[int, ...] = ()
        if self.gdb is not None and self._gdb_listener is not None:
            pass_fds = (self._gdb_listener.fileno(),)
            argv += gdb_arguments(pass_fds[0], self.gdb.halted)
        cuts = self._cuts
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise MachineError(f"{self.name}: cannot start {argv[0]}: {exc}") from exc
        if self._closed or self._cuts != cuts:
            # close() or a power cut ran while the process was being spawned: it found no
            # process to kill, and this one would run on (past the test, or on after a
            # power-off that had returned). The cut wins.
            proc, self._proc = self._proc, None
            await kill_process_group(proc)
            raise MachineError(f"{self.name}: "
                               f"{'closed' if self._closed else 'power cut'} while starting")
        _LIVE.add(self._proc.pid)
        self.died = None
        self.console.end(None)
        self.boots += 1
        self.started_at = time.monotonic()
        self._line(f"[harness] power on (boot {self.boots}, pid {self._proc.pid})")
        if self._gdb_listener is not None:
            hint = self.gdb_hint()
            self._line(f"[harness] {hint}")
            log.warning("%s", hint)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        readers = [
            asyncio.create_task(self._read_console(self._proc.stdout)),
            asyncio.create_task(self._read_stderr(self._proc.stderr)),
        ]
        self._tasks = [*readers, asyncio.create_task(self._watch(self._proc, readers))]

    def _line(self, text: str) -> None:
        self.console.append(text)
        self._console_file.write(text + "\n")
        if self.on_line is not None:
            self.on_line(text)

    async def _read_console(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._line(line.decode("utf-8", "replace").rstrip("\r\n"))

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.stderr = (self.stderr + chunk)[-8192:]

    async def _watch(self, proc: asyncio.subprocess.Process,
                     readers: list[asyncio.Task[None]]) -> None:
        """Wait for the process to end; when it ends without a power cut (power_cut lets
        go of it first), record the death, with the lines and stderr it left."""
        await proc.wait()
        await asyncio.gather(*readers, return_exceptions=True)  # its last words
        if self._proc is not proc:
            return  # the harness cut the power
        _LIVE.discard(proc.pid)
        self.died = MachineDied(self.name, "qemu", proc.returncode, self.console.tail(),
                                self.exit_report())
        self._line(f"[harness] qemu exited on its own (status {proc.returncode})")
        self.console.end(self.died)

    async def write_console(self, text: str) -> None:
        """Type text into UART0 (the firmware's console input)."""
        if not self.running or self._proc is None or self._proc.stdin is None:
            raise MachineError(f"{self.name}: not running")
        self._proc.stdin.write(text.encode())
        await self._proc.stdin.drain()

    async def power_cut(self) -> None:
        """Kill the emulator now; RAM is lost, the blob is loaded again on the next boot.
        A start under way (its process being spawned) ends with the machine off."""
        self._cuts += 1
        proc = self._proc
        if proc is None:
            return
        if _exited(proc):
            # It died before this cut (a crash, a kill from outside) and asyncio has not
            # told the watcher yet: let the watcher record the death before letting go.
            await asyncio.wait(self._tasks, timeout=5)
        self._proc = None
        await kill_process_group(proc)
        _LIVE.discard(proc.pid)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        self._line(f"[harness] power off (exit {proc.returncode})")

    async def close(self) -> None:
        self._closed = True
        await self.power_cut()
        self._console_file.close()
        if self._gdb_listener is not None:
            self._gdb_listener.close()
            self._gdb_listener = None
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)

    async def reset(self, timeout: float = 5.0) -> None:
        """A system reset through QMP (CPU and devices reset, the blob loaded again)."""
        if not self.running:
            raise MachineError(f"{self.name}: cannot reset, not running")
        try:
            await asyncio.wait_for(self._qmp("system_reset"), timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise MachineError(f"{self.name}: QMP system_reset failed: {exc}") from exc
        self._line("[harness] reset")

    async def _qmp(self, command: str) -> dict[str, object]:
        reader, writer = await asyncio.open_unix_connection(str(self.qmp_path))
        try:
            json.loads(await reader.readline())  # greeting
            for cmd in ("qmp_capabilities", command):
                writer.write(json.dumps({"execute": cmd}).encode() + b"\n")
                await writer.drain()
                while True:
                    reply = json.loads(await reader.readline())
                    if "return" in reply or "error" in reply:
                        break
                if "error" in reply:
                    raise ValueError(f"{cmd}: {reply['error']}")
            return reply
        finally:
            writer.close()

    def exit_report(self) -> str:
        """What the emulator said on stderr (for errors that say why it died)."""
        return self.stderr.decode("utf-8", "replace").strip()[-2000:]

    def stats(self) -> dict[str, object]:
        return {"boots": self.boots}
