"""A background thread running the asyncio loop that hosts gateways and virtual devices.

Tests and Robot keywords are synchronous; they hand work to this loop and wait for it, the way
anyio's blocking portal does (`run`/`call`, `start_task_soon`, `wrap_async_context_manager`).
Whatever interrupts a wait from outside (a timeout, pytest-timeout, Robot's test timeout,
Ctrl-C: any BaseException) cancels the work on the loop and waits briefly until the
cancellation has landed, so nothing keeps running for a test that has gone. Closing the
thread cancels whatever is left and joins it; a call made (from another thread) once closing
has begun is refused with RuntimeError, as after the close. None of this may be called from the loop
thread itself: it would wait for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from ..aio import cancel_and_wait

T = TypeVar("T")

# How long an interrupted wait waits for its cancelled work to end before giving up on it
# (close() cancels it again for good).
CANCEL_GRACE = 5.0


class _Call(Generic[T]):
    """One coroutine running as a task on the loop, seen from another thread.

    `future` carries the task's outcome; cancelling the future cancels the task (as in
    anyio). `ended` is set when the task has really finished, however it ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T],
                 name: str | None) -> None:
        self.loop = loop
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.ended = threading.Event()
        self._coro = coro
        self._name = name
        self._task: asyncio.Task[T] | None = None
        self.future.add_done_callback(self._future_done)

    def start(self) -> None:  # on the loop
        if self.future.cancelled():  # cancelled before it started: never run it
            self._coro.close()
            self.ended.set()
            return
        self._task = self.loop.create_task(self._coro, name=self._name)
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[T]) -> None:  # on the loop
        try:
            if task.cancelled():
                self.future.cancel()
            elif self.future.set_running_or_notify_cancel():
                exc = task.exception()
                if exc is None:
                    self.future.set_result(task.result())
                else:
                    self.future.set_exception(exc)
        finally:
            self.ended.set()

    def _future_done(self, future: concurrent.futures.Future[T]) -> None:
        if future.cancelled():
            self._request_cancel()

    def _request_cancel(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs any more
            self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:  # on the loop
        if self._task is not None:
            self._task.cancel()

    def cancel_and_wait(self, grace: float) -> bool:
        """Cancel the task and wait up to `grace` seconds until it has ended; returns whether
        it did. Cancellation is repeated, as aio.cancel_and_wait does: a task may swallow one."""
        self.future.cancel()
        for _ in range(max(1, int(grace / 0.1))):
            if self.ended.wait(0.1):
                return True
            if self.loop.is_closed():
                return False
            self._request_cancel()
        return self.ended.is_set()


class LoopThread:
    def __init__(self, name: str = "wasmbed-hil-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._closing = False
        self._submit_lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def is_current(self) -> bool:
        """Whether the caller runs on the loop thread (where no wait may block)."""
        return threading.current_thread() is self._thread

    def _check_caller(self, what: str) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"LoopThread.{what} called from the loop itself")
        if not self._thread.is_alive() or self.loop.is_closed():
            raise RuntimeError(f"LoopThread.{what} called after the loop was closed")

    def _submit(self, coro: Coroutine[Any, Any, T], name: str | None = None,
                *, closing: bool = False) -> _Call[T]:
        call = _Call(self.loop, coro, name)
        with self._submit_lock:
            # A call queued once close() has begun may start after its shutdown looked for
            # leftovers and before the loop stops: it would never run nor end, its caller
            # waiting out its timeout (forever without one). Refused instead, as after close.
            if self._closing and not closing:
                coro.close()
                raise RuntimeError("LoopThread called after the loop was closed")
            self.loop.call_soon_threadsafe(call.start)
        return call

    def _wait(self, call: _Call[T], timeout: float | None) -> T:
        try:
            return call.future.result(timeout)
        except TimeoutError:
            if call.future.cancel() or call.future.cancelled():
                if not call.ended.is_set():
                    call.cancel_and_wait(CANCEL_GRACE)
                raise
            # The work ended between the wait's timeout and its cancellation (a future
            # that is being or has been given its outcome cannot be cancelled): what it
            # did stands, and a TimeoutError would tell the caller it had not happened.
            return call.future.result(CANCEL_GRACE)
        except BaseException:
            # Whatever else ended the wait (a test timeout, Ctrl-C...), the work must not
            # outlive it. (When the coroutine itself failed, it has ended already.)
            if not call.ended.is_set():
                call.cancel_and_wait(CANCEL_GRACE)
            raise

    # -- the portal ----------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run a coroutine on the loop and return its result (exceptions propagate).

        When the wait ends otherwise (TimeoutError after `timeout`, or any BaseException
        raised in this thread meanwhile), the coroutine is cancelled and, for up to
        CANCEL_GRACE seconds, waited for before the exception goes on.
        """
        try:
            self._check_caller("run")
        except RuntimeError:
            coro.close()
            raise
        return self._wait(self._submit(coro), timeout)

    def call(self, fn: Callable[..., T | Awaitable[T]], *args: Any,
             timeout: float | None = 60.0) -> T:
        """Call `fn(*args)` on the loop thread and return its result; if it returns an
        awaitable (a coroutine function), that is awaited there (anyio's `portal.call`)."""
        self._check_caller("call")

        async def wrapper() -> T:
            value = fn(*args)
            if inspect.isawaitable(value):
                return await value
            return value  # type: ignore[return-value]

        return self._wait(self._submit(wrapper()), timeout)

    def start_task_soon(self, fn: Callable[..., Awaitable[T]], *args: Any,
                        name: str | None = None) -> concurrent.futures.Future[T]:
        """Start `fn(*args)` as a task on the loop and return at once a future of its result.
        Cancelling the future cancels the task; close() cancels it if it is still running."""
        self._check_caller("start_task_soon")

        async def wrapper() -> T:
            return await fn(*args)

        return self._submit(wrapper(), name).future

    def wrap_async_context_manager(
        self, cm: AbstractAsyncContextManager[T], timeout: float | None = 60.0
    ) -> AbstractContextManager[T]:
        """A synchronous context manager whose `__enter__`/`__exit__` run the async one's
        `__aenter__`/`__aexit__` on the loop, in one task that lives as long as the `with`
        block (so task-bound things such as `asyncio.timeout` or task groups work). An
        exception of the block is handed to `__aexit__`, which may suppress it; one of
        `__aenter__`/`__aexit__` propagates to the caller. `timeout` bounds each of the two.
        """
        return _BlockingContextManager(self, cm, timeout)

    # -- lifecycle -----------------------------------------------------------------------------
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

        self._check_caller("close")
        with self._submit_lock:
            self._closing = True
        names = self._wait(self._submit(shutdown(), closing=True), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
        return names


class _BlockingContextManager(AbstractContextManager[T]):
    def __init__(
        self, portal: LoopThread, cm: AbstractAsyncContextManager[T], timeout: float | None
    ) -> None:
        self._portal = portal
        self._cm: AbstractAsyncContextManager[T] = cm
        self._timeout = timeout
        self._exit_info: tuple[Any, Any, Any] = (None, None, None)
        self._exit_event: asyncio.Event | None = None
        self._entered: concurrent.futures.Future[T] | None = None
        self._call: _Call[bool | None] | None = None

    async def _host(self) -> bool | None:
        assert self._entered is not None
        self._exit_event = asyncio.Event()
        try:
            value = await self._cm.__aenter__()
        except BaseException as exc:
            self._entered.set_exception(exc)
            raise
        self._entered.set_result(value)
        try:
            await self._exit_event.wait()
        finally:
            # Also when cancelled before __exit__ came (an interrupted block, close()).
            result = await self._cm.__aexit__(*self._exit_info)
        return result

    def __enter__(self) -> T:
        self._portal._check_caller("wrap_async_context_manager")
        self._entered = concurrent.futures.Future()
        self._call = call = self._portal._submit(self._host(), name="wrapped-async-cm")
        try:
            concurrent.futures.wait(
                [self._entered, call.future], self._timeout,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            if self._entered.done():
                return self._entered.result()
            if call.future.done():  # ended without entering: cancelled
                call.future.result()
            raise TimeoutError(f"entering {self._cm!r} took more than {self._timeout:g}s")
        except BaseException:
            call.cancel_and_wait(CANCEL_GRACE)
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        assert self._call is not None and self._exit_event is not None
        self._exit_info = (exc_type, exc, tb)
        self._portal.loop.call_soon_threadsafe(self._exit_event.set)
        return bool(self._portal._wait(self._call, self._timeout))
