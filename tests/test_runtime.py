"""Tests for the virtual device's runtime: every outcome of a run, limits, host imports, threads."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import wasmtime

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

WAIT = 10.0  # upper bound for Event/Thread waits; never reached when the code is right
SHORT = 0.2  # wall-clock budgets of the runs that are meant to time out
ENDLESS = RunLimits(fuel=10**15, timeout_s=WAIT)  # only a stop (or a bug) ends the run
PAGE = 65536

# A module that logs "go" (the test can hold it there) and then computes fib(n) recursively.
FIB_AFTER_LOG = wasmtime.wat2wasm("""
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "go")
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "main") (param $n i32) (result i32)
    (call $log (i32.const 0) (i32.const 2))
    (call $fib (local.get $n))))
""")

# Grows until its own declared maximum (2 pages) refuses, far below the limit, then traps.
MAX_THEN_TRAP = wasmtime.wat2wasm("""
(module
  (memory (export "memory") 1 2)
  (func (export "main")
    (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))
""")


@pytest.fixture(scope="module")
def rt() -> WasmRuntime:
    return WasmRuntime()


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Every thread a test starts is joined by the end of the test."""
    before = set(threading.enumerate())
    yield
    left = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name != "wasmbed-wasm-watchdog"
    ]
    assert not left, f"threads left running: {left}"


class RunThread(threading.Thread):
    """Runs `WasmRuntime.run` in its own thread and keeps the result."""

    def __init__(self, rt: WasmRuntime, *args: Any, **kwargs: Any) -> None:
        super().__init__(name="test-run", daemon=True)
        self._call = lambda: rt.run(*args, **kwargs)
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> RunResult:
        self.join(WAIT)
        assert not self.is_alive(), "run did not end"
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def as_f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def signal_on_log(event: threading.Event) -> Callable[[bytes], None]:
    def on_log(_chunk: bytes) -> None:
        event.set()

    return on_log


# ---------------------------------------------------------------------------------------------
# RETURNED and value conversion


def test_add_returns_the_sum(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("add"), "main", (2, 40))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.detail == ""
    assert result.log == b""
    assert result.fuel_used > 0
    assert result.duration_us >= 0


def test_i32_arguments_accept_the_unsigned_form_and_results_are_signed(rt: WasmRuntime) -> None:
    module = rt.compile(modules.build("add"))
    assert rt.run(module, "main", (0xFFFFFFFF, 0)).values == (-1,)
    assert rt.run(module, "main", (0x7FFFFFFF, 1)).values == (-(2**31),)  # wraps like i32.add


def test_i64_f32_f64_and_multi_value(rt: WasmRuntime) -> None:
    module = rt.compile(modules.build("add"))
    assert rt.run(module, "add_i64", (2**62, 2**62 - 1)).values == (2**63 - 1,)
    assert rt.run(module, "add_i64", (2**64 - 1, 0)).values == (-1,)
    f32 = rt.run(module, "add_f32", (0.1, 0.2))
    assert f32.outcome is Outcome.RETURNED
    assert f32.values == (as_f32(as_f32(0.1) + as_f32(0.2)),)
    assert rt.run(module, "add_f32", (1, 2)).values == (3.0,)  # ints are accepted for floats
    assert rt.run(module, "add_f64", (0.1, 0.2)).values == (0.1 + 0.2,)
    assert rt.run(module, "swap", (7, 2**40)).values == (2**40, 7)


def test_fib_computes_and_fuel_is_deterministic(rt: WasmRuntime) -> None:
    module = rt.compile(modules.build("fib"))
    first = rt.run(module, "fib", (20,))
    second = rt.run(module, "fib", (20,))
    assert first.outcome is Outcome.RETURNED and first.values == (6765,)
    assert 0 < first.fuel_used < RunLimits().fuel
    assert first.fuel_used == second.fuel_used
    assert rt.run(module, "fib_i64", (25,)).values == (75025,)


def test_run_accepts_bytes_and_asyncio_to_thread(rt: WasmRuntime) -> None:
    async def main() -> RunResult:
        return await asyncio.to_thread(rt.run, modules.build("add"), "main", (1, 2))

    assert asyncio.run(main()).values == (3,)


# ---------------------------------------------------------------------------------------------
# TRAPPED


@pytest.mark.parametrize(
    ("name", "entry", "code"),
    [
        ("trap", "main", "UNREACHABLE"),
        ("trap", "divzero", "INTEGER_DIVISION_BY_ZERO"),
        ("trap", "oob", "MEMORY_OUT_OF_BOUNDS"),
        ("stack", "main", "STACK_OVERFLOW"),
    ],
)
def test_traps_are_reported_with_their_code(
    rt: WasmRuntime, name: str, entry: str, code: str
) -> None:
    result = rt.run(modules.build(name), entry)
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith(code + ": ")
    assert "wasm trap" in result.detail
    assert result.values == ()


def test_trap_messages_say_what_happened(rt: WasmRuntime) -> None:
    assert "unreachable" in rt.run(modules.build("trap"), "main").detail
    assert "divide by zero" in rt.run(modules.build("trap"), "divzero").detail
    assert "out of bounds memory access" in rt.run(modules.build("trap"), "oob").detail
    assert "call stack exhausted" in rt.run(modules.build("stack"), "main").detail


def test_stack_overflow_in_a_worker_thread(rt: WasmRuntime) -> None:
    worker = RunThread(rt, modules.build("stack"), "main")
    worker.start()
    result = worker.outcome()
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("STACK_OVERFLOW")


def test_the_start_function_runs_under_the_same_rules(rt: WasmRuntime) -> None:
    trapping = wasmtime.wat2wasm('(module (func $s unreachable) (start $s) (func (export "main")))')
    spinning = wasmtime.wat2wasm(
        '(module (func $s (loop $l (br $l))) (start $s) (func (export "main")))'
    )
    trapped = rt.run(trapping, "main")
    assert trapped.outcome is Outcome.TRAPPED
    assert trapped.detail.startswith("UNREACHABLE")
    limits = RunLimits(fuel=10**15, timeout_s=SHORT)
    assert rt.run(spinning, "main", limits=limits).outcome is Outcome.TIMED_OUT
    assert rt.run(spinning, "main", limits=RunLimits(fuel=1000)).outcome is Outcome.OUT_OF_FUEL


# ---------------------------------------------------------------------------------------------
# OUT_OF_FUEL


def test_out_of_fuel_uses_all_the_fuel(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("spin"), "main", limits=RunLimits(fuel=100_000))
    assert result.outcome is Outcome.OUT_OF_FUEL
    assert result.fuel_used == 100_000
    assert "100000" in result.detail


def test_fuel_limit_applies_to_real_work(rt: WasmRuntime) -> None:
    needed = rt.run(modules.build("fib"), "fib", (15,)).fuel_used
    # wasmtime checks fuel at function entries and loop headers, not after every instruction
    short = rt.run(modules.build("fib"), "fib", (15,), RunLimits(fuel=needed // 2))
    enough = rt.run(modules.build("fib"), "fib", (15,), RunLimits(fuel=needed))
    assert short.outcome is Outcome.OUT_OF_FUEL
    assert enough.outcome is Outcome.RETURNED and enough.values == (610,)


# ---------------------------------------------------------------------------------------------
# TIMED_OUT


def test_timeout_while_fuel_remains(rt: WasmRuntime) -> None:
    limits = RunLimits(fuel=10**15, timeout_s=SHORT)
    result = rt.run(modules.build("spin"), "main", limits=limits)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_us >= SHORT * 1e6
    assert result.duration_us < WAIT * 1e6
    assert result.fuel_used < limits.fuel
    assert "wall-clock" in result.detail


def test_timeout_reports_fuel_used_by_a_loop_that_calls(rt: WasmRuntime) -> None:
    limits = RunLimits(fuel=10**15, timeout_s=SHORT, max_log_bytes=8)
    result = rt.run(modules.build("spin"), "ticker", limits=limits)
    assert result.outcome is Outcome.TIMED_OUT
    assert 0 < result.fuel_used < limits.fuel
    assert result.log == b"ticktick"


def test_timeout_covers_time_spent_in_host_calls(rt: WasmRuntime) -> None:
    def slow_host_call(_chunk: bytes) -> None:
        threading.Event().wait(SHORT * 2)  # the host call outlasts the wall-clock budget

    result = rt.run(FIB_AFTER_LOG, "main", (20,), RunLimits(timeout_s=SHORT), on_log=slow_host_call)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_us >= SHORT * 2 * 1e6


# ---------------------------------------------------------------------------------------------
# STOPPED


def test_stop_ends_a_run_in_progress(rt: WasmRuntime) -> None:
    token = StopToken()
    started = threading.Event()
    worker = RunThread(
        rt, modules.build("spin"), "ticker", (), ENDLESS, token, on_log=signal_on_log(started)
    )
    worker.start()
    assert started.wait(WAIT)
    assert not token.stopped
    token.stop()
    assert token.stopped
    result = worker.outcome()
    assert result.outcome is Outcome.STOPPED
    assert result.detail == "stopped on request"
    assert result.log.startswith(b"tick")
    assert result.duration_us < WAIT * 1e6


def test_stop_ends_a_long_computation(rt: WasmRuntime) -> None:
    token = StopToken()
    started = threading.Event()
    worker = RunThread(
        rt, FIB_AFTER_LOG, "main", (60,), ENDLESS, token, on_log=signal_on_log(started)
    )
    worker.start()
    assert started.wait(WAIT)
    token.stop()
    assert worker.outcome().outcome is Outcome.STOPPED


def test_a_token_stopped_before_the_run_stops_it_at_once(rt: WasmRuntime) -> None:
    token = StopToken()
    token.stop()
    result = rt.run(modules.build("spin"), "main", limits=ENDLESS, stop=token)
    assert result.outcome is Outcome.STOPPED
    assert result.fuel_used == 0


def test_a_stop_after_the_run_ended_changes_nothing(rt: WasmRuntime) -> None:
    token = StopToken()
    result = rt.run(modules.build("add"), "main", (1, 1), stop=token)
    token.stop()
    assert result.outcome is Outcome.RETURNED


# ---------------------------------------------------------------------------------------------
# OUT_OF_MEMORY


def test_declared_memory_above_the_limit_is_refused(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("big_memory"), "main")
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "2097152" in result.detail and "1048576" in result.detail


def test_declared_memory_within_the_limit_runs(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("big_memory"), "main", limits=RunLimits(memory_bytes=2 << 20))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (0,)


@pytest.mark.parametrize("limit", [1 << 20, 3 * PAGE, 3 * PAGE + 100])
def test_trap_after_reaching_the_memory_limit_is_out_of_memory(rt: WasmRuntime, limit: int) -> None:
    result = rt.run(modules.build("oom"), "main", limits=RunLimits(memory_bytes=limit))
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "UNREACHABLE" in result.detail
    assert str(limit) in result.detail


@pytest.mark.parametrize(("limit", "pages"), [(1 << 20, 16), (4 * PAGE, 4), (4 * PAGE + 5, 4)])
def test_handling_a_failed_grow_is_returned(rt: WasmRuntime, limit: int, pages: int) -> None:
    result = rt.run(modules.build("oom_graceful"), "main", limits=RunLimits(memory_bytes=limit))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (pages,)


def test_a_trap_far_from_the_memory_limit_stays_trapped(rt: WasmRuntime) -> None:
    result = rt.run(MAX_THEN_TRAP, "main")
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("UNREACHABLE")


# ---------------------------------------------------------------------------------------------
# LOAD_FAILED


@pytest.mark.parametrize(
    ("name", "entry", "args", "words"),
    [
        ("add", "nope", (), ["'nope'", "not exported", "main"]),
        ("hello", "memory", (), ["'memory'", "memory", "not a function"]),
        ("add", "main", (1,), ["2 argument", "got 1"]),
        ("add", "main", (1, 2, 3), ["2 argument", "got 3"]),
        ("add", "main", (1.5, 2), ["argument 0", "int"]),
        ("add", "main", ("1", 2), ["argument 0", "str"]),
        ("add", "main", (True, 2), ["argument 0", "bool"]),
        ("add", "main", (2**32, 0), ["argument 0", "does not fit in i32"]),
        ("add", "add_i64", (0, -(2**63) - 1), ["argument 1", "does not fit in i64"]),
        ("imports_unknown", "main", (), ["env.nope", "unknown import"]),
    ],
)
def test_load_failures_say_why(
    rt: WasmRuntime, name: str, entry: str, args: tuple[Any, ...], words: list[str]
) -> None:
    result = rt.run(modules.build(name), entry, args)
    assert result.outcome is Outcome.LOAD_FAILED
    assert result.fuel_used == 0
    for word in words:
        assert word in result.detail


@pytest.mark.parametrize(
    ("wat", "words"),
    [
        ('(import "env" "log" (func (param i32)))', ["env.log", "(i32) -> ()", "expected"]),
        ('(import "env" "memory" (memory 1))', ["env.memory", "memory", "unknown import"]),
        ('(import "wasi" "log" (func (param i32 i32)))', ["wasi.log", "unknown import"]),
    ],
)
def test_imports_that_cannot_be_satisfied(rt: WasmRuntime, wat: str, words: list[str]) -> None:
    wasm = wasmtime.wat2wasm(f'(module {wat} (func (export "main")))')
    result = rt.run(wasm, "main")
    assert result.outcome is Outcome.LOAD_FAILED
    for word in words:
        assert word in result.detail


def test_a_module_without_imports_and_a_module_importing_log_both_run(rt: WasmRuntime) -> None:
    assert rt.run(modules.build("add"), "main", (1, 2)).outcome is Outcome.RETURNED
    assert rt.run(modules.build("hello"), "main").outcome is Outcome.RETURNED


def test_invalid_bytes_given_to_run_are_load_failed(rt: WasmRuntime) -> None:
    result = rt.run(b"\0asm\x01\0\0\0garbage", "main")
    assert result.outcome is Outcome.LOAD_FAILED
    assert "invalid WebAssembly module" in result.detail


# ---------------------------------------------------------------------------------------------
# Host import env.log


def test_hello_logs_and_returns_42(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("hello"), "main")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.log == b"hello from wasm"


def test_log_is_truncated_at_max_log_bytes(rt: WasmRuntime) -> None:
    hello = modules.build("hello")
    whole_page = rt.run(hello, "echo", (0, PAGE))
    assert whole_page.outcome is Outcome.RETURNED
    assert len(whole_page.log) == RunLimits().max_log_bytes
    assert whole_page.log[16:31] == b"hello from wasm"
    small = rt.run(hello, "main", limits=RunLimits(max_log_bytes=5))
    assert small.log == b"hello"
    assert rt.run(hello, "main", limits=RunLimits(max_log_bytes=0)).log == b""


@pytest.mark.parametrize(("ptr", "length"), [(PAGE - 10, 11), (PAGE, 1), (-1, 1), (0, -1)])
def test_log_out_of_range_traps_the_module(rt: WasmRuntime, ptr: int, length: int) -> None:
    result = rt.run(modules.build("hello"), "echo", (ptr, length))
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("env.log: range")
    assert "outside the memory of 65536 bytes" in result.detail


def test_log_at_the_very_end_of_memory_is_fine(rt: WasmRuntime) -> None:
    result = rt.run(modules.build("hello"), "echo", (PAGE - 1, 1))
    assert result.outcome is Outcome.RETURNED
    assert result.log == b"\0"
    assert rt.run(modules.build("hello"), "echo", (PAGE, 0)).log == b""


def test_log_without_an_exported_memory_traps(rt: WasmRuntime) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (import "env" "log" (func $log (param i32 i32))) (memory 1)
      (func (export "main") (call $log (i32.const 0) (i32.const 1))))
    """)
    result = rt.run(wasm, "main")
    assert result.outcome is Outcome.TRAPPED
    assert "exports no memory" in result.detail


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


def test_a_truncated_module_is_invalid(rt: WasmRuntime) -> None:
    wasm = modules.build("fib")
    rt.validate(wasm)
    with pytest.raises(ModuleError, match="invalid WebAssembly module"):
        rt.validate(wasm[:-3])


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
