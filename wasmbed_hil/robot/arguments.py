"""Robot arguments to Python values: time strings, enum names, numbers given as text."""

from __future__ import annotations

import re
import time
from enum import Enum
from typing import Any, TypeVar

from robot.utils import timestr_to_secs

from ..protocol import DevicePhase, ErrorCode, Outcome

E = TypeVar("E", bound=Enum)

Timeout = str | float | None


def seconds(timeout: Timeout, default: float) -> float:
    """``5s``, ``200ms``, ``1 minute``, a number of seconds; None, "" or NONE: `default`."""
    if isinstance(timeout, str) and timeout.strip().upper() in ("", "NONE"):
        timeout = None
    if timeout is None:
        return default
    if isinstance(timeout, int | float):
        return float(timeout)
    return float(timestr_to_secs(timeout))


def enum_name(text: str) -> str:
    """'out of fuel', 'Out_Of_Fuel', 'OUT OF FUEL' -> 'OUT_OF_FUEL'."""
    return re.sub(r"[\s-]+", "_", str(text).strip()).upper()


def _member(enum: type[E], value: E | str, what: str) -> E:
    if isinstance(value, enum):
        return value
    try:
        return enum[enum_name(str(value))]
    except KeyError:
        raise ValueError(
            f"unknown {what} {value!r}; one of {', '.join(m.name for m in enum)}"
        ) from None


def outcome(value: Outcome | str) -> Outcome:
    return _member(Outcome, value, "outcome")


def error_code(value: ErrorCode | str) -> ErrorCode:
    return _member(ErrorCode, value, "error code")


def phase(value: DevicePhase | str) -> DevicePhase:
    if isinstance(value, DevicePhase):
        return value
    for p in DevicePhase:
        if str(value).strip().lower() in (p.value.lower(), p.name.lower()):
            return p
    raise ValueError(
        f"unknown device phase {value!r}; one of {', '.join(p.value for p in DevicePhase)}"
    )


def coerce(value: Any) -> Any:
    """A Robot argument given as text ('4096', '0.5', 'true') to the Python value it means."""
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class Deadline:
    """One budget for a keyword made of several waits: each gets what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.01)
