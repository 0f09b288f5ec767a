"""The loop thread the synchronous handles run on (bench/loop.py), as a blocking portal."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from wasmbed_hil.bench.loop import LoopThread


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread("test-loop-thread")
    try:
        yield lt
    finally:
        lt.close()


class Interrupted(BaseException):
    """What pytest-timeout, Ctrl-C or Robot's test timeout raise into a waiting thread."""


def interrupt_after(seconds: float) -> object:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return previous


def stop_interrupting(previous: object) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)  # type: ignore[arg-type]


def others(loop: LoopThread) -> list[str]:
    """Names of the tasks on the loop besides the one asking."""

    def names() -> list[str]:
        me = asyncio.current_task()
        return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me)

    return loop.call(names)


def test_run_and_call_work_on_the_loop_thread_and_pass_results_and_errors(loop):
    async def where() -> int:
        return threading.get_ident()

    assert loop.run(where()) == loop.call(threading.get_ident) != threading.get_ident()
    assert loop.call(where) == loop._thread.ident  # a coroutine function is awaited (anyio)

    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        loop.run(boom())
    with pytest.raises(ZeroDivisionError):
        loop.call(lambda: 1 / 0)
    assert others(loop) == []


@pytest.mark.parametrize("how", ["timeout", "interrupt"])
def test_an_ended_wait_cancels_its_coroutine_and_waits_for_it(loop, how):
    ended = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # clean-up that takes a moment
            ended.set()

    if how == "timeout":
        with pytest.raises(TimeoutError):
            loop.run(forever(), timeout=0.2)
    else:
        previous = interrupt_after(0.2)
        try:
            with pytest.raises(Interrupted):
                loop.run(forever(), timeout=30)
        finally:
            stop_interrupting(previous)
    assert ended.is_set()  # landed before run() returned, clean-up included
    assert others(loop) == []


def test_work_that_ends_as_its_wait_times_out_returns_its_result(loop):
    """The race: the wait's timeout expires, then the work ends before the wait cancels it.
    The work happened; its result is returned, not a TimeoutError for work done."""
    done = threading.Event()

    async def quick() -> int:
        done.set()
        return 42

    call = loop._submit(quick())
    real = call.future.result

    def times_out_once_done(timeout: float | None = None) -> int:
        assert call.ended.wait(10)  # the work has ended meanwhile...
        call.future.result = real  # type: ignore[method-assign]
        raise TimeoutError  # ...but the wait's own timeout fired first

    call.future.result = times_out_once_done  # type: ignore[method-assign]
    assert loop._wait(call, 0.01) == 42
    assert done.is_set()


def test_work_still_running_when_its_wait_times_out_is_cancelled_not_returned(loop):
    started = threading.Event()
    cancelled = threading.Event()

    async def slow() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    with pytest.raises(TimeoutError):
        loop.run(slow(), timeout=0.2)
    assert started.is_set() and cancelled.is_set()


def test_a_coroutine_that_swallows_one_cancellation_is_cancelled_again(loop):
    """On Python 3.11 asyncio.wait_for can swallow a cancellation (see aio.cancel_and_wait)."""
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.append(True)
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        loop.run(stubborn(), timeout=0.2)
    assert swallowed == [True]
    assert others(loop) == []


def test_the_loop_thread_may_not_wait_for_itself(loop):
    async def nothing() -> None:
        pass

    def nested_run() -> None:
        loop.run(nothing())

    with pytest.raises(RuntimeError, match="called from the loop itself"):
        loop.call(nested_run)
    with pytest.raises(RuntimeError, match="called from the loop itself"):
        loop.call(loop.call, time.time)
    with pytest.raises(RuntimeError, match="called from the loop itself"):
        loop.call(loop.start_task_soon, asyncio.sleep, 0)

    async def nested_cm() -> None:
        with loop.wrap_async_context_manager(Recorder()):
            pass

    with pytest.raises(RuntimeError, match="called from the loop itself"):
        loop.run(nested_cm())


def test_start_task_soon_returns_a_future_whose_cancellation_cancels_the_task(loop):
    started, ended = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert loop.start_task_soon(double, 21).result(5) == 42
    future = loop.start_task_soon(forever, name="waiter")
    assert started.wait(5)
    assert others(loop) == ["waiter"]
    assert future.cancel()
    assert ended.wait(5)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(0)
    assert others(loop) == []


def test_close_cancels_leftovers_names_them_and_refuses_later_calls():
    loop = LoopThread("test-loop-close")
    ended = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    future = loop.start_task_soon(forever, name="stray")
    loop.call(lambda: None)  # the task has started by now
    assert loop.close() == ["stray"]
    assert ended.is_set() and future.cancelled()
    assert not loop.alive
    assert loop.close() == []  # twice is fine

    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="after the loop was closed"):
        loop.run(nothing())  # refused, and the coroutine is closed (no "never awaited")
    with pytest.raises(RuntimeError, match="after the loop was closed"):
        loop.call(time.time)



def test_a_call_made_while_close_shuts_down_is_refused_not_left_pending():
    # Another thread (a controller's handler thread, say) calls in after close()'s shutdown
    # has looked for leftover tasks, before the loop stops: the call would never run nor
    # end, its caller waiting out its timeout (forever without one).
    loop = LoopThread("test-loop-close-race")
    late: list[object] = []
    queued = threading.Event()

    async def forever() -> None:
        await asyncio.Event().wait()

    def call_in() -> None:
        try:
            late.append(loop.start_task_soon(forever, name="late"))
        except RuntimeError as exc:
            late.append(exc)
        queued.set()

    caller = threading.Thread(target=call_in)

    async def leftover() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # cancelled by close(): its shutdown has taken the leftovers already
            caller.start()
            assert queued.wait(10), "the other thread never called in"

    loop.start_task_soon(leftover, name="leftover")
    loop.call(lambda: None)  # the task has started by now
    assert loop.close() == ["leftover"]
    caller.join(10)
    [outcome] = late
    assert isinstance(outcome, RuntimeError), f"left pending: {outcome!r}"
    assert "after the loop was closed" in str(outcome)


class Recorder:
    """An async context manager that notes where and in which task it runs."""

    def __init__(self, fail_enter: bool = False, fail_exit: bool = False,
                 suppress: bool = False) -> None:
        self.fail_enter, self.fail_exit, self.suppress = fail_enter, fail_exit, suppress
        self.seen: list[tuple[str, int, object]] = []
        self.exit_with: object = "not exited"

    async def __aenter__(self) -> str:
        self.seen.append(("enter", threading.get_ident(), asyncio.current_task()))
        if self.fail_enter:
            raise ConnectionError("enter failed")
        return "value"

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        self.seen.append(("exit", threading.get_ident(), asyncio.current_task()))
        self.exit_with = exc
        if self.fail_exit:
            raise OSError("exit failed")
        return self.suppress


def test_wrapped_async_context_manager_enters_and_exits_in_one_task_on_the_loop(loop):
    cm = Recorder()
    with loop.wrap_async_context_manager(cm) as value:
        assert value == "value"
        assert [s[0] for s in cm.seen] == ["enter"]
    (_, enter_thread, enter_task), (_, exit_thread, exit_task) = cm.seen
    assert enter_thread == exit_thread == loop._thread.ident
    assert enter_task is exit_task  # one task: task-bound things (asyncio.timeout...) work
    assert cm.exit_with is None
    assert others(loop) == []


def test_wrapped_async_context_manager_hands_exceptions_over_and_back(loop):
    body_error = ValueError("in the block")
    cm = Recorder()
    with pytest.raises(ValueError, match="in the block"), loop.wrap_async_context_manager(cm):
        raise body_error
    assert cm.exit_with is body_error  # __aexit__ saw it, did not suppress it

    cm = Recorder(suppress=True)
    with loop.wrap_async_context_manager(cm):
        raise body_error
    assert cm.exit_with is body_error  # suppressed by __aexit__

    cm = Recorder(fail_enter=True)
    with pytest.raises(ConnectionError, match="enter failed"), \
            loop.wrap_async_context_manager(cm):
        pytest.fail("the block must not run")
    assert [s[0] for s in cm.seen] == ["enter"]  # no __aexit__ after a failed __aenter__

    cm = Recorder(fail_exit=True)
    with pytest.raises(OSError, match="exit failed"), loop.wrap_async_context_manager(cm):
        pass
    assert others(loop) == []


def test_an_interrupted_block_still_exits_the_async_context_manager(loop):
    cm = Recorder()
    previous = interrupt_after(0.2)
    try:
        with pytest.raises(Interrupted), loop.wrap_async_context_manager(cm):
            time.sleep(5)
    finally:
        stop_interrupting(previous)
    assert isinstance(cm.exit_with, Interrupted)
    assert others(loop) == []


def test_close_exits_a_wrapped_context_manager_left_open():
    loop = LoopThread("test-loop-cm-left-open")
    cm = Recorder()
    wrapped = loop.wrap_async_context_manager(cm)
    wrapped.__enter__()
    assert loop.close() == ["wrapped-async-cm"]
    assert [s[0] for s in cm.seen] == ["enter", "exit"]
