"""Boards as data (bench.boards), the user's own image (bench.firmware.image) and the pytest
options that choose them (--hil-board, --hil-firmware, hil_firmware, firmware=)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from wasmbed_hil.bench.boards import (
    BOARDS_DIR,
    Board,
    BoardError,
    board_names,
    load_board,
    resolve_board,
)
from wasmbed_hil.bench.firmware import build
from wasmbed_hil.bench.firmware.blob import BLOB_ADDRESS, BLOB_MAX_SIZE
from wasmbed_hil.bench.firmware.image import FirmwareImageError, check_image
from wasmbed_hil.bench.machines.qemu import qemu_command

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_board("mps2-an385")

GOOD = """
name = "myboard"
[qemu]
machine = "mps2-an385"
[uart]
console = 2
link = 0
[blob]
address = 0x20000000
max_size = 0x4000
[memory]
flash_size = 0x1000
ram_size = 0x1000
"""


def _write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _define(header: Path, name: str) -> int:
    found = re.search(rf"^#define\s+{name}\s+(0x[0-9A-Fa-f]+)u?\b", header.read_text(), re.M)
    assert found, f"{header} defines no {name}"
    return int(found[1], 16)


# -- the shipped board agrees with the C side -------------------------------------------------


@pytest.mark.parametrize("name", board_names())
def test_each_shipped_board_with_a_port_agrees_with_its_board_port_h(name):
    """The board file and firmware/ports/<port>/board_port.h state the same blob placement:
    the harness loads the blob where the firmware reads it."""
    board = load_board(name)
    assert board.name == name
    if board.firmware_port is None:
        pytest.skip(f"{name} has no firmware port of ours")
    header = build.PORTS_DIR / board.firmware_port / "board_port.h"
    assert _define(header, "WB_BLOB_ADDRESS") == board.blob_address
    assert _define(header, "WB_BLOB_MAX_SIZE") == board.blob_max_size
    assert build.blob_address(board.firmware_port) == board.blob_address
    # the blob is the top of RAM, outside the linker's part (board.mk)
    board_mk = (build.PORTS_DIR / board.firmware_port / "board.mk").read_text()
    ram = int(re.search(r"__ram=(0x[0-9A-Fa-f]+)", board_mk)[1], 16)
    ram_size = int(re.search(r"__ram_size=(0x[0-9A-Fa-f]+)", board_mk)[1], 16)
    flash_size = int(re.search(r"__flash_size=(0x[0-9A-Fa-f]+)", board_mk)[1], 16)
    assert ram + ram_size == board.blob_address
    assert ram_size + board.blob_max_size == board.ram_size
    assert flash_size == board.flash_size


def test_the_shipped_board_is_the_one_blob_py_and_renode_know():
    assert (SHIPPED.blob_address, SHIPPED.blob_max_size) == (BLOB_ADDRESS, BLOB_MAX_SIZE)
    assert (SHIPPED.console_uart, SHIPPED.link_uart) == (0, 1)
    assert (ROOT / "renode" / str(SHIPPED.renode_repl)).is_file()
    assert (SHIPPED.renode_console_uart, SHIPPED.renode_link_uart) == ("uart0", "uart1")
    assert SHIPPED.label("QEMU") == "mps2-an385 (cortex-m3, QEMU)"


# -- the loader -------------------------------------------------------------------------------


def test_a_board_file_by_path_and_by_environment(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD)
    board = load_board(str(path))
    assert isinstance(board, Board) and board.name == "myboard" and board.source == path
    assert board.qemu_cpu is None and board.firmware_port is None and board.renode_repl is None
    assert (board.renode_console_uart, board.renode_link_uart) == ("uart2", "uart0")
    monkeypatch.setenv("WASMBED_HIL_BOARD", str(path))
    assert resolve_board().name == "myboard"
    assert resolve_board("mps2-an385").name == "mps2-an385"  # an explicit one wins
    monkeypatch.delenv("WASMBED_HIL_BOARD")
    assert resolve_board().name == "mps2-an385"


@pytest.mark.parametrize(("text", "message"), [
    ("colour = 'red'\n" + GOOD, r"unknown key\(s\) colour"),
    (GOOD.replace("[uart]", "[uart]\nbaud = 9600"), r"unknown key\(s\) uart\.baud"),
    (GOOD.replace('name = "myboard"', ""), "missing key name"),
    (GOOD.replace("link = 0", ""), "missing key uart.link"),
    (GOOD.split("[blob]")[0], r"missing table \[blob\]"),
    (GOOD.replace("console = 2", "console = '2'"), "uart.console must be an integer, not '2'"),
    (GOOD.replace("console = 2", "console = true"), "uart.console must be an integer"),
    (GOOD.replace('name = "myboard"', "name = 3"), "name must be a string, not 3"),
    (GOOD.replace("console = 2", "console = -1"), "uart.console must not be negative"),
    (GOOD.replace("console = 2", "console = 0"), "both 0"),
    (GOOD.replace('[qemu]\nmachine = "mps2-an385"', "qemu = 1"), "qemu must be a table"),
    (GOOD + "[renode]\nrepl = '../x.repl'\n", "relative to the renode directory"),
    (GOOD.replace("max_size = 0x4000", "max_size = 0"), "blob.max_size must be > 0"),
    ("name = ", "not valid TOML"),
])
def test_a_bad_board_file_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(BoardError, match=message) as info:
        load_board(str(path))
    assert str(path) in str(info.value)


def test_a_board_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "board.toml"
    path.write_bytes(GOOD.replace("myboard", "my\xffboard").encode("latin-1"))
    with pytest.raises(BoardError, match=r"not valid TOML: not UTF-8 text") as info:
        load_board(str(path))
    assert str(path) in str(info.value)


def test_unknown_names_and_missing_files_say_so(tmp_path):
    with pytest.raises(BoardError, match=r"unknown board 'nrf52'.*mps2-an385.*path"):
        load_board("nrf52")
    with pytest.raises(BoardError, match="no such file"):
        load_board(str(tmp_path / "none.toml"))


# -- the qemu argv follows the board ----------------------------------------------------------


def test_the_uart_roles_decide_the_serial_order_and_the_blob_goes_where_the_board_says(
        tmp_path):
    board = load_board(str(_write(tmp_path, GOOD.replace('machine = "mps2-an385"',
                                                          'machine = "m"\ncpu = "c"'))))
    argv = qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 4321, board=board)
    assert argv[:5] == ["qemu-system-arm", "-M", "m", "-cpu", "c"]
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    # link on UART0, nothing on UART1, the console on UART2
    assert serials == ["tcp:127.0.0.1:4321,nodelay=on", "null", "chardev:uart0"]
    assert f"loader,file={tmp_path / 'b.bin'},addr=0x20000000,force-raw=on" in argv
    shipped = qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 4321)
    assert shipped[:5] == ["qemu-system-arm", "-M", "mps2-an385", "-cpu", "cortex-m3"]


def test_a_board_without_qemu_cannot_run_on_qemu(tmp_path):
    board = load_board(str(_write(tmp_path, GOOD.replace('[qemu]\nmachine = "mps2-an385"',
                                                          ""))))
    with pytest.raises(BoardError, match=r"no QEMU machine for board 'myboard'.*\[qemu\]"):
        qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 1, board=board)


# -- the user's own image ---------------------------------------------------------------------


def _elf(path: Path, *, cls: int = 1, data: int = 1, e_type: int = 2, machine: int = 40) -> Path:
    header = b"\x7fELF" + bytes([cls, data, 1]) + bytes(9)
    path.write_bytes(header + struct.pack("<HH", e_type, machine) + bytes(32))
    return path


def test_an_arm_elf_executable_is_accepted(tmp_path):
    assert check_image(_elf(tmp_path / "ok.elf")) == (tmp_path / "ok.elf").resolve()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cls": 2}, "64-bit ELF"),
    ({"data": 2}, "big-endian"),
    ({"machine": 62}, "machine 62, not for ARM"),
    ({"e_type": 1}, "not an executable ELF"),
])
def test_an_elf_not_for_a_cortex_m_is_refused(tmp_path, kwargs, message):
    with pytest.raises(FirmwareImageError, match=message):
        check_image(_elf(tmp_path / "x.elf", **kwargs))


def test_a_missing_file_a_directory_and_a_raw_binary_are_refused(tmp_path):
    with pytest.raises(FirmwareImageError, match="no such file"):
        check_image(tmp_path / "none.elf")
    with pytest.raises(FirmwareImageError, match="not a file"):
        check_image(tmp_path)
    (tmp_path / "fw.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(FirmwareImageError, match=r"not an ELF file.*\.bin"):
        check_image(tmp_path / "fw.bin")


def test_our_built_image_passes_the_check():
    elf = build.image_path()
    if not elf.is_file():
        pytest.skip(f"{elf} not built")
    assert check_image(elf) == elf


# -- the pytest options -----------------------------------------------------------------------


def _pytest(tmp_path: Path, test: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_it.py").write_text(test)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-rA", str(tmp_path), *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def test_hil_firmware_on_the_virtual_backend_is_a_usage_error(tmp_path):
    elf = _elf(tmp_path / "fw.elf")
    out = _pytest(tmp_path, "def test_x():\n    pass\n", "--hil-backend=virtual",
                  f"--hil-firmware={elf}")
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout + out.stderr
    assert "the virtual backend runs no firmware image" in out.stderr


@pytest.mark.parametrize(("flag", "message"), [
    ("--hil-firmware=/nonexistent/fw.elf", "--hil-firmware: firmware image "
     "/nonexistent/fw.elf: no such file"),
    ("--hil-board=nosuch", "--hil-board (WASMBED_HIL_BOARD): unknown board 'nosuch'"),
])
def test_a_bad_image_or_board_stops_the_run_at_once(tmp_path, flag, message):
    out = _pytest(tmp_path, "def test_x():\n    pass\n", "--hil-backend=qemu", flag)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout + out.stderr
    assert message in out.stderr


def test_the_firmware_marker_skips_and_the_parameter_refuses_on_virtual(tmp_path):
    test = (
        "import pytest\n"
        "@pytest.mark.hil_firmware('fw.elf')\n"
        "def test_marked(device_factory):\n    device_factory()\n"
        "def test_param(device_factory):\n    device_factory(firmware='fw.elf')\n"
    )
    out = _pytest(tmp_path, test, "--hil-backend=virtual", "--strict-markers")
    assert "SKIPPED" in out.stdout and "the virtual backend runs no firmware image" in out.stdout
    assert "FAILED test_it.py::test_param - pytest.UsageError" in out.stdout, out.stdout
    assert "device_factory(firmware='fw.elf'): the virtual backend runs no firmware" in out.stdout


def test_on_qemu_a_board_file_by_path_and_an_image_per_test_and_per_device(tmp_path):
    """A copy of the shipped board under another name, given by path, runs our image; the
    marker and firmware= choose the image of a test and of a device (the emulator's -kernel)."""
    import shutil

    missing = [t for t in ("qemu-system-arm",) if not shutil.which(t)] + build.missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    elf = build.ensure_image()
    copy = tmp_path / "fw-copy.elf"
    shutil.copy(elf, copy)
    board = _write(tmp_path, (BOARDS_DIR / "mps2-an385.toml").read_text().replace(
        'name = "mps2-an385"', 'name = "my-an385"'), "my-an385.toml")
    test = (
        "import pytest\n"
        "def kernel(device):\n"
        "    return device.machine.argv[device.machine.argv.index('-kernel') + 1]\n"
        f"@pytest.mark.hil_firmware({copy.name!r})\n"
        "def test_marked(device_factory, gateway):\n"
        "    dev = device_factory('marked')\n"
        f"    assert kernel(dev) == {str(copy)!r}\n"
        "    gateway.wait_heartbeats(dev, 1)\n"
        "def test_param(device_factory):\n"
        f"    dev = device_factory('own', firmware={str(copy)!r})\n"
        "    other = device_factory('default')\n"
        f"    assert kernel(dev) == {str(copy)!r}\n"
        f"    assert kernel(other) == {str(elf)!r}\n"
    )
    out = _pytest(tmp_path, test, "--hil-backend=qemu", f"--hil-board={board}")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"wasmbed-hil: board {board}, firmware image ours" in out.stdout
    assert "2 passed" in out.stdout
