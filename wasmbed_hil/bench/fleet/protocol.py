"""What a fleet worker and its parent say to each other: one JSON object per line.

Commands (parent -> worker), each with an "id" its reply repeats:

    add        names, options (VirtualDeviceConfig fields), key_type: issue credentials and
               make the devices, powered off
    power_on   names (null: all), rate (per second, 0: all at once); concurrency > 0: at
               most that many joins in flight, each awaited (online_timeout): the reply
               has failures and join times (p50/p99)
    power_off  names (null: all)
    wait       names (null: all), lifecycle, timeout: until each is in that lifecycle;
               {"ok", "late": [states of up to 20 laggards], "late_count"}
    states     names (null: all): {"devices": [DeviceState fields]}
    counts     {"lifecycles": {lifecycle: n}, "heartbeats", "connections"}
    mark       start a window of heartbeat round trips
    collect    since mark: {"rtts_us", "window_s", "acks_min", "acks_max", "unacked_over_1s"
               (heartbeats of ONLINE devices unanswered over 1 s), "unacked_devices",
               "unacked_examples" (up to 10 of their names), "open_links" (lean links on the
               worker's hub; null on streams), "gc_max_ms", "lag_max_ms", "rss_kb", "cpu_s",
               lifecycles, connections}
    stop       power every device off and exit (end of input does the same)
    fail, crash  for the tests of error reporting and of a worker's death

A reply is {"id", ...} or {"id", "error", "traceback"}; the worker's first line is
{"ready": true, "pid"}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..seams import Lifecycle

COMMANDS = frozenset({"add", "power_on", "power_off", "wait", "states", "counts", "mark",
                      "collect", "stop", "fail", "crash"})
KEY_TYPES = frozenset({"p256", "ed25519"})
#: How a worker's devices connect (worker.py --link): lean links on the worker's hub, or
#: asyncio's TLS streams.
LINKS = frozenset({"lean", "stream"})


def _names(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise ValueError("names: a list of non-empty strings or null")


def _number(command: dict[str, Any], key: str, default: float | None = None) -> None:
    value = command.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}: a finite number >= 0, got {value!r}")


def check_command(command: Any) -> dict[str, Any]:
    """The command if well formed, else ValueError saying what is wrong."""
    if not isinstance(command, dict):
        raise ValueError("a command is a JSON object")
    cmd = command.get("cmd")
    if cmd not in COMMANDS:
        raise ValueError(f"cmd: one of {', '.join(sorted(COMMANDS))}, got {cmd!r}")
    if cmd != "stop" and not isinstance(command.get("id"), int):
        raise ValueError("id: an integer")
    _names(command.get("names"))
    if cmd == "add":
        if command.get("names") is None:
            raise ValueError("add: names is required")
        if not isinstance(command.get("options", {}), dict):
            raise ValueError("options: an object")
        if command.get("key_type", "p256") not in KEY_TYPES:
            raise ValueError(f"key_type: one of {', '.join(sorted(KEY_TYPES))}")
    elif cmd == "power_on":
        _number(command, "rate", 0)
        _number(command, "concurrency", 0)
        _number(command, "online_timeout", 60)
    elif cmd == "wait":
        _number(command, "timeout")
        try:
            Lifecycle(command.get("lifecycle"))
        except ValueError:
            raise ValueError(f"lifecycle: one of {', '.join(s.value for s in Lifecycle)}") \
                from None
    return command


@dataclass(frozen=True)
class DeviceState:
    """One device of a fleet as its worker last saw it."""

    name: str
    lifecycle: Lifecycle
    device_id: str | None
    identity: str
    connections: int
    heartbeats: int  # acknowledged heartbeats since power on
    last_error: str
    apps: dict[str, str] = field(default_factory=dict)  # app id -> AppState name

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> DeviceState:
        return cls(name=str(raw["name"]), lifecycle=Lifecycle(raw["lifecycle"]),
                   device_id=raw.get("device_id"), identity=str(raw["identity"]),
                   connections=int(raw["connections"]), heartbeats=int(raw["heartbeats"]),
                   last_error=str(raw.get("last_error", "")), apps=dict(raw.get("apps", {})))

    def __str__(self) -> str:
        error = f", last error {self.last_error}" if self.last_error else ""
        return f"{self.name}: {self.lifecycle.value}{error}"
