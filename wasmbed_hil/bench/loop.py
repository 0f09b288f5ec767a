"""A background thread running the asyncio loop that hosts gateways and virtual devices.

Tests and Robot keywords are synchronous; they hand coroutines to this loop and wait for the
result with a timeout. Closing it cancels whatever is left and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..aio import cancel_and_wait

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "wasmbed-hil-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run a coroutine on the loop and return its result (exceptions propagate)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from the loop itself")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop thread (for code that needs the running loop)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> list[str]:
        """Cancel leftover tasks, stop the loop, join the thread; returns the leftovers' names."""
        if not self._thread.is_alive():
            return []

        async def shutdown() -> list[str]:
            current = asyncio.current_task()
            leftovers = [t for t in asyncio.all_tasks() if t is not current]
            await cancel_and_wait(leftovers)
            await self.loop.shutdown_default_executor()
            return [t.get_name() for t in leftovers]

        names = self.run(shutdown(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
        return names
