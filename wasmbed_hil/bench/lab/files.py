"""The labgrid files that describe a lab: an environment file for local use, an exporter
configuration and the coordinator's places for sharing it.

These are the files a team writes for its real boards (docs/boards.md); a stand-in lab
(bench.lab.lab) writes them for its QEMU boards. What the board backend reads of them:

- per target (local) or place (remote): two serial ports named ``console`` and ``link``
  (RawSerialPort locally, NetworkSerialPort through an exporter), a PowerProtocol driver
  (ExternalPowerDriver, NetworkPowerDriver...), and the flasher: the target option
  ``wasmbed_flasher`` (an HTTP URL taking ``PUT {url}/image`` and ``{url}/blob``), or
  through an exporter, the stand-in's convention of the flasher beside its power port.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The tag every stand-in place carries; --board-places selects on it.
STANDIN_TAG = ("board", "standin")
CONSOLE, LINK = "console", "link"
FLASHER_OPTION = "wasmbed_flasher"


@dataclass(frozen=True)
class BoardPorts:
    """What the lab tells about one board: its serial ports, power and flasher."""

    name: str
    index: int
    console: str  # the stable path (a symlink, like /dev/serial/by-id/...)
    link: str
    console_device: str  # the tty itself (/dev/pts/N): what an exporter shares
    link_device: str
    power_url: str  # simplerest's host template
    flash_url: str


def power_command(power_url: str, index: int, action: str) -> str:
    """The command an ExternalPowerDriver runs to switch a stand-in board."""
    url = power_url.replace("{index}", str(index))
    return shlex.join([sys.executable, "-m", "wasmbed_hil.bench.lab", "power", url, action])


def environment(boards: list[BoardPorts]) -> dict[str, Any]:
    """A labgrid environment naming every board as a target (local mode)."""
    targets: dict[str, Any] = {}
    for b in boards:
        targets[b.name] = {
            "resources": [
                {"RawSerialPort": {"name": CONSOLE, "port": b.console, "speed": 115200}},
                {"RawSerialPort": {"name": LINK, "port": b.link, "speed": 115200}},
            ],
            "drivers": [
                {"ExternalPowerDriver": {
                    "cmd_on": power_command(b.power_url, b.index, "on"),
                    "cmd_off": power_command(b.power_url, b.index, "off"),
                    "cmd_cycle": power_command(b.power_url, b.index, "cycle"),
                }},
            ],
            "options": {FLASHER_OPTION: b.flash_url},
        }
    return {"targets": targets}


def exporter_config(boards: list[BoardPorts]) -> dict[str, Any]:
    """A labgrid-exporter configuration sharing every board: one group per board."""
    return {
        b.name: {
            CONSOLE: {"cls": "RawSerialPort", "port": b.console_device, "speed": 115200},
            LINK: {"cls": "RawSerialPort", "port": b.link_device, "speed": 115200},
            "power": {"cls": "NetworkPowerPort", "model": "simplerest",
                      "host": b.power_url, "index": b.index},
        }
        for b in boards
    }


def places(boards: list[BoardPorts], exporter: str) -> dict[str, Any]:
    """The coordinator's places.yaml: a place per board matching its exporter group,
    tagged so that a reservation can ask for any free stand-in."""
    now = time.time()
    return {
        b.name: {
            "aliases": [],
            "comment": f"QEMU stand-in board {b.index}",
            "tags": {STANDIN_TAG[0]: STANDIN_TAG[1]},
            "matches": [{"exporter": exporter, "group": b.name, "cls": "*", "name": None,
                         "rename": None}],
            "created": now,
            "changed": now,
        }
        for b in boards
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
