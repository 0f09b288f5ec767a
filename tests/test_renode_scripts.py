"""The Renode platform description and scripts in renode/, as generated for the backend.

Golden checks of every rendered script (each command, in order, placeholders filled),
refusal of any value that could smuggle monitor syntax in, the .repl read by a structural
parser and compared with the firmware's own constants (board_port.h, board.c, board.mk's
memory map, blob.py), and the backend's unavailable reason. None of this needs Renode.
"""

from __future__ import annotations

import itertools
import re
import stat
from pathlib import Path

import pytest

from wasmbed_hil.bench.backends import get_backend
from wasmbed_hil.bench.backends.renode import RENODE_MISSING, RenodeBackend
from wasmbed_hil.bench.boards import load_board
from wasmbed_hil.bench.firmware.blob import BLOB_ADDRESS, BLOB_MAX_SIZE
from wasmbed_hil.bench.machines.renode import machine as renode_machine
from wasmbed_hil.bench.machines.renode.repl import ReplError, parse_repl
from wasmbed_hil.bench.machines.renode.scripts import (
    BOARDS,
    DEVICE_TEMPLATE,
    MPS2_AN385,
    PLATFORM,
    RENODE_DIR,
    ScriptError,
    check_path,
    include_command,
    machine_name,
    main,
    render_board_script,
    render_device_script,
    render_template,
)

ROOT = Path(__file__).resolve().parents[1]
PORT = ROOT / "firmware" / "ports" / "mps2-an385"  # the bare-metal port


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    elf = tmp_path / "wasmbed.elf"
    blob = tmp_path / "blob.bin"
    elf.write_bytes(b"\x7fELF")
    blob.write_bytes(b"WBLB")
    return {"elf": elf, "blob": blob, "console_log": tmp_path / "uart0.log"}


def _device(files: dict[str, Path], **overrides: object) -> str:
    args: dict[str, object] = {
        "machine": "device_0", "link_port": 40001, "console_port": 40002, **files, **overrides,
    }
    return render_device_script(**args)  # type: ignore[arg-type]


def _commands(script: str) -> list[str]:
    """The monitor lines of a script: comments and blank lines left out, macro bodies kept."""
    out = []
    for line in script.splitlines():
        text = line.strip()
        if not text or text.startswith(("#", ":")):
            continue
        out.append(text)
    return out


def _expected(board_platform: str, console: str, link: str, blob_at: int, f: dict) -> list[str]:
    return [
        'emulation CreateServerSocketTerminal 40001 "device_0_link" false',
        'emulation CreateServerSocketTerminal 40002 "device_0_console" false',
        'mach create "device_0"',
        f"machine LoadPlatformDescription @{board_platform}",
        f"connector Connect sysbus.{link} device_0_link",
        f"connector Connect sysbus.{console} device_0_console",
        f"sysbus.{console} CreateFileBackend @{f['console_log']} true",
        "macro reset",
        '"""',
        f"sysbus LoadELF @{f['elf']}",
        f"sysbus LoadBinary @{f['blob']} 0x{blob_at:08X}",
        '"""',
        "runMacro $reset",
        "start",
    ]


# --- golden scripts ------------------------------------------------------------------------


def test_device_script_is_every_command_in_order_with_every_placeholder_filled(files):
    script = _device(files)
    assert "{{" not in script and "}}" not in script
    assert _commands(script) == _expected(str(PLATFORM), "uart0", "uart1", BLOB_ADDRESS, files)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_scripts_load_the_shipped_platform_and_wire_console_and_link(board, files):
    spec = BOARDS[board]
    script = render_board_script(
        board, machine="device_0", link_port=40001, console_port=40002, **files
    )
    assert "{{" not in script
    assert _commands(script) == _expected(
        spec.platform, spec.console_uart, spec.link_uart, spec.blob_address, files
    )
    # Renode-relative paths of platform files Renode ships, never a path of ours
    assert spec.platform.startswith("platforms/") and spec.platform.endswith(".repl")


@pytest.mark.parametrize("board", [MPS2_AN385, *BOARDS.values()], ids=lambda b: b.key)
def test_every_socket_terminal_is_raw_not_telnet(board, files):
    """Telnet mode would send negotiation bytes into the TLS stream and swallow the first
    bytes the bridge sends."""
    text = board.template.read_text()
    terminals = [ln for ln in text.splitlines() if ln.startswith("emulation CreateServer")]
    assert len(terminals) == 2
    assert all(ln.rstrip().endswith(" false") for ln in terminals)


@pytest.mark.parametrize("board", [MPS2_AN385, *BOARDS.values()], ids=lambda b: b.key)
def test_templates_use_exactly_the_documented_placeholders(board):
    names = set(re.findall(r"\{\{([A-Z_]+)\}\}", board.template.read_text()))
    common = {"MACHINE", "ELF", "BLOB", "LINK_PORT", "CONSOLE_PORT", "CONSOLE_LOG"}
    device = {"PLATFORM", "CONSOLE_UART", "LINK_UART", "BLOB_ADDRESS"}
    assert names == (common | device if board is MPS2_AN385 else common)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_scripts_agree_with_the_zephyr_apps_overlays(board):
    """The Zephyr app (firmware/ports/zephyr/, written separately) names its transport UART and
    its blob partition in its board overlays; the scripts must wire and load the same."""
    spec = BOARDS[board]
    overlay = ROOT / "firmware" / "ports" / "zephyr" / "boards" / f"{spec.overlay}.overlay"
    if not overlay.is_file():
        pytest.skip(f"{overlay.relative_to(ROOT)} not in this checkout")
    text = overlay.read_text()
    assert re.search(rf"wasmbed,transport-uart = &{spec.link_uart};", text)
    assert int(re.search(r"flash (0x[0-9A-Fa-f]+)", text)[1], 16) == spec.blob_address


def test_blob_address_agrees_with_blob_py_and_board_h():
    board_h = (PORT / "board_port.h").read_text()
    assert int(re.search(r"#define WB_BLOB_ADDRESS (0x[0-9A-Fa-f]+)u", board_h)[1], 16) == (
        BLOB_ADDRESS
    )
    assert "LoadBinary @{{BLOB}} {{BLOB_ADDRESS}}" in DEVICE_TEMPLATE.read_text()
    assert load_board("mps2-an385").blob_address == BLOB_ADDRESS


def test_include_command_names_the_script_by_absolute_path(files):
    assert include_command(files["elf"]) == f"include @{files['elf']}"
    with pytest.raises(ScriptError):
        include_command("relative.resc")


# --- refusals ------------------------------------------------------------------------------

BAD_NAMES = ["dev 0", 'dev"; quit', "dev\nquit", "$reset", "dev`x`", "0dev", "", "a" * 49,
             "dev-0", "dev.0", "dév", None, 7]
BAD_PATHS = ["relative/x.elf", "/tmp/a b.elf", '/tmp/a"b.elf', "/tmp/$HOME.elf",
             "/tmp/a;quit.elf", "/tmp/a\nquit", "/tmp/`whoami`.elf", "/tmp/#c.elf",
             "/tmp/../etc/passwd", "/tmp/a'b", "/tmp/a\\b", "/tmp/@x", "/tmp/<0x0 0x1>",
             "/tmp/x:y", "/" + "a" * 1100, 42]
BAD_PORTS = [0, 65536, -1, True, "4000", 4000.0, None]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_machine_names_that_are_not_identifiers_are_refused(name, files):
    with pytest.raises(ScriptError, match="machine name"):
        _device(files, machine=name)


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize("field", ["elf", "blob", "console_log"])
def test_paths_with_monitor_syntax_are_refused(path, field, files):
    with pytest.raises(ScriptError, match=r"refused|no such file"):
        _device(files, **{field: path})


@pytest.mark.parametrize("port", BAD_PORTS)
@pytest.mark.parametrize("field", ["link_port", "console_port"])
def test_ports_outside_1_65535_are_refused(port, field, files):
    with pytest.raises(ScriptError, match="port"):
        _device(files, **{field: port})


def test_missing_files_and_shared_ports_are_refused(files, tmp_path):
    with pytest.raises(ScriptError, match="no such file"):
        _device(files, elf=tmp_path / "missing.elf")
    with pytest.raises(ScriptError, match="two ports"):
        _device(files, link_port=40001, console_port=40001)
    with pytest.raises(ScriptError, match="unknown board"):
        render_board_script("lm3s6965", machine="x", link_port=1, console_port=2, **files)


def test_render_template_wants_an_exact_match_and_rechecks_every_value():
    assert render_template("a {{X}} b", {"X": "1"}) == "a 1 b"
    with pytest.raises(ScriptError, match=r"no value for \['Y'\]"):
        render_template("{{X}} {{Y}}", {"X": "1"})
    with pytest.raises(ScriptError, match=r"not in the template \['Z'\]"):
        render_template("{{X}}", {"X": "1", "Z": "2"})
    with pytest.raises(ScriptError, match="malformed"):
        render_template("{{x y}}", {})
    for value in ("a b", "a\nquit", '"', "$x", "`x`", "", "#"):
        with pytest.raises(ScriptError, match="refused"):
            render_template("{{X}}", {"X": value})


def test_device_names_map_to_machine_names():
    assert machine_name("device-0") == "device_0"
    assert machine_name("fleet.3") == "fleet_3"
    assert machine_name("0dev") == "d_0dev"
    assert machine_name("") == "device"
    assert len(machine_name("x" * 200)) <= 48


def test_check_path_keeps_good_paths(tmp_path):
    good = tmp_path / "ok_1.2-x+y.bin"
    good.write_bytes(b"")
    assert check_path(good) == good
    assert check_path(str(good)) == good


def test_the_command_line_renders_a_script_and_reports_refusals(files, tmp_path, capsys):
    out = tmp_path / "dev.resc"
    argv = ["device", "--elf", str(files["elf"]), "--blob", str(files["blob"]),
            "--link-port", "3456", "--console-port", "3457", "--out", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    assert 'emulation CreateServerSocketTerminal 3456 "wasmbed_link" false' in text
    assert f"CreateFileBackend @{tmp_path / 'console.log'} true" in text
    assert main(["board", "nrf52840dk", *argv[1:-2]]) == 0
    assert "platforms/cpus/nrf52840.repl" in capsys.readouterr().out
    assert main([*argv[:-2], "--machine", "bad name"]) == 2
    assert "machine name 'bad name' refused" in capsys.readouterr().err


# --- the platform description --------------------------------------------------------------


def _define(path: Path, name: str) -> int:
    m = re.search(rf"#define {name} (0x[0-9A-Fa-f]+|\d+)u", path.read_text())
    assert m, f"{name} not in {path}"
    return int(m[1], 0)


def _defsym(name: str) -> int:
    makefile = (PORT / "board.mk").read_text()
    value = re.search(rf"--defsym={name}=(\S+?)\s", makefile)[1]
    if value.startswith("$("):
        value = re.search(rf"^{value[2:-1]} := (\S+)$", makefile, re.M)[1]
    return int(value, 0)


@pytest.fixture(scope="module")
def repl() -> dict:
    return {e.name: e for e in parse_repl(PLATFORM.read_text())}


def test_every_peripheral_has_a_model_type_and_every_bus_device_an_address(repl):
    assert set(repl) == {"flash", "sram", "nvic", "cpu", "dwt", "uart0", "uart1"}
    for entry in repl.values():
        assert entry.type, entry.name
        assert entry.registration == "sysbus", entry.name
        if entry.type != "CPU.CortexM":  # CPUs register on the bus without an address
            assert entry.address is not None, entry.name


def test_addresses_are_those_of_board_h_and_board_c(repl):
    assert repl["uart0"].address == _define(PORT / "board_port.h", "WB_UART0_BASE")
    assert repl["uart1"].address == _define(PORT / "board_port.h", "WB_UART1_BASE")
    # The time base: the DWT (CYCCNT at DWT_CYCCNT), not timer 0, whose Renode model no
    # release has; board.c probes for timer 0 and finds nothing mapped there.
    assert repl["dwt"].address == _define(PORT / "board.c", "DWT_BASE")
    assert _define(PORT / "board.c", "TIMER0_BASE") not in {e.address for e in repl.values()}
    assert repl["nvic"].address == 0xE000E000  # SysTick at 0xE000E010 (board.c SYST_CSR)
    assert {repl[n].type for n in ("uart0", "uart1")} == {"UART.CMSDK_APB_UART"}
    assert repl["dwt"].type == "Miscellaneous.DWT"
    # The time base probe, in this order, each with its console name.
    board_c = (PORT / "board.c").read_text()
    names = re.search(r'names\[\] = \{(.*?)\}', board_c)[1]
    assert names == '"cmsdk-timer0", "dwt-cyccnt", "systick"'


def test_the_platform_uses_only_models_that_every_release_since_1_15_has(repl):
    # Checked against renode-infrastructure at each release's pin (renode/README.md):
    # Timers.Arm_CMSDK_Timer came after 1.16.1 and must not come back.
    released = {"Memory.MappedMemory", "IRQControllers.NVIC", "CPU.CortexM",
                "UART.CMSDK_APB_UART", "Miscellaneous.DWT"}
    assert {e.type for e in repl.values()} <= released


def test_memory_covers_the_linker_map_and_the_blob(repl):
    flash, sram = repl["flash"], repl["sram"]
    assert flash.address == _defsym("__flash")
    assert flash.end() == _defsym("__flash") + _defsym("__flash_size")
    ram_end = _defsym("__ram") + _defsym("__ram_size")
    blob_at = _define(PORT / "board_port.h", "WB_BLOB_ADDRESS")
    blob_end = blob_at + _define(PORT / "board_port.h", "WB_BLOB_MAX_SIZE")
    assert (blob_at, blob_end - blob_at) == (BLOB_ADDRESS, BLOB_MAX_SIZE)
    assert sram.address == _defsym("__ram") and ram_end <= blob_at
    assert sram.end() == blob_end  # the blob is the top of the RAM Renode maps


def test_clocks_and_interrupts_are_the_an385_ones(repl):
    cpu_hz = _define(PORT / "board_port.h", "WB_CPU_HZ")
    assert int(repl["nvic"].attributes["systickFrequency"]) == cpu_hz
    for name in ("dwt", "uart0", "uart1"):
        assert int(repl[name].attributes["frequency"]) == cpu_hz, name
    irqs = {(e.name, c.source): c.numbers for e in repl.values() for c in e.connections}
    assert irqs == {
        ("nvic", "IRQ"): [0],
        ("uart0", "RxInterrupt"): [0], ("uart0", "TxInterrupt"): [1],
        ("uart1", "RxInterrupt"): [2], ("uart1", "TxInterrupt"): [3],
    }
    assert next(c.target for c in repl["nvic"].connections) == "cpu"
    assert repl["cpu"].attributes == {"cpuType": '"cortex-m3"', "nvic": "nvic"}


def test_no_two_peripherals_overlap(repl):
    model_size = {"UART.CMSDK_APB_UART": 0x1000, "Miscellaneous.DWT": 0x1000,
                  "IRQControllers.NVIC": 0x1000}
    spans = []
    for e in repl.values():
        if e.address is None:
            continue
        end = e.end() or e.address + model_size[e.type]
        spans.append((e.address, end, e.name))
    spans.sort()
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        assert end <= start, f"{a} overlaps {b}"


def test_parser_reads_renode_style_descriptions():
    text = '''
using "platforms/cpus/stm32f4.repl"
/* a block
   comment */
usart1: UART.STM32_UART @ sysbus <0x40011000, +0x100>   // trailing comment
    -> nvic@37
can1: CAN.STMCAN @ sysbus <0x40006400, 0x400067FF>
    [0-3] -> nvic@[19-22]
cpu: CPU.CortexM @ sysbus { cpuType: "cortex-m85"; nvic: nvic }
sysbus:
    init:
        Tag <0x40021000, 0x40021003> "GPIOE_MODER" 0xFFFFFFFF
        ApplySVD @https://example/x.svd.gz
gpioPortD:
    12 -> UserLED@0
'''
    entries = parse_repl(text)
    by = {e.name: e for e in entries}
    assert (by["usart1"].address, by["usart1"].size) == (0x40011000, 0x100)
    assert by["can1"].size == 0x400 and by["can1"].connections[0].numbers == [19, 20, 21, 22]
    assert by["cpu"].attributes == {"cpuType": '"cortex-m85"', "nvic": "nvic"}
    assert by["sysbus"].type is None and by["sysbus"].attributes == {}
    assert by["gpioPortD"].connections[0].source == "12"


@pytest.mark.parametrize("text, message", [
    ("uart0: UART.CMSDK_APB_UART @\n", "without a registration"),
    ("uart0: UART.CMSDK_APB_UART @ sysbus 0xZZ\n", "bad address"),
    ("uart0: UART.CMSDK APB @ sysbus 0x0\n", "bad model type"),
    ("uart0 UART.CMSDK_APB_UART @ sysbus 0x0\n", "expected 'name: Type"),
    ("    size: 0x10\n", "outside an entry"),
    ("m: Memory.MappedMemory @ sysbus 0x0\n    size: 1\n      x: 2\n", "indentation"),
    ("m: Memory.MappedMemory @ sysbus 0x0\n    size 1\n", "neither an attribute"),
    ("a: X.Y @ sysbus 0x0\na: X.Y @ sysbus 0x10\n", "defined again"),
    ("a: X.Y @ sysbus <0x10, 0x0>\n", "empty range"),
    ("/* open\n", "unterminated"),
])
def test_parser_names_the_bad_line(text, message):
    with pytest.raises(ReplError, match=message):
        parse_repl(text)


# --- the backend's availability ------------------------------------------------------------


def test_renode_is_registered_and_unavailable_here_with_the_stated_reason(monkeypatch, tmp_path):
    assert get_backend("renode") is RenodeBackend
    monkeypatch.delenv("WASMBED_RENODE", raising=False)
    monkeypatch.delenv("PYRENODE_PKG", raising=False)
    monkeypatch.delenv("PYRENODE_BUILD_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert RenodeBackend.unavailable_reason() == RENODE_MISSING
    assert RENODE_MISSING == (
        "renode not found on PATH (install Renode 1.15 or newer from https://renode.io; "
        "or pass --renode-binary to pytest, or set WASMBED_RENODE)"
    )


def test_wasmbed_renode_names_the_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("WASMBED_RENODE", str(tmp_path / "nope"))
    assert "WASMBED_RENODE" in RenodeBackend.unavailable_reason()
    fake = tmp_path / "renode-1.15"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("WASMBED_RENODE", str(fake))
    assert renode_machine.find_renode() == str(fake)
    monkeypatch.setenv("WASMBED_RENODE", "renode-1.15")  # a command name, looked up on PATH
    assert renode_machine.find_renode() == str(fake)
    reason = RenodeBackend.unavailable_reason()  # renode found; the image may be missing
    assert reason is None or "no firmware image" in reason


def test_renode_dir_holds_the_documented_files():
    for rel in ("mps2-an385.repl", "wasmbed-device.resc", "README.md",
                "boards/stm32f4_discovery.resc", "boards/nrf52840dk.resc",
                "boards/stm32f746g_disco.resc"):
        assert (RENODE_DIR / rel).is_file(), rel


def test_a_board_file_gives_the_device_script_its_uarts_and_blob_address(files):
    """--hil-board: the [renode] UART names and the [blob] address of a board file reach the
    script (the renode backend passes them); bad ones are refused like any value."""
    script = _device(files, console_uart="uart2", link_uart="uart0", blob_address=0x20000000)
    assert _commands(script) == _expected(str(PLATFORM), "uart2", "uart0", 0x20000000, files)
    with pytest.raises(ScriptError, match="two UARTs"):
        _device(files, console_uart="uart1", link_uart="uart1")
    with pytest.raises(ScriptError, match="console UART"):
        _device(files, console_uart="uart0; quit")
    with pytest.raises(ScriptError, match="32-bit address"):
        _device(files, blob_address=1 << 32)


def test_the_renode_backend_runs_the_board_files_platform_and_each_devices_image(
        files, tmp_path, monkeypatch):
    from wasmbed_hil.bench.loop import LoopThread
    from wasmbed_hil.pki import FleetCA

    board = tmp_path / "b.toml"
    board.write_text(
        'name = "b"\n[uart]\nconsole = 1\nlink = 0\n[blob]\naddress = 0x20001000\n'
        'max_size = 0x4000\n[memory]\nflash_size = 1\nram_size = 1\n'
        '[renode]\nrepl = "mps2-an385.repl"\nconsole_uart = "usart2"\nlink_uart = "usart3"\n')
    monkeypatch.setenv("WASMBED_HIL_BOARD", str(board))
    monkeypatch.setenv("WASMBED_HIL_FIRMWARE", str(files["elf"]))
    files["elf"].write_bytes(b"\x7fELF\x01\x01\x01" + bytes(9) + b"\x02\x00\x28\x00" + bytes(32))
    own = tmp_path / "own.elf"
    own.write_bytes(files["elf"].read_bytes())
    loop = LoopThread()
    try:
        backend = RenodeBackend(loop, tmp_path)
        assert backend.elf == files["elf"]  # the given image: nothing built
        device = backend.create("d1", FleetCA.create().issue_device("d1"), ("127.0.0.1", 9),
                                firmware=own)
        blob = tmp_path / "machines" / "d1" / "blob.bin"
        script = device.machine.script("d1", 40001, 40002)
        assert f"LoadPlatformDescription @{RENODE_DIR / 'mps2-an385.repl'}" in script
        assert "connector Connect sysbus.usart3 d1_link" in script
        assert "connector Connect sysbus.usart2 d1_console" in script
        assert f"sysbus LoadELF @{own}" in script
        assert f"sysbus LoadBinary @{blob} 0x20001000" in script
        device.close()
        backend.close()
    finally:
        assert loop.close() == []
