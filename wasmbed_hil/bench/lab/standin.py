"""QEMU stand-ins for real boards: what a board on a lab bench offers, made of an emulator.

A real board offers serial ports at stable paths (/dev/ttyUSB0...), a power switch and a
flasher. A `StandinBoard` offers the same:

- a pty per UART that the stand-in owns for its whole life, symlinked at a stable path
  (``<board>/console``, ``<board>/link``). QEMU's own ``-serial pty`` would make a new pty
  at every start (qemu 7.2's ``-chardev pty`` has no path option), so each UART of QEMU
  dials a TCP port of the stand-in, which relays bytes between it and the pty master.
  While the board is off, bytes written to its ports go nowhere, as on a board;
- power: on starts ``qemu-system-arm`` booting what was flashed, off kills it (RAM lost);
- a flash: the image (ELF) and the per-device blob that the next power-on boots
  (``-kernel``, ``-device loader`` at the board's blob address).

`LabService` serves the power switch and the flasher of every board over HTTP: the power
port speaks labgrid's ``simplerest`` model (``GET /power/{index}/{value}`` sets it to 0 or
1, ``GET /power/{index}`` reads it) and the flasher takes ``PUT /flash/{index}/image`` and
``/blob`` while the board is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tty
from pathlib import Path

from ...aio import AppServer, cancel_and_wait, kill_process_group
from ...files import write_atomic
from ..boards import DEFAULT_BOARD, BoardError, load_board

UARTS = ("console", "link")  # UART0, UART1 of the firmware
MAX_IMAGE = 16 * 1024 * 1024
MAX_BLOB = 16 * 1024


class StandinError(RuntimeError):
    """A stand-in board cannot do what it was asked (not flashed, busy...)."""


class PtyUart:
    """One UART: a pty kept open for the board's life, linked at `path`, relayed to the
    TCP connection QEMU's serial port makes to `port`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.slave = -1
        self._server: asyncio.Server | None = None
        self._qemu: asyncio.StreamWriter | None = None
        self._pending = bytearray()  # QEMU's bytes not yet taken by the pty
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def device(self) -> str:
        """The pty's own path (/dev/pts/N): stable while the stand-in runs."""
        return os.ttyname(self.slave)

    async def start(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # raw: no echo, no CR/LF translation
        os.set_blocking(self.master, False)
        self.path.unlink(missing_ok=True)
        self.path.symlink_to(self.device)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._from_pty)
        self._server = await asyncio.start_server(self._on_qemu, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _from_pty(self) -> None:
        try:
            data = os.read(self.master, 16 * 1024)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):  # EIO: no one has the pty open
                return
            raise
        if self._qemu is not None and not self._qemu.is_closing():
            self._qemu.write(data)  # else the board is off: the bytes are lost, as on a wire

    def _to_pty(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = os.write(self.master, self._pending)
        except BlockingIOError:
            written = 0
        del self._pending[:written]
        if self._pending:
            loop.add_writer(self.master, self._to_pty)
        else:
            loop.remove_writer(self.master)

    async def _on_qemu(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self._qemu is not None:
            self._qemu.close()
        self._qemu = writer
        try:
            while data := await reader.read(16 * 1024):
                self._pending += data
                self._to_pty()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            if self._qemu is writer:
                self._qemu = None
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._qemu is not None:
            self._qemu.close()
        await cancel_and_wait(list(self._tasks))
        if self.master >= 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.master)
            loop.remove_writer(self.master)
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1
        with contextlib.suppress(OSError):
            self.path.unlink()


class StandinBoard:
    """Board `index` of a stand-in lab, in directory `root` (ports, flash, logs)."""

    def __init__(self, index: int, root: Path, qemu: str = "qemu-system-arm",
                 board: str = DEFAULT_BOARD) -> None:
        self.index = index
        self.name = f"board-{index}"
        self.root = root
        self.qemu = qemu
        self.board = board
        self.uarts = {u: PtyUart(root / u) for u in UARTS}
        self.flash_dir = root / "flash"
        self._proc: asyncio.subprocess.Process | None = None
        self.boots = 0

    @property
    def powered(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.flash_dir.mkdir(exist_ok=True)
        for uart in self.uarts.values():
            await uart.start()

    def argv(self) -> list[str]:
        image, blob = self.flash_dir / "image.elf", self.flash_dir / "blob.bin"
        if not image.is_file() or not blob.is_file():
            raise StandinError(f"{self.name}: nothing flashed (image and blob needed)")
        # The board file says which machine, CPU, blob address and UART order (bench.boards),
        # as for the qemu backend; each UART role goes to its stable pty's relay.
        try:
            spec = load_board(self.board)
        except BoardError as exc:
            raise StandinError(f"{self.name}: {exc}") from exc
        if spec.qemu_machine is None:
            raise StandinError(f"{self.name}: board {spec.name!r} has no [qemu] table "
                               f"({spec.source}): QEMU cannot stand in for it")
        argv = [self.qemu, "-M", spec.qemu_machine, *(["-cpu", spec.qemu_cpu]
                                                      if spec.qemu_cpu else []),
                "-nographic", "-kernel", str(image),
                "-device", f"loader,file={blob},addr={spec.blob_address:#x},force-raw=on"]
        for role in spec.serial_roles():
            target = (f"tcp:127.0.0.1:{self.uarts[role].port},nodelay=on" if role in self.uarts
                      else "null")
            argv += ["-serial", target]
        return [*argv, "-monitor", "none"]

    async def power_on(self) -> None:
        if self.powered:
            return
        argv = self.argv()
        wrapper = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        log = (self.root / "qemu.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *wrapper, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        except OSError as exc:
            raise StandinError(f"{self.name}: cannot start {argv[0]}: {exc}") from exc
        finally:
            log.close()
        self.boots += 1

    async def power_off(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        await kill_process_group(proc)

    def flash(self, part: str, data: bytes) -> None:
        """Write the image or the blob; refused while powered (a flasher halts the CPU)."""
        limits = {"image": MAX_IMAGE, "blob": MAX_BLOB}
        if part not in limits:
            raise StandinError(f"{self.name}: no flash part {part!r} (image, blob)")
        if len(data) > limits[part] or not data:
            raise StandinError(f"{self.name}: {part} of {len(data)} bytes does not fit "
                               f"(1..{limits[part]})")
        if self.powered:
            raise StandinError(f"{self.name}: power off before flashing")
        target = self.flash_dir / ("image.elf" if part == "image" else "blob.bin")
        write_atomic(target, data)

    async def close(self) -> None:
        await self.power_off()
        for uart in self.uarts.values():
            await uart.close()


class LabService:
    """The power switches and flashers of `boards`, over HTTP on 127.0.0.1."""

    def __init__(self, boards: list[StandinBoard]) -> None:
        self.boards = boards
        self.server: AppServer | None = None

    def power_url(self) -> str:
        """labgrid's simplerest `host` template for this service's power ports."""
        assert self.server is not None and self.server.url
        return self.server.url + "/power/{index}/{value}"

    def flash_url(self, index: int) -> str:
        assert self.server is not None and self.server.url
        return f"{self.server.url}/flash/{index}"

    def _board(self, raw: str) -> StandinBoard:
        from aiohttp import web

        # isdigit() alone lets "²" through, which int() refuses (a 500)
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= len(self.boards):
            raise web.HTTPNotFound(text=f"no board {raw!r} (0..{len(self.boards) - 1})\n")
        return self.boards[int(raw)]

    async def start(self) -> str:
        from aiohttp import web

        async def get_power(request: web.Request) -> web.Response:
            board = self._board(request.match_info["index"])
            return web.Response(text="1" if board.powered else "0")

        async def set_power(request: web.Request) -> web.Response:
            board = self._board(request.match_info["index"])
            value = request.match_info["value"]
            try:
                if value == "1":
                    await board.power_on()
                elif value == "0":
                    await board.power_off()
                else:
                    raise web.HTTPBadRequest(text=f"power value {value!r}: 0 or 1\n")
            except StandinError as exc:
                raise web.HTTPConflict(text=f"{exc}\n") from exc
            return web.Response(text=value)

        async def flash(request: web.Request) -> web.Response:
            board = self._board(request.match_info["index"])
            if (request.content_length or 0) > MAX_IMAGE:
                raise web.HTTPRequestEntityTooLarge(MAX_IMAGE, request.content_length or 0)
            data = await request.read()
            try:
                board.flash(request.match_info["part"], data)
            except StandinError as exc:
                raise web.HTTPConflict(text=f"{exc}\n") from exc
            return web.Response(text=f"{len(data)}\n")

        app = web.Application(client_max_size=MAX_IMAGE + 1024)
        app.router.add_get("/power/{index}", get_power)
        app.router.add_get("/power/{index}/{value}", set_power)
        app.router.add_put("/flash/{index}/{part}", flash)
        self.server = AppServer(app)
        return await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
