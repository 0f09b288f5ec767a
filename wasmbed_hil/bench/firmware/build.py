"""Build the bare-metal firmware image of a board (make -C firmware BOARD=<board>).

A board is a port directory with a board.mk (firmware/ports/<board>/); `boards()` lists them.
How an emulator runs the image is the emulator's business (wasmbed_hil/bench/machines/qemu.py).
The sources, the build directory and the deps cache come from wasmbed_hil.resources: the
checkout's firmware/, firmware/build/ and .cache/firmware-deps/, or, installed, the packaged
sources and a per-user cache (never site-packages).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ... import resources
from ..errors import InfrastructureError

FIRMWARE_DIR = resources.firmware_dir()
BUILD_DIR = resources.firmware_build_dir()
DEPS_DIR = resources.firmware_deps_dir()
PORTS_DIR = FIRMWARE_DIR / "ports"
DEFAULT_BOARD = "mps2-an385"  # the make default too (firmware/Makefile BOARD ?=)
ARM_GCC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"

_built: dict[tuple[str, str], Path] = {}
_lock = threading.Lock()


class FirmwareBuildError(InfrastructureError):
    """`make -C firmware` failed; the message ends with the tail of its output."""


def boards() -> list[str]:
    """The bare-metal boards make can build: the port directories with a board.mk."""
    return sorted(path.parent.name for path in PORTS_DIR.glob("*/board.mk"))


def _check_board(board: str) -> None:
    if not PORTS_DIR.is_dir():
        raise FirmwareBuildError(
            f"no firmware sources at {FIRMWARE_DIR}: this installation of wasmbed-hil is "
            "incomplete (reinstall it from its wheel or sdist, or run from a checkout)"
        )
    if board not in boards():
        raise ValueError(f"unknown board {board!r}: the bare-metal boards are {boards()} "
                         f"(firmware/ports/<board>/board.mk)")


_BLOB_DEFINE = re.compile(r"^#define\s+WB_BLOB_ADDRESS\s+(0x[0-9A-Fa-f]+)u?\b", re.M)


def blob_address(board: str = DEFAULT_BOARD) -> int:
    """Where the board's firmware reads its per-device blob: WB_BLOB_ADDRESS of the port's
    board_port.h, the one statement of it (a machine loads or flashes the blob there)."""
    _check_board(board)
    header = PORTS_DIR / board / "board_port.h"
    found = _BLOB_DEFINE.search(header.read_text())
    if found is None:
        raise FirmwareBuildError(f"{header} defines no WB_BLOB_ADDRESS")
    return int(found[1], 16)


def image_path(board: str = DEFAULT_BOARD, *, selftest: str | None = None) -> Path:
    """Where `make -C firmware BOARD=<board> [SELFTEST=...]` puts the ELF."""
    _check_board(board)
    name = board if selftest is None else f"{board}-selftest-{selftest}"
    return BUILD_DIR / name / "wasmbed.elf"


def missing_tools() -> list[str]:
    """Tools needed to build the image that are not on PATH (running it is the emulator
    backend's concern: the qemu backend checks for qemu-system-arm itself)."""
    return [tool for tool in (ARM_GCC, ARM_SIZE, "make") if shutil.which(tool) is None]


def ensure_image(rebuild: bool = False, *, board: str = DEFAULT_BOARD,
                 selftest: str | None = None) -> Path:
    """Build the board's image once per process (make is incremental) and return the ELF path.

    ``selftest="tls"`` builds the TLS self-test image in its own build directory.
    ``rebuild`` runs make again even if this process already built the image.
    Concurrent callers (threads, pytest-xdist workers) are serialised with a file lock.
    Raises FirmwareBuildError with the tail of make's output on failure.
    """
    elf = image_path(board, selftest=selftest)
    key = (board, selftest or "")
    with _lock:
        if not rebuild and key in _built and _built[key].is_file():
            return _built[key]
        missing = missing_tools()
        if missing:
            raise FirmwareBuildError(f"cannot build the firmware: missing {', '.join(missing)}")
        proc = run_make([f"BOARD={board}", *([f"SELFTEST={selftest}"] if selftest else [])])
        if proc.returncode != 0 or not elf.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise FirmwareBuildError(
                f"{' '.join(proc.args)} failed (exit {proc.returncode}):\n{tail}"
            )
        _built[key] = elf
        return elf


def run_make(
    args: list[str], timeout: float = 900, on_line: Callable[[str], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``make -C firmware -jN *args`` under an exclusive file lock (<build dir>/.lock),
    so concurrent processes never build into the same directory at once. The build and deps
    directories (BUILD_DIR, DEPS_DIR) and this interpreter (which fetches the deps) are
    passed to make.

    With ``on_line``, make's output (stdout and stderr merged) is passed on line by line as
    it comes (the CLI's progress display) and returned as ``stdout``. A build killed at
    ``timeout`` returns code -9 either way (``subprocess.run`` would raise instead).
    """
    cmd = ["make", "-C", str(FIRMWARE_DIR), f"-j{os.cpu_count() or 2}",
           f"WB_BUILD_ROOT={BUILD_DIR}", f"WB_DEPS_DIR={DEPS_DIR}", f"PYTHON={sys.executable}",
           *args]
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".lock", "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_line is not None:
                on_line(f"waiting for another build to finish ({BUILD_DIR / '.lock'})")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if on_line is None:
                try:
                    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                          check=False)
                except subprocess.TimeoutExpired as exc:
                    return subprocess.CompletedProcess(cmd, -9, str(exc.stdout or ""),
                                                       f"killed after {timeout:g}s")
            return _streamed(cmd, timeout, on_line)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _streamed(cmd: list[str], timeout: float,
              on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace")
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                on_line(line.rstrip())
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:  # interrupted while reading
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, code, "\n".join(lines), "")


def footprint(elf: Path) -> dict[str, int]:
    """Sizes from arm-none-eabi-size: text, data, bss, flash (text+data), ram (data+bss).

    ram is static RAM only: the 64 KiB stack and the heap (TLS buffers, wasm3) come on top.
    """
    out = subprocess.run(
        [ARM_SIZE, str(elf)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}
