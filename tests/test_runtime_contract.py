"""The runtime contract, written once and run on both runtimes: every outcome of a run, limits,
values, env.log, load failures and validation.

`runtime` is the virtual device's runtime on wasmtime (`wasmbed_hil/bench/virtual/runtime.py`)
or the firmware's on wasm3 (`firmware/runtime/wasm3`, host build under ASan + UBSan); the adapters
are in `runtime_adapters.py`. Where the two genuinely differ the test says so per runtime; what only
one of them has is in `test_runtime_wasmtime.py` or `test_runtime_wasm3.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wasmtime
from runtime_adapters import (
    DEFAULT,
    FIB_AFTER_LOG,
    MAX_LOG,
    PAGE,
    SHORT,
    UNBOUNDED_FUEL,
    Runtime,
    as_f32,
    make_runtime,
    threads_joined,
)

from wasmbed_hil.bench import modules
from wasmbed_hil.protocol.types import Outcome

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module", params=["wasmtime", "wasm3"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    return make_runtime(request.param)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield from threads_joined()


# ---------------------------------------------------------------------------------------------
# RETURNED and values


@pytest.mark.parametrize("args", [(2, 40), (1, 41)])
def test_add_returns_the_sum(runtime: Runtime, args: tuple[int, int]) -> None:
    result = runtime.run(modules.build("add"), "main", args)
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.detail == ""
    assert result.log == b""
    assert result.fuel_used > 0
    assert result.duration_us >= 0


def test_i32_arguments_accept_the_unsigned_form_and_results_are_signed(runtime: Runtime) -> None:
    add = modules.build("add")
    assert runtime.run(add, "main", (0xFFFFFFFF, 0)).values == (-1,)
    assert runtime.run(add, "main", (0x7FFFFFFF, 1)).values == (-(2**31),)  # wraps like i32.add


def test_i64_f32_f64_and_multi_value(runtime: Runtime) -> None:
    add = modules.build("add")
    assert runtime.run(add, "add_i64", (2**62, 2**62 - 1)).values == (2**63 - 1,)
    f32 = runtime.run(add, "add_f32", (0.1, 0.2))
    assert f32.outcome is Outcome.RETURNED
    assert f32.values == (as_f32(as_f32(0.1) + as_f32(0.2)),)
    assert runtime.run(add, "add_f32", (1, 2)).values == (3.0,)  # ints are accepted for floats
    assert runtime.run(add, "add_f64", (0.1, 0.2)).values == (0.1 + 0.2,)
    assert runtime.run(add, "swap", (7, 2**40)).values == (2**40, 7)


def test_fib_computes_and_fuel_is_deterministic(runtime: Runtime) -> None:
    fib = modules.build("fib")
    first = runtime.run(fib, "fib", (20,))
    second = runtime.run(fib, "fib", (20,))
    assert first.outcome is Outcome.RETURNED and first.values == (6765,)
    assert 0 < first.fuel_used < DEFAULT.fuel  # what it is exactly differs: see the wasm3 file
    assert first.fuel_used == second.fuel_used
    assert runtime.run(fib, "fib_i64", (25,)).values == (75025,)


def test_a_module_without_imports_and_a_module_importing_log_both_run(runtime: Runtime) -> None:
    assert runtime.run(modules.build("add"), "main", (1, 2)).outcome is Outcome.RETURNED
    assert runtime.run(modules.build("hello"), "main").outcome is Outcome.RETURNED


@pytest.mark.parametrize("size", [0, 1, 100_000, 1_500_000])
def test_data_module_checksum(runtime: Runtime, size: int) -> None:
    memory = max(DEFAULT.memory_bytes, -(-size // PAGE) * PAGE)
    result = runtime.run(modules.data_module(size), "checksum", memory_bytes=memory)
    assert result.outcome is Outcome.RETURNED
    expected = modules.data_checksum(size)
    assert result.values == (expected - (1 << 32) if expected >= 1 << 31 else expected,)


# ---------------------------------------------------------------------------------------------
# TRAPPED

# The message after the trap code is each runtime's own: wasmtime's, or wasm3's "[trap] ...".
TRAP_MARKER = {"wasmtime": "wasm trap", "wasm3": "[trap]"}
STACK_OVERFLOW_WORDS = {"wasmtime": "call stack exhausted", "wasm3": "stack overflow"}


@pytest.mark.parametrize(
    ("name", "entry", "code", "words"),
    [
        ("trap", "main", "UNREACHABLE", "unreachable"),
        ("trap", "divzero", "INTEGER_DIVISION_BY_ZERO", "divide by zero"),
        ("trap", "oob", "MEMORY_OUT_OF_BOUNDS", "out of bounds memory access"),
        ("stack", "main", "STACK_OVERFLOW", STACK_OVERFLOW_WORDS),
    ],
)
def test_traps_are_reported_with_their_code(
    runtime: Runtime, name: str, entry: str, code: str, words: str | dict[str, str]
) -> None:
    """The code is wasmtime's trap code on both runtimes."""
    result = runtime.run(modules.build(name), entry)
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith(code + ": ")
    assert TRAP_MARKER[runtime.name] in result.detail
    assert (words if isinstance(words, str) else words[runtime.name]) in result.detail
    assert result.values == ()


def test_the_start_function_runs_under_the_same_rules(runtime: Runtime) -> None:
    trapping = wasmtime.wat2wasm('(module (func $s unreachable) (start $s) (func (export "main")))')
    spinning = wasmtime.wat2wasm(
        '(module (func $s (loop $l (br $l))) (start $s) (func (export "main")))'
    )
    trapped = runtime.run(trapping, "main")
    assert trapped.outcome is Outcome.TRAPPED
    assert trapped.detail.startswith("UNREACHABLE")
    timed_out = runtime.run(spinning, "main", fuel=None, timeout_s=SHORT)
    assert timed_out.outcome is Outcome.TIMED_OUT
    assert runtime.run(spinning, "main", fuel=1000).outcome is Outcome.OUT_OF_FUEL


# ---------------------------------------------------------------------------------------------
# OUT_OF_FUEL


def test_out_of_fuel_uses_all_the_fuel(runtime: Runtime) -> None:
    result = runtime.run(modules.build("spin"), "main", fuel=100_000)
    assert result.outcome is Outcome.OUT_OF_FUEL
    assert result.fuel_used == 100_000
    assert "100000" in result.detail


def test_fuel_limit_applies_to_real_work(runtime: Runtime) -> None:
    fib = modules.build("fib")
    needed = runtime.run(fib, "fib", (15,)).fuel_used
    # wasmtime checks fuel at function entries and loop headers, not after every instruction
    short = runtime.run(fib, "fib", (15,), fuel=needed // 2)
    enough = runtime.run(fib, "fib", (15,), fuel=needed)
    assert short.outcome is Outcome.OUT_OF_FUEL
    assert enough.outcome is Outcome.RETURNED and enough.values == (610,)


def test_br_if_back_edges_are_metered(runtime: Runtime) -> None:
    wasm = wasmtime.wat2wasm('(module (func (export "main") (loop $l (br_if $l (i32.const 1)))))')
    assert runtime.run(wasm, "main", fuel=5000).outcome is Outcome.OUT_OF_FUEL


# ---------------------------------------------------------------------------------------------
# TIMED_OUT


def test_timeout_while_fuel_remains(runtime: Runtime) -> None:
    result = runtime.run(modules.build("spin"), "main", fuel=None, timeout_s=SHORT)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_us >= SHORT * 1e6
    assert result.duration_us < runtime.ends_within_s * 1e6
    assert result.fuel_used < UNBOUNDED_FUEL
    assert "wall-clock" in result.detail


def test_timeout_reports_fuel_used_by_a_loop_that_calls(runtime: Runtime) -> None:
    result = runtime.run(modules.build("spin"), "ticker", fuel=None, timeout_s=SHORT)
    assert result.outcome is Outcome.TIMED_OUT
    assert 0 < result.fuel_used < UNBOUNDED_FUEL
    assert result.log.startswith(b"ticktick") and len(result.log) == MAX_LOG


# ---------------------------------------------------------------------------------------------
# STOPPED


def test_stop_ends_a_run_in_progress(runtime: Runtime) -> None:
    result = runtime.run_and_stop(modules.build("spin"), "ticker")
    assert result.outcome is Outcome.STOPPED
    assert result.detail == "stopped on request"
    assert result.log.startswith(b"tick")
    assert result.duration_us < runtime.ends_within_s * 1e6


def test_stop_ends_a_long_computation(runtime: Runtime) -> None:
    result = runtime.run_and_stop(FIB_AFTER_LOG, "main", (60,))
    assert result.outcome is Outcome.STOPPED
    assert result.log == b"go"


def test_a_stop_before_the_run_stops_it_at_once(runtime: Runtime) -> None:
    result = runtime.run(modules.build("spin"), "main", stopped_before=True)
    assert result.outcome is Outcome.STOPPED
    assert result.fuel_used == 0


# ---------------------------------------------------------------------------------------------
# OUT_OF_MEMORY


def test_declared_memory_above_the_limit_is_refused(runtime: Runtime) -> None:
    result = runtime.run(modules.build("big_memory"), "main", memory_bytes=1 << 20)
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "2097152" in result.detail and "1048576" in result.detail


def test_declared_memory_within_the_limit_runs(runtime: Runtime) -> None:
    result = runtime.run(modules.build("big_memory"), "main", memory_bytes=2 << 20)
    assert result.outcome is Outcome.RETURNED
    assert result.values == (0,)


@pytest.mark.parametrize(
    "limit", [PAGE, 3 * PAGE, 3 * PAGE + 100, 4 * PAGE, 4 * PAGE + 100, 1 << 20]
)
def test_trap_after_reaching_the_memory_limit_is_out_of_memory(
    runtime: Runtime, limit: int
) -> None:
    result = runtime.run(modules.build("oom"), "main", memory_bytes=limit)
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "UNREACHABLE" in result.detail
    assert str(limit) in result.detail


@pytest.mark.parametrize(
    ("limit", "pages"),
    [(PAGE, 1), (4 * PAGE, 4), (4 * PAGE + 5, 4), (300_000, 4), (1 << 20, 16)],
)
def test_handling_a_failed_grow_is_returned(runtime: Runtime, limit: int, pages: int) -> None:
    result = runtime.run(modules.build("oom_graceful"), "main", memory_bytes=limit)
    assert result.outcome is Outcome.RETURNED
    assert result.values == (pages,)


def test_a_trap_far_from_the_memory_limit_stays_trapped(runtime: Runtime) -> None:
    """Grows until its own declared maximum (2 pages) refuses, far below the limit, then traps."""
    wasm = wasmtime.wat2wasm("""
    (module (memory (export "memory") 1 2)
      (func (export "main")
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))
    """)
    result = runtime.run(wasm, "main")
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("UNREACHABLE")


def test_a_huge_grow_fails_instead_of_wrapping(runtime: Runtime) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (memory (export "memory") 1)
      (func (export "main") (result i32 i32)
        (memory.grow (i32.const -1)) (memory.size)))
    """)
    result = runtime.run(wasm, "main")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (-1, 1)


# ---------------------------------------------------------------------------------------------
# LOAD_FAILED and validation


@pytest.mark.parametrize(
    ("name", "entry", "args", "words"),
    [
        ("add", "nope", (), ["'nope'", "not exported", "main"]),
        ("hello", "memory", (), ["'memory'", "memory", "not a function"]),
        ("add", "main", (1,), ["2 argument", "got 1"]),
        ("add", "main", (1, 2, 3), ["2 argument", "got 3"]),
        ("add", "main", (1.5, 2), ["argument 0", "int"]),
        ("add", "main", (2**32, 0), ["argument 0", "does not fit in i32"]),
        ("imports_unknown", "main", (), ["env.nope", "unknown import"]),
    ],
)
def test_load_failures_say_why(
    runtime: Runtime, name: str, entry: str, args: tuple[int | float, ...], words: list[str]
) -> None:
    result = runtime.run(modules.build(name), entry, args)
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
        ('(import "env" "t" (table 1 funcref))', ["env.t", "table", "unknown import"]),
    ],
)
def test_imports_that_cannot_be_satisfied(runtime: Runtime, wat: str, words: list[str]) -> None:
    result = runtime.run(wasmtime.wat2wasm(f'(module {wat} (func (export "main")))'), "main")
    assert result.outcome is Outcome.LOAD_FAILED
    for word in words:
        assert word in result.detail


@pytest.mark.parametrize(
    "wasm",
    [
        b"",
        b"garbage",
        b"(module)",
        b"\0asm",
        b"\0asm\x02\0\0\0",
        b"\0asm\x01\0\0\0\x01\xff",
        b"\0asm\x01\0\0\0garbage",
        b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f",
    ],
)
def test_invalid_bytes_are_load_failed_and_invalid(runtime: Runtime, wasm: bytes) -> None:
    result = runtime.run(wasm, "main")
    assert result.outcome is Outcome.LOAD_FAILED
    assert "WebAssembly" in result.detail
    assert runtime.validate(wasm)


def test_invalid_bytes_given_to_run_are_load_failed(runtime: Runtime) -> None:
    result = runtime.run(b"\0asm\x01\0\0\0garbage", "main")
    assert result.outcome is Outcome.LOAD_FAILED
    assert "invalid WebAssembly module" in result.detail


def test_a_truncated_module_is_invalid(runtime: Runtime) -> None:
    wasm = modules.build("fib")
    assert runtime.validate(wasm) is None
    assert runtime.validate(wasm[:-3])
    result = runtime.run(wasm[:-3], "fib", (1,))
    assert result.outcome is Outcome.LOAD_FAILED
    assert "invalid WebAssembly module" in result.detail


@pytest.mark.parametrize("name", modules.names())
def test_every_test_module_validates(runtime: Runtime, name: str) -> None:
    assert runtime.validate(modules.build(name)) is None


# ---------------------------------------------------------------------------------------------
# Host import env.log


def test_hello_logs_and_returns_42(runtime: Runtime) -> None:
    result = runtime.run(modules.build("hello"), "main")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.log == b"hello from wasm"


def test_log_is_truncated_at_the_default_maximum(runtime: Runtime) -> None:
    result = runtime.run(modules.build("hello"), "echo", (0, PAGE))
    assert result.outcome is Outcome.RETURNED
    assert len(result.log) == MAX_LOG
    assert result.log[16:31] == b"hello from wasm"


@pytest.mark.parametrize(("ptr", "length"), [(PAGE - 10, 11), (PAGE, 1), (-1, 1), (0, -1)])
def test_log_out_of_range_traps_the_module(runtime: Runtime, ptr: int, length: int) -> None:
    result = runtime.run(modules.build("hello"), "echo", (ptr, length))
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("env.log: range")
    assert "outside the memory of 65536 bytes" in result.detail


def test_log_at_the_very_end_of_memory_is_fine(runtime: Runtime) -> None:
    result = runtime.run(modules.build("hello"), "echo", (PAGE - 1, 1))
    assert result.outcome is Outcome.RETURNED
    assert result.log == b"\0"
    assert runtime.run(modules.build("hello"), "echo", (PAGE, 0)).log == b""


def test_log_without_an_exported_memory_traps(runtime: Runtime) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (import "env" "log" (func $log (param i32 i32))) (memory 1)
      (func (export "main") (call $log (i32.const 0) (i32.const 1))))
    """)
    result = runtime.run(wasm, "main")
    assert result.outcome is Outcome.TRAPPED
    assert "exports no memory" in result.detail
