"""Render the Renode scripts in renode/ from their templates, with checked values.

The templates (renode/wasmbed-device.resc, renode/boards/*.resc) hold ``{{NAME}}``
placeholders. Every value that goes into one is checked first, because a Renode script is a
list of monitor commands: a path with a space splits an argument, a quote closes a string, a
newline starts a new command, ``$`` expands a variable, a backtick runs a nested command,
``#`` starts a comment. So values are refused, never escaped: machine and terminal names
are identifiers, paths are absolute and made of ``[A-Za-z0-9._+/-]`` only, ports are
integers in 1..65535. A last check on the rendered text of each value catches anything a
future caller forgets.

Command line (renders to stdout or --out)::

    python -m wasmbed_hil.bench.machines.renode device --elf E --blob B --link-port 3456 \\
        --console-port 3457 [--machine wasmbed] [--console-log PATH] [--out FILE]
    python -m wasmbed_hil.bench.machines.renode board stm32f4_discovery --elf ... (same options)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .... import resources
from ...firmware.blob import BLOB_ADDRESS

RENODE_DIR = resources.renode_dir()  # the checkout's renode/, or the packaged copy
PLATFORM = RENODE_DIR / "mps2-an385.repl"
DEVICE_TEMPLATE = RENODE_DIR / "wasmbed-device.resc"
BOARDS_DIR = RENODE_DIR / "boards"

PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")
_RENDERED = re.compile(r"[A-Za-z0-9._+/-]+")  # what any rendered value may contain
MAX_PATH = 1024


class ScriptError(ValueError):
    """A value that cannot go into a Renode script, or a template that does not fit."""


@dataclass(frozen=True)
class Board:
    """Where a board's script, console and link live."""

    key: str
    template: Path
    platform: str  # the .repl the script loads (a Renode-relative path for upstream boards)
    console_uart: str  # sysbus peripheral with the console
    link_uart: str  # sysbus peripheral with the wasmbed byte stream
    blob_address: int  # where the script loads the per-device blob (RAM or a flash partition)
    firmware: str  # what runs there
    overlay: str = ""  # firmware/ports/zephyr/boards/<overlay>.overlay: the app's side


MPS2_AN385 = Board(
    "mps2_an385", DEVICE_TEMPLATE, str(PLATFORM), "uart0", "uart1", BLOB_ADDRESS,
    "firmware/ports/mps2-an385 (the image the qemu backend runs)",
)
#: The upstream boards Renode ships platform files for, for the Zephyr/WAMR image.
BOARDS: dict[str, Board] = {
    "stm32f4_discovery": Board(
        "stm32f4_discovery", BOARDS_DIR / "stm32f4_discovery.resc",
        "platforms/boards/stm32f4_discovery-kit.repl", "usart2", "usart3", 0x080E0000,
        "firmware/ports/zephyr, west build -b stm32f4_disco", "stm32f4_disco",
    ),
    "nrf52840dk": Board(
        "nrf52840dk", BOARDS_DIR / "nrf52840dk.resc",
        "platforms/cpus/nrf52840.repl", "uart0", "uart1", 0x000F8000,
        "firmware/ports/zephyr, west build -b nrf52840dk/nrf52840", "nrf52840dk_nrf52840",
    ),
    "stm32f746g_disco": Board(
        "stm32f746g_disco", BOARDS_DIR / "stm32f746g_disco.resc",
        "platforms/boards/stm32f7_discovery-bb.repl", "usart1", "usart6", 0x080C0000,
        "firmware/ports/zephyr, west build -b stm32f746g_disco", "stm32f746g_disco",
    ),
}


def check_name(value: object, what: str = "name") -> str:
    """A machine or terminal name: an identifier of at most 48 characters."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ScriptError(
            f"{what} {value!r} refused: use a letter then letters, digits or '_' (at most 48)"
        )
    return value


def machine_name(device_name: str) -> str:
    """A valid Renode machine name derived from any device name ("device-0" -> "device_0")."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", device_name)[:40] or "device"
    if not name[0].isalpha():
        name = "d_" + name
    return check_name(name[:48], "machine name")


def check_port(value: object, what: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ScriptError(f"{what} {value!r} refused: an integer in 1..65535 is needed")
    return value


def check_path(value: object, what: str = "path", *, must_exist: bool = True) -> Path:
    """An absolute path made only of characters the monitor reads as one path argument."""
    if not isinstance(value, str | os.PathLike):
        raise ScriptError(f"{what} {value!r} refused: not a path")
    text = os.fspath(value)
    if not isinstance(text, str) or not _PATH.fullmatch(text) or len(text) > MAX_PATH:
        raise ScriptError(
            f"{what} {text!r} refused: an absolute path of letters, digits and . _ + - / only "
            "(no spaces, quotes, $, #, ;, backticks or newlines, which the Renode monitor "
            "would read as syntax)"
        )
    path = Path(text)
    if ".." in path.parts:
        raise ScriptError(f"{what} {text!r} refused: '..' components")
    if must_exist and not path.is_file():
        raise ScriptError(f"{what} {text!r}: no such file")
    return path


def render_template(template: str, values: Mapping[str, str], source: str = "template") -> str:
    """Fill every ``{{NAME}}``; the template and the values must match exactly."""
    wanted = set(PLACEHOLDER.findall(template))
    bad = sorted(n for n in wanted if not re.fullmatch(r"[A-Z][A-Z0-9_]*", n))
    if bad:
        raise ScriptError(f"{source}: malformed placeholders {bad}")
    missing = sorted(wanted - set(values))
    unused = sorted(set(values) - wanted)
    if missing or unused:
        raise ScriptError(f"{source}: no value for {missing}; values not in the template {unused}")
    for name, value in values.items():
        if not isinstance(value, str) or not _RENDERED.fullmatch(value):
            raise ScriptError(f"{source}: value for {name} refused: {value!r}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _values(
    machine: str, elf: Path | str, blob: Path | str, link_port: int, console_port: int,
    console_log: Path | str,
) -> dict[str, str]:
    link = check_port(link_port, "link port")
    console = check_port(console_port, "console port")
    if link == console:
        raise ScriptError(f"link and console need two ports, both are {link}")
    return {
        "MACHINE": check_name(machine, "machine name"),
        "ELF": str(check_path(elf, "ELF image")),
        "BLOB": str(check_path(blob, "blob")),
        "LINK_PORT": str(link),
        "CONSOLE_PORT": str(console),
        "CONSOLE_LOG": str(check_path(console_log, "console log", must_exist=False)),
    }


def render_device_script(
    *, machine: str, elf: Path | str, blob: Path | str, link_port: int, console_port: int,
    console_log: Path | str, platform: Path | str = PLATFORM, template: Path = DEVICE_TEMPLATE,
    console_uart: str = "uart0", link_uart: str = "uart1", blob_address: int = BLOB_ADDRESS,
) -> str:
    """renode/wasmbed-device.resc for one device: by default the MPS2-AN385 image; a board
    file (bench.boards) gives another `platform`, its UARTs' names and its blob address."""
    values = _values(machine, elf, blob, link_port, console_port, console_log)
    values["PLATFORM"] = str(check_path(platform, "platform description"))
    values["CONSOLE_UART"] = check_name(console_uart, "console UART")
    values["LINK_UART"] = check_name(link_uart, "link UART")
    if console_uart == link_uart:
        raise ScriptError(f"console and link need two UARTs, both are {link_uart}")
    if isinstance(blob_address, bool) or not isinstance(blob_address, int) or not (
            0 <= blob_address < 1 << 32):
        raise ScriptError(f"blob address {blob_address!r} refused: a 32-bit address is needed")
    values["BLOB_ADDRESS"] = f"0x{blob_address:08X}"
    return render_template(template.read_text(), values, str(template))


def render_board_script(
    board: str, *, machine: str, elf: Path | str, blob: Path | str, link_port: int,
    console_port: int, console_log: Path | str,
) -> str:
    """renode/boards/<board>.resc for the Zephyr image on an upstream board."""
    if board not in BOARDS:
        raise ScriptError(f"unknown board {board!r}; known: {', '.join(sorted(BOARDS))}")
    template = BOARDS[board].template
    values = _values(machine, elf, blob, link_port, console_port, console_log)
    return render_template(template.read_text(), values, str(template))


def script_commands(text: str) -> list[str]:
    """A rendered script as the monitor commands Renode runs for it, one string each.

    What Renode's ``include`` does with a file (infrastructure 0c7d0762, Monitor.cs
    TryExecuteScript): lines are commands; a triple-quote block is one command with its line
    ends, joined to the line before it when the block's first line starts with the
    terminator. Comment lines (``#`` and ``:`` start a CommentToken, Tokenizer.cs:22, :92)
    and blank lines are left out: they do nothing. For sending a script one command at a
    time (renode-test's ``Execute Command``), so that an error names its command.
    """
    terminator = '"""'
    commands: list[str] = []
    block: list[str] = []
    eating = False
    for line in text.splitlines():
        if terminator in line:
            if not eating and line.startswith(terminator) and commands:
                block.append(commands.pop())
            block.append(line)
            if eating:
                commands.append("\n".join(block) + "\n")
                block = []
            eating = not eating
        elif eating:
            block.append(line)
        elif line.strip() and not line.lstrip().startswith(("#", ":")):
            commands.append(line.strip())
    if eating:
        raise ScriptError("script ends inside a triple-quote block")
    return commands


def include_command(script: Path | str) -> str:
    """The monitor command that runs a rendered script."""
    return f"include @{check_path(script, 'script')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wasmbed_hil.bench.machines.renode",
        description="Render a Renode script for one device from the templates in renode/.",
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    device = sub.add_parser("device", help="renode/wasmbed-device.resc (MPS2-AN385 image)")
    board = sub.add_parser("board", help="renode/boards/<board>.resc (Zephyr image)")
    board.add_argument("board", choices=sorted(BOARDS))
    for p in (device, board):
        p.add_argument("--elf", required=True, type=Path)
        p.add_argument("--blob", required=True, type=Path)
        p.add_argument("--link-port", required=True, type=int)
        p.add_argument("--console-port", required=True, type=int)
        p.add_argument("--machine", default="wasmbed")
        p.add_argument("--console-log", type=Path, help="default: console.log beside --out")
        p.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    out = args.out.resolve() if args.out else None
    log = args.console_log or ((out.parent if out else Path.cwd()) / "console.log")
    common = {
        "machine": args.machine, "elf": args.elf.resolve(), "blob": args.blob.resolve(),
        "link_port": args.link_port, "console_port": args.console_port,
        "console_log": log.resolve(),
    }
    try:
        if args.kind == "device":
            text = render_device_script(**common)
        else:
            text = render_board_script(args.board, **common)
    except ScriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"wrote {out}; run: renode --disable-xwt {out}", file=sys.stderr)
    return 0
