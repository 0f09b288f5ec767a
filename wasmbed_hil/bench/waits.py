"""The run's default wait timeout: what every wait allows when the caller gives none.

The pytest plugin sets it from ``--hil-timeout`` and the Robot library from its
``timeout=`` argument; gateway, device, console and platform waits resolve their
``timeout=None`` through `resolve()`, so one setting bounds every wait and an explicit
timeout still wins. Waits that are longer by nature (a deployment moves a whole module)
scale it. One value per process: each pytest-xdist worker is a process of its own.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_TIMEOUT", "default_timeout", "resolve", "set_default_timeout"]

DEFAULT_TIMEOUT = 10.0
_default = DEFAULT_TIMEOUT


def default_timeout() -> float:
    """Seconds a wait allows when its caller gives no timeout."""
    return _default


def _check(seconds: float, what: str, *, zero: bool = True) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{what} must be a positive number of seconds, not {seconds!r}")
    return value


def set_default_timeout(seconds: float) -> float:
    """Make `seconds` the default of every wait; returns the previous default."""
    global _default
    previous, _default = _default, _check(seconds, "the default wait timeout", zero=False)
    return previous


def resolve(timeout: float | None, scale: float = 1.0) -> float:
    """`timeout` when given (it wins), else the default times `scale`."""
    if timeout is None:
        return _default * scale
    return _check(timeout, "a wait's timeout")
