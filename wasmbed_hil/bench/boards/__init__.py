"""Boards as data: one TOML file per board says how the harness runs an image on it.

A board file (``wasmbed_hil/bench/boards/<name>.toml`` for the boards we ship, or any path a
user gives with ``--hil-board PATH``) names the QEMU machine and CPU, which UART carries the
TLS link and which the console (by index: QEMU's ``-serial`` order), where the per-device
blob is placed, the memory sizes, and Renode's platform description. Emulators and board
backends read a ``Board``; none of them names a board in code. The fields are documented in
docs/firmware-contract.md; `load_board` checks every one (unknown keys, missing fields,
wrong types) and says which file and key is wrong.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BOARDS_DIR", "DEFAULT_BOARD", "Board", "BoardError", "board_names", "load_board",
    "resolve_board",
]

BOARDS_DIR = Path(__file__).resolve().parent
DEFAULT_BOARD = "mps2-an385"
#: The environment variable that carries --hil-board to every part of the bench.
BOARD_ENV = "WASMBED_HIL_BOARD"


class BoardError(ValueError):
    """A board file that cannot be read or does not describe a board; the message names the
    file and the key."""


@dataclass(frozen=True)
class Board:
    """One board: what an emulator or a board backend needs to run an image on it."""

    name: str
    description: str
    source: Path  # the file it was read from
    qemu_machine: str | None  # qemu-system-arm -M (None: QEMU cannot run this board)
    qemu_cpu: str | None  # qemu-system-arm -cpu (None: the machine's default)
    console_uart: int  # UART index of the console
    link_uart: int  # UART index of the TLS byte stream
    blob_address: int
    blob_max_size: int
    flash_size: int
    ram_size: int
    firmware_port: str | None = None  # firmware/ports/<port>: our image's port, if any
    renode_repl: str | None = None  # relative to the renode directory
    renode_console_uart: str | None = None  # sysbus peripheral names in the .repl
    renode_link_uart: str | None = None

    def serial_roles(self) -> list[str]:
        """The role of each UART index up to the highest used: "console", "link" or "none"
        (QEMU's ``-serial`` options go in this order; unused ones are ``null``)."""
        roles = ["none"] * (max(self.console_uart, self.link_uart) + 1)
        roles[self.console_uart] = "console"
        roles[self.link_uart] = "link"
        return roles

    def label(self, emulator: str) -> str:
        """The report's board label, e.g. ``mps2-an385 (cortex-m3, QEMU)``."""
        cpu = f"{self.qemu_cpu}, " if self.qemu_cpu else ""
        return f"{self.name} ({cpu}{emulator})"


# key -> (type, required); a nested table is a dict of the same.
_Spec = dict[str, Any]
_SCHEMA: _Spec = {
    "name": (str, True),
    "description": (str, False),
    "firmware_port": (str, False),
    "qemu": ({"machine": (str, True), "cpu": (str, False)}, False),
    "uart": ({"console": (int, True), "link": (int, True)}, True),
    "blob": ({"address": (int, True), "max_size": (int, True)}, True),
    "memory": ({"flash_size": (int, True), "ram_size": (int, True)}, True),
    "renode": ({"repl": (str, True), "console_uart": (str, False), "link_uart": (str, False)},
               False),
}
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "a table"}


def _check(table: dict[str, Any], schema: _Spec, where: str, prefix: str = "") -> None:
    unknown = sorted(set(table) - set(schema))
    if unknown:
        keys = ", ".join(prefix + k for k in unknown)
        raise BoardError(f"{where}: unknown key(s) {keys} (known: "
                         f"{', '.join(prefix + k for k in schema)})")
    for key, (kind, required) in schema.items():
        path = prefix + key
        if key not in table:
            if required:
                what = f"table [{path}]" if isinstance(kind, dict) else f"key {path}"
                raise BoardError(f"{where}: missing {what}")
            continue
        value = table[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise BoardError(f"{where}: {path} must be a table, not {value!r}")
            _check(value, kind, where, path + ".")
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise BoardError(f"{where}: {path} must be {_TYPE_NAMES[kind]}, not {value!r}")
        elif kind is int and value < 0:
            raise BoardError(f"{where}: {path} must not be negative, not {value}")
        elif kind is str and not value.strip():
            raise BoardError(f"{where}: {path} must not be empty")


def parse_board(data: dict[str, Any], source: Path) -> Board:
    """A Board from a board file's parsed TOML; BoardError says what is wrong."""
    where = str(source)
    _check(data, _SCHEMA, where)
    uart, blob, memory = data["uart"], data["blob"], data["memory"]
    if uart["console"] == uart["link"]:
        raise BoardError(f"{where}: uart.console and uart.link are both {uart['link']}: the "
                         "console and the TLS link need two UARTs")
    if max(uart["console"], uart["link"]) > 7:
        raise BoardError(f"{where}: UART indexes above 7 are not supported")
    if blob["max_size"] == 0 or blob["address"] + blob["max_size"] > 1 << 32:
        raise BoardError(f"{where}: blob.max_size must be > 0 and the blob must end below "
                         "4 GiB")
    qemu, renode = data.get("qemu", {}), data.get("renode", {})
    repl = renode.get("repl")
    if repl is not None and (Path(repl).is_absolute() or ".." in Path(repl).parts):
        raise BoardError(f"{where}: renode.repl {repl!r} must be relative to the renode "
                         "directory, without '..'")
    return Board(
        name=data["name"], description=data.get("description", ""), source=source,
        qemu_machine=qemu.get("machine"), qemu_cpu=qemu.get("cpu"),
        console_uart=uart["console"], link_uart=uart["link"],
        blob_address=blob["address"], blob_max_size=blob["max_size"],
        flash_size=memory["flash_size"], ram_size=memory["ram_size"],
        firmware_port=data.get("firmware_port"), renode_repl=repl,
        renode_console_uart=renode.get("console_uart", f"uart{uart['console']}"),
        renode_link_uart=renode.get("link_uart", f"uart{uart['link']}"),
    )


def board_names() -> list[str]:
    """The boards shipped with the harness (the files in this package)."""
    return sorted(path.stem for path in BOARDS_DIR.glob("*.toml"))


def _path_of(spec: str) -> Path:
    if os.sep in spec or spec.endswith(".toml"):
        return Path(spec).expanduser()
    if spec not in board_names():
        raise BoardError(f"unknown board {spec!r}: the shipped boards are "
                         f"{', '.join(board_names())}; give a board file's path for another")
    return BOARDS_DIR / f"{spec}.toml"


def load_board(spec: str | os.PathLike[str] = DEFAULT_BOARD) -> Board:
    """The board called ``spec`` (a shipped board's name) or read from the file ``spec``
    (a path: it contains a ``/`` or ends in ``.toml``)."""
    path = Path(spec) if isinstance(spec, os.PathLike) else _path_of(spec)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise BoardError(f"board file {path}: no such file") from None
    except OSError as exc:
        raise BoardError(f"board file {path}: cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BoardError(f"board file {path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file before parsing
        raise BoardError(f"board file {path}: not valid TOML: not UTF-8 text "
                         f"(byte {exc.start}: {exc.reason})") from None
    return parse_board(data, path.resolve())


def resolve_board(spec: str | None = None) -> Board:
    """The board asked for: ``spec``, else ``$WASMBED_HIL_BOARD`` (--hil-board), else the
    default board."""
    return load_board(spec or os.environ.get(BOARD_ENV) or DEFAULT_BOARD)
