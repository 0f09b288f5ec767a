"""What only the virtual device's runtime (wasmbed_hil.bench.virtual.runtime, on wasmtime) has: its
Python API (compile cache, ModuleError, RunLimits, StopToken, on_log, max_log_bytes, argument
types), epoch/timeout details, and runs in several threads of one process.

The contract both runtimes share is in test_runtime_contract.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from runtime_adapters import (
    FIB_AFTER_LOG,
    MAX_LOG,
    SHORT,
    UNBOUNDED_FUEL,
    WAIT,
    RunThread,
    threads_joined,
)

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.virtual.runtime import (
    CompiledModule,
    ModuleError,
    RunLimits,
    RunResult,
    StopToken,
    WasmRuntime,
)
from wasmbed_hil.protocol.types import Outcome

pytestmark = pytest.mark.filterwarnings("error")

ENDLESS = RunLimits(fuel=UNBOUNDED_FUEL, timeout_s=WAIT)  # only a stop (or a bug) ends the run


@pytest.fixture(scope="module")
def rt() -> WasmRuntime:
    return WasmRuntime()


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield from threads_joined()


def signal_on_log(event: threading.Event) -> Callable[[bytes], None]:
    def on_log(_chunk: bytes) -> None:
        event.set()

    return on_log


# ---------------------------------------------------------------------------------------------
# Arguments and results through the Python API


def test_i64_arguments_accept_the_unsigned_form(rt: WasmRuntime) -> None:
    """The firmware's wb_value_t holds an int64: the unsigned form of an i64 is Python-only."""
    assert rt.run(modules.build("add"), "add_i64", (2**64 - 1, 0)).values == (-1,)


@pytest.mark.parametrize(
    ("entry", "args", "words"),
    [
        ("main", ("1", 2), ["argument 0", "str"]),
        ("main", (True, 2), ["argument 0", "bool"]),
        ("add_i64", (0, -(2**63) - 1), ["argument 1", "does not fit in i64"]),
    ],
)
def test_python_arguments_that_no_entry_takes_are_load_failed(
    rt: WasmRuntime, entry: str, args: tuple[Any, ...], words: list[str]
) -> None:
    result = rt.run(modules.build("add"), entry, args)
    assert result.outcome is Outcome.LOAD_FAILED
    assert result.fuel_used == 0
    for word in words:
        assert word in result.detail


def test_run_accepts_bytes_and_asyncio_to_thread(rt: WasmRuntime) -> None:
    async def main() -> RunResult:
        return await asyncio.to_thread(rt.run, modules.build("add"), "main", (1, 2))

    assert asyncio.run(main()).values == (3,)


def test_stack_overflow_in_a_worker_thread(rt: WasmRuntime) -> None:
    worker = RunThread(rt, modules.build("stack"), "main")
    worker.start()
    result = worker.outcome()
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("STACK_OVERFLOW")


# ---------------------------------------------------------------------------------------------
# Timeout and stop details


def test_timeout_covers_time_spent_in_host_calls(rt: WasmRuntime) -> None:
    def slow_host_call(_chunk: bytes) -> None:
        threading.Event().wait(SHORT * 2)  # the host call outlasts the wall-clock budget

    result = rt.run(FIB_AFTER_LOG, "main", (20,), RunLimits(timeout_s=SHORT), on_log=slow_host_call)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_us >= SHORT * 2 * 1e6


def test_a_stop_after_the_run_ended_changes_nothing(rt: WasmRuntime) -> None:
    token = StopToken()
    result = rt.run(modules.build("add"), "main", (1, 1), stop=token)
    token.stop()
    assert result.outcome is Outcome.RETURNED


# ---------------------------------------------------------------------------------------------
# env.log: max_log_bytes and on_log


def test_log_is_truncated_at_max_log_bytes(rt: WasmRuntime) -> None:
    assert RunLimits().max_log_bytes == MAX_LOG  # the maximum the contract tests by default
    hello = modules.build("hello")
    small = rt.run(hello, "main", limits=RunLimits(max_log_bytes=5))
    assert small.log == b"hello"
    assert rt.run(hello, "main", limits=RunLimits(max_log_bytes=0)).log == b""
    limits = RunLimits(fuel=UNBOUNDED_FUEL, timeout_s=SHORT, max_log_bytes=8)
    ticker = rt.run(modules.build("spin"), "ticker", limits=limits)
    assert ticker.outcome is Outcome.TIMED_OUT
    assert ticker.log == b"ticktick"


def test_on_log_sees_each_chunk_and_its_errors_trap(rt: WasmRuntime) -> None:
    chunks: list[bytes] = []
    result = rt.run(modules.build("hello"), "main", on_log=chunks.append)
    assert chunks == [b"hello from wasm"]
    assert result.log == b"hello from wasm"

    def broken(_chunk: bytes) -> None:
        raise RuntimeError("boom")

    failed = rt.run(modules.build("hello"), "main", on_log=broken)
    assert failed.outcome is Outcome.TRAPPED
    assert "on_log" in failed.detail and "boom" in failed.detail


# ---------------------------------------------------------------------------------------------
# validate / compile / cache


@pytest.mark.parametrize(
    "wasm",
    [b"", b"garbage", b"(module)", b"\0asm", b"\0asm\x01\0\0\0\x01\xff", b"\0asm\x02\0\0\0"],
)
def test_invalid_bytes_raise_module_error(rt: WasmRuntime, wasm: bytes) -> None:
    with pytest.raises(ModuleError):
        rt.validate(wasm)
    with pytest.raises(ModuleError):
        rt.compile(wasm)


def test_a_truncated_module_raises_module_error(rt: WasmRuntime) -> None:
    with pytest.raises(ModuleError, match="invalid WebAssembly module"):
        rt.validate(modules.build("fib")[:-3])


def test_compile_is_cached_by_sha256(rt: WasmRuntime) -> None:
    wasm = modules.build("fib")
    first = rt.compile(wasm)
    assert isinstance(first, CompiledModule)
    assert first.sha256 == hashlib.sha256(wasm).hexdigest()
    assert first.size == len(wasm)
    assert rt.compile(bytearray(wasm)) is first
    assert rt.compile(modules.build("add")) is not first
    assert set(first.exports) == {"fib", "fib_i64"}


def test_the_compile_cache_is_bounded() -> None:
    runtime = WasmRuntime()
    runtime.CACHE_SIZE = 2
    wasms = [modules.data_module(16, seed) for seed in range(3)]
    first = runtime.compile(wasms[0])
    runtime.compile(wasms[1])
    assert runtime.compile(wasms[0]) is first  # refreshed: now wasms[1] is the oldest
    runtime.compile(wasms[2])
    assert runtime.compile(wasms[0]) is first
    assert len(runtime._cache) == 2


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        RunLimits(fuel=-1)
    with pytest.raises(ValueError):
        RunLimits(timeout_s=-0.5)
    with pytest.raises(ValueError):
        RunLimits(timeout_s=float("inf"))
    with pytest.raises(ValueError):
        RunLimits(memory_bytes=1.5)  # type: ignore[arg-type]


def test_wrong_python_types_are_programming_errors(rt: WasmRuntime) -> None:
    with pytest.raises(TypeError):
        rt.run("(module)", "main")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rt.validate("(module)")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Concurrency: runs in different threads do not interfere


def test_a_timeout_does_not_end_a_run_blocked_in_another_thread(rt: WasmRuntime) -> None:
    """B is in progress (held in env.log) while A times out; B then finishes normally."""
    b_started, a_done = threading.Event(), threading.Event()

    def hold(_chunk: bytes) -> None:
        b_started.set()
        a_done.wait(WAIT)

    b = RunThread(rt, FIB_AFTER_LOG, "main", (22,), RunLimits(timeout_s=WAIT), on_log=hold)
    b.start()
    assert b_started.wait(WAIT)
    a = RunThread(rt, modules.build("spin"), "main", (), RunLimits(fuel=10**15, timeout_s=SHORT))
    a.start()
    a_result = a.outcome()
    a_done.set()
    b_result = b.outcome()
    assert a_result.outcome is Outcome.TIMED_OUT
    assert b_result.outcome is Outcome.RETURNED
    assert b_result.values == (17711,)
    assert b_result.duration_us > a_result.duration_us


def test_fib_keeps_returning_while_spin_times_out(rt: WasmRuntime) -> None:
    a = RunThread(rt, modules.build("spin"), "main", (), RunLimits(fuel=10**15, timeout_s=SHORT))
    fib = rt.compile(modules.build("fib"))
    results: list[RunResult] = []
    a.start()
    while a.is_alive() or not results:
        results.append(rt.run(fib, "fib", (18,)))
    assert a.outcome().outcome is Outcome.TIMED_OUT
    assert len(results) > 1
    assert all(r.outcome is Outcome.RETURNED and r.values == (2584,) for r in results)


def test_a_stop_token_stops_only_its_own_run(rt: WasmRuntime) -> None:
    tokens = {"x": StopToken(), "y": StopToken()}
    ticks = {"x": threading.Event(), "y": threading.Event()}
    spin = rt.compile(modules.build("spin"))
    threads = {
        key: RunThread(
            rt, spin, "ticker", (), ENDLESS, tokens[key], on_log=signal_on_log(ticks[key])
        )
        for key in tokens
    }
    for thread in threads.values():
        thread.start()
    assert ticks["x"].wait(WAIT) and ticks["y"].wait(WAIT)
    tokens["x"].stop()
    x = threads["x"].outcome()
    assert x.outcome is Outcome.STOPPED
    ticks["y"].clear()
    assert ticks["y"].wait(WAIT), "y stopped making progress when x was stopped"
    assert threads["y"].is_alive()
    tokens["y"].stop()
    assert threads["y"].outcome().outcome is Outcome.STOPPED


def test_a_shared_token_stops_every_run_using_it(rt: WasmRuntime) -> None:
    token = StopToken()
    started = [threading.Event(), threading.Event()]
    threads = [
        RunThread(rt, modules.build("spin"), "ticker", (), ENDLESS, token, on_log=signal_on_log(e))
        for e in started
    ]
    for thread in threads:
        thread.start()
    assert all(e.wait(WAIT) for e in started)
    token.stop()
    assert [t.outcome().outcome for t in threads] == [Outcome.STOPPED, Outcome.STOPPED]


def test_many_runs_at_once_get_their_own_outcomes(rt: WasmRuntime) -> None:
    jobs: list[tuple[str, str, tuple[int, ...], RunLimits, Outcome, tuple[int, ...]]] = [
        ("add", "main", (20, 22), RunLimits(), Outcome.RETURNED, (42,)),
        ("fib", "fib", (20,), RunLimits(), Outcome.RETURNED, (6765,)),
        ("trap", "divzero", (), RunLimits(), Outcome.TRAPPED, ()),
        ("spin", "main", (), RunLimits(fuel=200_000), Outcome.OUT_OF_FUEL, ()),
        ("oom", "main", (), RunLimits(), Outcome.OUT_OF_MEMORY, ()),
        ("spin", "main", (), RunLimits(fuel=10**15, timeout_s=SHORT), Outcome.TIMED_OUT, ()),
        ("hello", "main", (), RunLimits(), Outcome.RETURNED, (42,)),
        ("stack", "main", (), RunLimits(), Outcome.TRAPPED, ()),
    ] * 3

    def one(job: tuple[Any, ...]) -> tuple[Outcome, tuple[int | float, ...]]:
        name, entry, args, limits, _, _ = job
        result = rt.run(modules.build(name), entry, args, limits)
        return result.outcome, result.values

    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(one, jobs))
    assert got == [(outcome, values) for *_, outcome, values in jobs]


def test_the_watchdog_thread_exits_when_idle(rt: WasmRuntime) -> None:
    assert rt.run(modules.build("add"), "main", (1, 2)).outcome is Outcome.RETURNED
    assert any(t.name == "wasmbed-wasm-watchdog" for t in threading.enumerate())
    for thread in threading.enumerate():
        if thread.name == "wasmbed-wasm-watchdog":
            thread.join(WAIT)
            assert not thread.is_alive()
