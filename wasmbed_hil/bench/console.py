"""The console lines every device backend prints at lifecycle moments, and their parser.

The virtual device and the C firmware print the same phrases, so one parser turns any
device's console (UART0 on boards) into lifecycle events for the DeviceHandle:

    connecting to HOST:PORT                    -> connecting
    online as <32 hex digits> ...              -> online, with the device id
    enrollment rejected: <CODE>: <reason>      -> rejected
    gateway error <CODE>: <reason>             -> rejected when CODE is REVOKED/PAIRING_DISABLED
    connection failed: <reason> / link down: <reason>  -> backoff
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol import ErrorCode

_ONLINE = re.compile(r"online as ([0-9a-f]{32})")
_REJECTED = re.compile(r"enrollment rejected: ([A-Z_]+): (.*)")
_GATEWAY_ERROR = re.compile(r"gateway error ([A-Z_]+): (.*)")
_DOWN = re.compile(r"(?:connection failed|link down): (.*)")
_CONNECTING = re.compile(r"connecting to ")


@dataclass(frozen=True)
class ConsoleEvent:
    kind: str  # "connecting", "online", "rejected", "down"
    device_id: str | None = None
    code: ErrorCode | None = None
    reason: str = ""


def _code(name: str) -> ErrorCode:
    try:
        return ErrorCode[name]
    except KeyError:
        return ErrorCode.INTERNAL


def parse_line(line: str) -> ConsoleEvent | None:
    if m := _ONLINE.search(line):
        return ConsoleEvent("online", device_id=m.group(1))
    if m := _REJECTED.search(line):
        return ConsoleEvent("rejected", code=_code(m.group(1)), reason=m.group(2))
    if m := _GATEWAY_ERROR.search(line):
        code = _code(m.group(1))
        if code in (ErrorCode.REVOKED, ErrorCode.PAIRING_DISABLED):
            return ConsoleEvent("rejected", code=code, reason=m.group(2))
        return ConsoleEvent("down", code=code, reason=m.group(2))
    if m := _DOWN.search(line):
        return ConsoleEvent("down", reason=m.group(1))
    if _CONNECTING.search(line):
        return ConsoleEvent("connecting")
    return None
