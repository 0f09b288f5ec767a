"""QemuMachine's process handling, proven with a stand-in emulator (a Python process)."""

from __future__ import annotations

import asyncio
import os
import platform
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from wasmbed_hil.bench.machines.qemu import _LIVE, MachineError, QemuMachine, _exited

FAKE = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("boot child=%d" % child.pid, flush=True)
    for line in sys.stdin:
        print("echo " + line.strip(), flush=True)
""")


def _exits_within(pid: int, timeout: float) -> bool:
    """True once the process has exited (a pidfd turns readable), False after timeout.
    SIGKILL to a process group is delivered asynchronously, so death is awaited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready) or not _alive(pid)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_console_is_captured_input_reaches_it_and_power_cut_kills_the_group(tmp_path):
    async def scenario() -> None:
        lines: list[str] = []
        got = asyncio.Event()

        def on_line(line: str) -> None:
            lines.append(line)
            got.set()

        machine = QemuMachine("fake", [sys.executable, "-c", FAKE], tmp_path, on_line)
        await machine.start()
        pid = machine.pid
        assert pid in _LIVE

        async def wait_for(prefix: str) -> str:
            while not any(x.startswith(prefix) for x in lines):
                got.clear()
                await asyncio.wait_for(got.wait(), 10)
            return next(x for x in lines if x.startswith(prefix))

        child = int((await wait_for("boot child=")).split("=")[1])
        await machine.write_console("silent 1\n")
        await wait_for("echo silent 1")
        await machine.power_cut()
        assert not machine.running
        assert pid not in _LIVE
        assert _exits_within(child, 10), "the emulator's children must die with it"
        with pytest.raises(MachineError):
            await machine.write_console("x\n")
        with pytest.raises(MachineError):
            await machine.reset()
        await machine.close()
        log = (tmp_path / "console.log").read_text()
        assert "echo silent 1" in log and "[harness] power off" in log

    asyncio.run(scenario())


def test_a_missing_emulator_is_an_infrastructure_error(tmp_path):
    async def scenario() -> None:
        machine = QemuMachine("none", ["/nonexistent/qemu-system-arm"], tmp_path)
        with pytest.raises(MachineError, match="cannot start"):
            await machine.start()
        await machine.close()

    asyncio.run(scenario())


SLEEPER = "import time; time.sleep(60)"


def test_a_closed_machine_starts_no_process(tmp_path):
    # A trigger's power-on (bench.points) may run after the device closed its machine.
    async def scenario() -> None:
        machine = QemuMachine("closed", [sys.executable, "-c", SLEEPER], tmp_path)
        await machine.close()
        try:
            with pytest.raises(MachineError, match="closed"):
                await machine.start()
            assert machine.pid is None
        finally:
            if machine.running:  # the unfixed code left it: do not leak it past the test
                await machine.power_cut()

    asyncio.run(scenario())


def _held_spawns(monkeypatch) -> tuple[asyncio.Event, asyncio.Event,
                                        list[asyncio.subprocess.Process]]:
    """Spawns of the emulator held until `gate` is set (`spawning` is set when one waits);
    the processes spawned, in order."""
    spawning, gate = asyncio.Event(), asyncio.Event()
    spawned: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_exec

    async def held_spawn(*args, **kwargs):
        spawning.set()
        await gate.wait()
        proc = await real(*args, **kwargs)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", held_spawn)
    return spawning, gate, spawned


async def _reap(spawned: list[asyncio.subprocess.Process]) -> None:
    for proc in spawned:  # what unfixed code left running: not past the test
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("cut", ["close", "power_cut"])
def test_a_machine_cut_while_its_process_is_spawned_kills_it(tmp_path, monkeypatch, cut):
    # close() or a power cut runs while start() awaits the spawn: it finds no process yet;
    # the process the spawn then returns must not be left running (past the test, or on
    # after a power-off that returned).
    spawning, gate, spawned = _held_spawns(monkeypatch)

    async def scenario() -> None:
        machine = QemuMachine("racing", [sys.executable, "-c", SLEEPER], tmp_path)
        start = asyncio.create_task(machine.start())
        await asyncio.wait_for(spawning.wait(), 10)
        await (machine.close() if cut == "close" else machine.power_cut())
        gate.set()
        try:
            with pytest.raises(MachineError, match=f"{cut.replace('_', ' ')}d? while starting"):
                await start
            assert spawned[0].returncode is not None, "the spawned process is left running"
            assert spawned[0].pid not in _LIVE and not machine.running
        finally:
            await _reap(spawned)
            await machine.close()

    asyncio.run(scenario())


def test_two_starts_at_once_spawn_one_emulator(tmp_path, monkeypatch):
    # A test's power_on and a trigger's at once: each spawned an emulator, and the first,
    # no longer referenced, ran on with nobody to kill it.
    spawning, gate, spawned = _held_spawns(monkeypatch)

    async def scenario() -> None:
        machine = QemuMachine("twice", [sys.executable, "-c", SLEEPER], tmp_path)
        first = asyncio.create_task(machine.start())
        await asyncio.wait_for(spawning.wait(), 10)
        second = asyncio.create_task(machine.start())
        for _ in range(20):  # turns of the loop (no time passes) for a second spawn to begin
            await asyncio.sleep(0)
        gate.set()
        try:
            await asyncio.gather(first, second)
            assert len(spawned) == 1 and machine.pid == spawned[0].pid
        finally:
            await machine.close()
            await _reap(spawned)

    asyncio.run(scenario())


_SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())


@pytest.mark.skipif(_SYS_EXIT is None or not sys.platform.startswith("linux"),
                    reason="needs Linux on x86_64 or aarch64 (exit of one thread)")
def test_a_process_already_exiting_counts_as_exited() -> None:
    """A QEMU killed from outside closes its sockets (the gateway sees the device go) before
    it is a zombie: a power cut in between took the death for its own doing and the test's
    teardown reported none. The process's exit is seen from its first step (PF_EXITING).
    Made here with a process whose main thread has exited while another still runs: exiting
    (and shown so), never a zombie while that thread lives."""
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import ctypes, sys, threading, time\n"
         "threading.Thread(target=time.sleep, args=(60,), daemon=False).start()\n"
         f"ctypes.CDLL(None).syscall({_SYS_EXIT}, 0)\n"],  # only the main thread exits
        stdin=subprocess.DEVNULL)
    try:
        proc = SimpleNamespace(pid=child.pid, returncode=None)
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1].startswith("Z"):
            assert time.monotonic() < deadline, "the child's main thread never exited"
            time.sleep(0.01)  # polling a condition (the main thread's exit), with a deadline
        assert os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        assert _exited(proc)  # type: ignore[arg-type]
    finally:
        child.kill()
        child.wait()
    running = subprocess.Popen(["sleep", "30"])
    try:
        assert not _exited(SimpleNamespace(pid=running.pid, returncode=None))  # type: ignore[arg-type]
    finally:
        running.kill()
        running.wait()
