"""A stand-in lab: N QEMU stand-in boards, their labgrid files, and (remote mode) a labgrid
coordinator and exporter sharing them, all on loopback.

`python -m wasmbed_hil.bench.lab up --boards N --dir DIR [--coordinator]` runs one until
SIGTERM or SIGINT. In DIR it writes ``env.yaml`` (a labgrid environment naming every board,
for local use) and, with --coordinator, ``exporter.yaml`` and ``coordinator/places.yaml``;
it then prints one line ``ready {json}`` with what it serves (the environment file, the
coordinator's address, the place tag), also kept in ``lab.json``.

The coordinator and the exporter run in their own process groups: the exporter starts a
ser2net per serial port a place acquires, and stopping the group stops those too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import files
from .standin import LabService, StandinBoard

EXPORTER_NAME = "wasmbed-lab"


def labgrid_tool(name: str) -> str:
    """A labgrid command (labgrid-coordinator...), preferring the one beside this Python."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (pip install 'wasmbed-hil[board]')")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    def __init__(self, root: Path, boards: int, *, coordinator: bool = False,
                 qemu: str = "qemu-system-arm") -> None:
        if not 1 <= boards <= 64:
            raise ValueError(f"--boards {boards}: 1..64")
        self.root = root.resolve()
        self.coordinator = coordinator
        self.boards = [StandinBoard(i, self.root / f"board-{i}", qemu) for i in range(boards)]
        self.service = LabService(self.boards)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address: str | None = None

    def ports(self) -> list[files.BoardPorts]:
        return [
            files.BoardPorts(
                name=b.name, index=b.index,
                console=str(b.uarts["console"].path), link=str(b.uarts["link"].path),
                console_device=b.uarts["console"].device, link_device=b.uarts["link"].device,
                power_url=self.service.power_url(), flash_url=self.service.flash_url(b.index),
            )
            for b in self.boards
        ]

    async def start(self, timeout: float = 60.0) -> dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        for board in self.boards:
            await board.start()
        await self.service.start()
        ports = self.ports()
        info: dict[str, Any] = {
            "boards": len(self.boards),
            "env": str(files.write_yaml(self.root / "env.yaml", files.environment(ports))),
        }
        if self.coordinator:
            await asyncio.to_thread(self._start_remote, ports, timeout)
            info["coordinator"] = self.address
            info["places"] = "=".join(files.STANDIN_TAG)
        (self.root / "lab.json").write_text(json.dumps(info))
        return info

    def _spawn(self, argv: list[str], name: str, cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        with log:
            wrapper = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
            proc = subprocess.Popen([*wrapper, *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _start_remote(self, ports: list[files.BoardPorts], timeout: float) -> None:
        cdir = self.root / "coordinator"
        cdir.mkdir(exist_ok=True)
        files.write_yaml(cdir / "places.yaml", files.places(ports, EXPORTER_NAME))
        config = files.write_yaml(self.root / "exporter.yaml", files.exporter_config(ports))
        self.address = f"127.0.0.1:{free_port()}"
        coordinator = self._spawn([labgrid_tool("labgrid-coordinator"), "-l", self.address],
                                  "coordinator", cdir)
        # The exporter gives up (exit 100) if the coordinator does not answer yet.
        self._wait_listening(coordinator, "coordinator", time.monotonic() + timeout)
        self._spawn([labgrid_tool("labgrid-exporter"), "-c", self.address, "-n",
                     EXPORTER_NAME, "--hostname", "127.0.0.1", str(config)],
                    "exporter", self.root)
        self._wait_resources(ports, timeout)

    def _exited(self, proc: subprocess.Popen[bytes], name: str) -> RuntimeError:
        log = self.root / f"{name}.log"
        tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
        return RuntimeError(f"{name} exited ({proc.returncode}): {tail.strip()}")

    def _wait_listening(self, proc: subprocess.Popen[bytes], name: str,
                        deadline: float) -> None:
        """Until the coordinator accepts connections on its address."""
        host, _, port = (self.address or "").rpartition(":")
        while True:
            if proc.poll() is not None:
                raise self._exited(proc, name)
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{name} not listening on {self.address}") from None
            time.sleep(0.1)  # another process's port: no event to wait on

    def _wait_resources(self, ports: list[files.BoardPorts], timeout: float) -> None:
        """Until the coordinator lists every board's resources from the exporter."""
        deadline = time.monotonic() + timeout
        client = labgrid_tool("labgrid-client")
        wanted = {f"{EXPORTER_NAME}/{p.name}/" for p in ports}
        out = ""
        while time.monotonic() < deadline:
            for proc, name in zip(self.procs, ("coordinator", "exporter"), strict=False):
                if proc.poll() is not None:
                    raise self._exited(proc, name)
            run = subprocess.run([client, "-x", self.address or "", "resources"],
                                 capture_output=True, text=True, timeout=30)
            out = run.stdout
            if all(any(line.startswith(w) for line in out.splitlines()) for w in wanted):
                return
            time.sleep(0.2)  # polling another process's state: there is no event to wait on
        raise TimeoutError(f"the exporter's resources did not reach the coordinator in "
                           f"{timeout:.0f} s (last listing: {out.strip()!r})")

    async def stop(self) -> None:
        for proc in reversed(self.procs):  # exporter (and its ser2nets), then coordinator
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: ser2net children too
            await asyncio.to_thread(proc.wait)
        self.procs.clear()
        for board in self.boards:
            await board.close()
        await self.service.stop()


async def run(root: Path, boards: int, coordinator: bool, qemu: str) -> None:
    """Start a lab, print its ready line, serve until SIGTERM/SIGINT, stop it."""
    lab = Lab(root, boards, coordinator=coordinator, qemu=qemu)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = await lab.start()
        print("ready " + json.dumps(info), flush=True)
        await stop.wait()
    finally:
        await lab.stop()
