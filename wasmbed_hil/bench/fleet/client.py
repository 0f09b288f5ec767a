"""One fleet worker process, driven from the harness loop (the async core of `fleet(n)`).

`FleetWorker.start()` spawns `python -m wasmbed_hil.bench.fleet.worker` under
`setpriv --pdeathsig KILL` (when setpriv exists) in a session of its own, as the QEMU
machines are: if the harness dies, the kernel kills the worker; a Ctrl-C at the terminal
reaches pytest only, whose teardown closes the worker. `request()` sends one command and
waits for its reply; requests may overlap (each has an id). The worker's stderr goes to a
log file whose tail every error quotes.

Errors surface in the test: a command that raised in the worker raises `FleetCommandError`
here with the worker's traceback; a worker that exits without being asked records
`FleetWorkerDied` (an InfrastructureError), which every pending and later request raises,
and `close()` raises it too, so a death nobody waited on still fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import IO, Any

from ...aio import kill_process_group
from ..errors import InfrastructureError
from .protocol import check_command

LOG_TAIL = 30  # lines of the worker's stderr an error quotes


class FleetError(RuntimeError):
    """A fleet command failed (in a worker, or a wait that timed out)."""


class FleetCommandError(FleetError):
    """A command raised in the worker; the message carries the worker's traceback."""


class FleetWorkerDied(InfrastructureError):
    """A worker process exited without being asked (a crash, the OOM killer...)."""


class FleetWorker:
    """One worker process and its devices; every method runs on the harness loop."""

    def __init__(self, index: int, ca_dir: Path, workdir: Path,
                 endpoint: tuple[str, int], *, tls_read_buffer: int = 0,
                 link: str = "lean") -> None:
        self.index = index
        self.name = f"fleet-worker-{index}"
        self.ca_dir = ca_dir
        self.workdir = workdir
        self.endpoint = endpoint
        self.tls_read_buffer = tls_read_buffer
        self.link = link
        self.log_path = workdir / "worker.log"
        self.pid: int | None = None
        self.died: FleetWorkerDied | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False  # the worker said it stopped when asked

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        wrapper = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        host, port = self.endpoint
        argv = [*wrapper, sys.executable, "-m", "wasmbed_hil.bench.fleet.worker",
                "--ca-dir", str(self.ca_dir), "--workdir", str(self.workdir / "devices"),
                "--host", host, "--port", str(port),
                "--tls-read-buffer", str(self.tls_read_buffer), "--link", self.link]
        self._proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=self._log, start_new_session=True, limit=1 << 26)
        self.pid = self._proc.pid
        self._ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self._proc), name=f"{self.name}-reader")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise FleetWorkerDied(f"{self.name} (pid {self.pid}) not ready within "
                                  f"{timeout:g}s{self._tail()}") from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours (a library printing to stdout)
                self._dispatch(message)
        finally:
            status = await proc.wait()
            if not self._stopped:
                how = ("did not stop when asked and was killed" if self._closing
                       else f"exited on its own with status {status}")
                self.died = FleetWorkerDied(f"{self.name} (pid {self.pid}) {how}{self._tail()}")
            error = self.died or FleetError(f"{self.name} was closed")
            for future in [self._ready, *self._pending.values()]:
                if future is not None and not future.done():
                    future.set_exception(error)
            self._pending.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("stopped"):
            self._stopped = True
            return
        if message.get("ready") and self._ready is not None and not self._ready.done():
            self._ready.set_result(message)
            return
        future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(FleetCommandError(
                f"{self.name}: {message['error']}\n{message.get('traceback', '')}".rstrip()))
        else:
            future.set_result(message)

    def _tail(self) -> str:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        except OSError:
            return ""
        return ("; its stderr ends:\n" + "\n".join(lines)) if lines else "; stderr empty"

    # -- commands ----------------------------------------------------------------------------
    async def request(self, cmd: str, timeout: float, /, **fields: Any) -> dict[str, Any]:
        if self.died is not None:
            raise self.died
        proc = self._proc
        if proc is None or proc.stdin is None or self._closing:
            raise FleetError(f"{self.name} is not running")
        ident = next(self._ids)
        command = check_command({"cmd": cmd, "id": ident, **fields})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            proc.stdin.write(json.dumps(command, separators=(",", ":")).encode() + b"\n")
            await proc.stdin.drain()
            return await asyncio.wait_for(future, timeout)
        except (BrokenPipeError, ConnectionResetError):
            await asyncio.sleep(0)  # let the reader record the death
            raise self.died or FleetError(f"{self.name}: its input is closed") from None
        except TimeoutError:
            raise FleetError(f"{self.name}: no answer to {cmd!r} within {timeout:g}s"
                             f"{self._tail()}") from None
        finally:
            self._pending.pop(ident, None)

    async def close(self, timeout: float = 30.0) -> None:
        """Ask the worker to power its devices off and exit; kill it after `timeout`.
        Raises the worker's recorded death, if it died on its own before."""
        proc, self._closing = self._proc, True
        try:
            if proc is not None and proc.returncode is None and self.died is None:
                assert proc.stdin is not None
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.write(b'{"cmd":"stop"}\n')
                    proc.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout)
            if proc is not None:
                await kill_process_group(proc)  # also anything it started
            if self._reader is not None:
                await self._reader
        finally:
            if self._log is not None:
                self._log.close()
        if self.died is not None:
            raise self.died
