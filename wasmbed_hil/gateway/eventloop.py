"""Which event loop runs a gateway process: asyncio's own (the default) or uvloop (optional).

uvloop (libuv, the `fast` extra: `pip install 'wasmbed-hil[fast]'`) runs the loop itself in C.
The gateway's TLS layer (tlsstream.py) only needs add_reader/add_writer, which both loops
offer, so its behaviour is the same under either; the figures are in benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOPS = ("asyncio", "uvloop")
DEFAULT_LOOP = "asyncio"

T = TypeVar("T")


class LoopUnavailable(RuntimeError):
    """The loop asked for is not installed."""


def loop_runner(name: str) -> Callable[[Coroutine[Any, Any, T]], T]:
    """The `run(coroutine)` of the loop named `name` (one of LOOPS): asyncio.run or uvloop.run.

    ValueError for another name; LoopUnavailable when uvloop is asked for but not installed."""
    if name == "asyncio":
        return asyncio.run
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise LoopUnavailable(
                "the uvloop event loop is not installed: pip install 'wasmbed-hil[fast]' "
                "(or leave --loop at asyncio)") from None
        run: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
        return run
    raise ValueError(f"unknown event loop {name!r}: one of {', '.join(LOOPS)}")
