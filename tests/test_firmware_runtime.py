"""The firmware's wasm3 runtime (firmware/runtime/wasm3), built for the host under ASan + UBSan.

A small runner (firmware/runtime/wasm3/tests/wb_run_host.c) runs one module with
`wb_runtime_run` and prints the `wb_run_result_t` as JSON. These tests mirror the Python
reference runtime's tests (tests/test_runtime.py) and compare both runtimes on the same modules.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.virtual.runtime import RunLimits, WasmRuntime
from wasmbed_hil.protocol.types import Outcome

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "firmware" / "runtime" / "wasm3" / "tests"
RUNNER = TESTS_DIR / "build" / "wb_run_host"
WASM3_HEADER = ROOT / ".cache" / "firmware-deps" / "wasm3" / "wasm3" / "wasm3.h"
PAGE = 65536
DEFAULT = RunLimits()


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    values: tuple[int | float, ...]
    log: bytes
    fuel_used: int
    duration_us: int
    detail: str
    hooks: int


def _build_runner() -> Path:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc/make not installed: the firmware runtime cannot be built for the host")
    if not WASM3_HEADER.exists():
        fetch = subprocess.run(
            [sys.executable, str(ROOT / "firmware" / "scripts" / "fetch_deps.py")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if fetch.returncode != 0 or not WASM3_HEADER.exists():
            pytest.skip(f"wasm3 sources unavailable (fetch_deps.py failed): {fetch.stderr[-400:]}")
    TESTS_DIR.joinpath("build").mkdir(exist_ok=True)
    with open(TESTS_DIR / "build" / ".lock", "w") as lock:  # pytest-xdist workers build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["make", "-s", "-C", str(TESTS_DIR), "runner"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode != 0:
        pytest.fail(f"building the host runner failed:\n{proc.stdout}\n{proc.stderr}")
    return RUNNER


@pytest.fixture(scope="session")
def runner() -> Path:
    return _build_runner()


@pytest.fixture(scope="session")
def wasm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wasm")


def _arg(value: int | float) -> str:
    if isinstance(value, float):
        return "f:" + value.hex()
    return str(value)


class Device:
    """Runs modules through the host build of the firmware runtime."""

    def __init__(self, runner: Path, wasm_dir: Path) -> None:
        self.runner = runner
        self.wasm_dir = wasm_dir

    def _file(self, wasm: bytes) -> Path:
        import hashlib

        path = self.wasm_dir / (hashlib.sha256(wasm).hexdigest()[:16] + ".wasm")
        if not path.exists():
            path.write_bytes(wasm)
        return path

    def run(
        self,
        wasm: bytes,
        entry: str,
        args: Sequence[int | float] = (),
        *,
        memory: int = DEFAULT.memory_bytes,
        fuel: int = DEFAULT.fuel,
        timeout_ms: int = 1000,
        options: Sequence[str] = (),
    ) -> Result:
        cmd = [
            str(self.runner),
            "--memory", str(memory),
            "--fuel", str(fuel),
            "--timeout-ms", str(timeout_ms),
            *options,
            str(self._file(wasm)),
            entry,
            *(_arg(a) for a in args),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"runner failed ({proc.returncode}):\n{proc.stderr}"
        assert "runtime error" not in proc.stderr, proc.stderr  # UBSan reports
        data = json.loads(proc.stdout)
        values = tuple(float.fromhex(v["f"]) if "f" in v else int(v["i"]) for v in data["values"])
        return Result(
            outcome=Outcome(data["outcome_code"]),
            values=values,
            log=bytes.fromhex(data["log_hex"]),
            fuel_used=data["fuel_used"],
            duration_us=data["duration_us"],
            detail=data["detail"],
            hooks=data["hooks"],
        )

    def validate(self, wasm: bytes) -> tuple[int, str]:
        proc = subprocess.run(
            [str(self.runner), "--validate", str(self._file(wasm))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        return data["validate"], data["detail"]


@pytest.fixture(scope="session")
def dev(runner: Path, wasm_dir: Path) -> Device:
    return Device(runner, wasm_dir)


# ---------------------------------------------------------------------------------------------
# RETURNED and values


def test_add_returns_the_sum(dev: Device) -> None:
    result = dev.run(modules.build("add"), "main", (1, 41))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.detail == ""
    assert result.log == b""
    assert result.fuel_used > 0


def test_i32_arguments_accept_the_unsigned_form_and_results_are_signed(dev: Device) -> None:
    add = modules.build("add")
    assert dev.run(add, "main", (0xFFFFFFFF, 0)).values == (-1,)
    assert dev.run(add, "main", (0x7FFFFFFF, 1)).values == (-(2**31),)


def test_i64_f32_f64_and_multi_value(dev: Device) -> None:
    add = modules.build("add")
    assert dev.run(add, "add_i64", (2**62, 2**62 - 1)).values == (2**63 - 1,)
    f32 = dev.run(add, "add_f32", (0.1, 0.2))
    expected = WasmRuntime().run(add, "add_f32", (0.1, 0.2)).values
    assert f32.outcome is Outcome.RETURNED and f32.values == expected
    assert dev.run(add, "add_f32", (1, 2)).values == (3.0,)  # ints are accepted for floats
    assert dev.run(add, "add_f64", (0.1, 0.2)).values == (0.1 + 0.2,)
    assert dev.run(add, "swap", (7, 2**40)).values == (2**40, 7)


def test_fib_computes_and_fuel_is_deterministic(dev: Device) -> None:
    fib = modules.build("fib")
    first = dev.run(fib, "fib", (20,))
    second = dev.run(fib, "fib", (20,))
    assert first.outcome is Outcome.RETURNED and first.values == (6765,)
    assert first.fuel_used == second.fuel_used == 21891  # one per call: fib(20) makes 21891
    assert dev.run(fib, "fib_i64", (25,)).values == (75025,)


def test_hello_logs_and_returns_42(dev: Device) -> None:
    result = dev.run(modules.build("hello"), "main")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)
    assert result.log == b"hello from wasm"


def test_log_is_truncated_at_the_device_maximum(dev: Device) -> None:
    result = dev.run(modules.build("hello"), "echo", (0, PAGE))
    assert result.outcome is Outcome.RETURNED
    assert len(result.log) == 4096  # WB_MAX_LOG
    assert result.log[16:31] == b"hello from wasm"


@pytest.mark.parametrize(("ptr", "length"), [(PAGE - 10, 11), (PAGE, 1), (-1, 1), (0, -1)])
def test_log_out_of_range_traps_the_module(dev: Device, ptr: int, length: int) -> None:
    result = dev.run(modules.build("hello"), "echo", (ptr, length))
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("env.log: range")
    assert "outside the memory of 65536 bytes" in result.detail


def test_log_without_an_exported_memory_traps(dev: Device) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (import "env" "log" (func $log (param i32 i32))) (memory 1)
      (func (export "main") (call $log (i32.const 0) (i32.const 1))))
    """)
    result = dev.run(wasm, "main")
    assert result.outcome is Outcome.TRAPPED
    assert "exports no memory" in result.detail


@pytest.mark.parametrize("size", [0, 1, 100_000, 1_500_000])
def test_data_module_checksum(dev: Device, size: int) -> None:
    memory = max(DEFAULT.memory_bytes, -(-size // PAGE) * PAGE)
    result = dev.run(modules.data_module(size), "checksum", memory=memory)
    assert result.outcome is Outcome.RETURNED
    expected = modules.data_checksum(size)
    assert result.values == (expected - (1 << 32) if expected >= 1 << 31 else expected,)


# ---------------------------------------------------------------------------------------------
# TRAPPED


@pytest.mark.parametrize(
    ("name", "entry", "code", "words"),
    [
        ("trap", "main", "UNREACHABLE", "unreachable"),
        ("trap", "divzero", "INTEGER_DIVISION_BY_ZERO", "divide by zero"),
        ("trap", "oob", "MEMORY_OUT_OF_BOUNDS", "out of bounds memory access"),
        ("stack", "main", "STACK_OVERFLOW", "stack overflow"),
    ],
)
def test_traps_carry_wasm3_message_and_the_wasmtime_code(
    dev: Device, name: str, entry: str, code: str, words: str
) -> None:
    result = dev.run(modules.build(name), entry)
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith(code + ": ")
    assert words in result.detail
    assert result.values == ()


def test_the_start_function_runs_under_the_same_rules(dev: Device) -> None:
    trapping = wasmtime.wat2wasm('(module (func $s unreachable) (start $s) (func (export "main")))')
    spinning = wasmtime.wat2wasm(
        '(module (func $s (loop $l (br $l))) (start $s) (func (export "main")))'
    )
    assert dev.run(trapping, "main").detail.startswith("UNREACHABLE")
    assert dev.run(spinning, "main", fuel=0, timeout_ms=200).outcome is Outcome.TIMED_OUT
    assert dev.run(spinning, "main", fuel=1000).outcome is Outcome.OUT_OF_FUEL


# ---------------------------------------------------------------------------------------------
# OUT_OF_FUEL, TIMED_OUT, STOPPED


def test_out_of_fuel_uses_all_the_fuel(dev: Device) -> None:
    result = dev.run(modules.build("spin"), "main", fuel=100_000)
    assert result.outcome is Outcome.OUT_OF_FUEL
    assert result.fuel_used == 100_000
    assert "100000" in result.detail


def test_fuel_limit_applies_to_real_work(dev: Device) -> None:
    fib = modules.build("fib")
    needed = dev.run(fib, "fib", (15,)).fuel_used
    short = dev.run(fib, "fib", (15,), fuel=needed // 2)
    enough = dev.run(fib, "fib", (15,), fuel=needed)
    assert short.outcome is Outcome.OUT_OF_FUEL
    assert enough.outcome is Outcome.RETURNED and enough.values == (610,)


def test_br_if_back_edges_are_metered(dev: Device) -> None:
    wasm = wasmtime.wat2wasm('(module (func (export "main") (loop $l (br_if $l (i32.const 1)))))')
    assert dev.run(wasm, "main", fuel=5000).outcome is Outcome.OUT_OF_FUEL


def test_spin_without_fuel_times_out(dev: Device) -> None:
    result = dev.run(modules.build("spin"), "main", fuel=0, timeout_ms=200)
    assert result.outcome is Outcome.TIMED_OUT
    assert 200_000 <= result.duration_us < 2_000_000
    assert result.fuel_used > 0
    assert "wall-clock" in result.detail
    assert result.hooks >= 5  # the guard hook ran about every 20 ms


def test_ticker_times_out_with_its_log(dev: Device) -> None:
    result = dev.run(modules.build("spin"), "ticker", fuel=0, timeout_ms=200)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.log.startswith(b"ticktick") and len(result.log) == 4096


def test_stop_from_the_guard_hook_ends_the_run(dev: Device) -> None:
    result = dev.run(
        modules.build("spin"), "ticker", fuel=0, timeout_ms=10_000,
        options=["--stop-after-hooks", "3"],
    )  # fmt: skip
    assert result.outcome is Outcome.STOPPED
    assert result.detail == "stopped on request"
    assert result.log.startswith(b"tick")
    assert result.duration_us < 2_000_000


def test_a_stop_before_the_run_stops_it_at_once(dev: Device) -> None:
    result = dev.run(modules.build("spin"), "main", options=["--stop-before"])
    assert result.outcome is Outcome.STOPPED
    assert result.fuel_used == 0


# ---------------------------------------------------------------------------------------------
# OUT_OF_MEMORY


def test_declared_memory_above_the_limit_is_refused(dev: Device) -> None:
    result = dev.run(modules.build("big_memory"), "main", memory=1 << 20)
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "2097152" in result.detail and "1048576" in result.detail
    ok = dev.run(modules.build("big_memory"), "main", memory=2 << 20)
    assert ok.outcome is Outcome.RETURNED and ok.values == (0,)


@pytest.mark.parametrize("limit", [PAGE, 256 * 1024, 256 * 1024 + 100, 1 << 20])
def test_trap_after_reaching_the_memory_limit_is_out_of_memory(dev: Device, limit: int) -> None:
    result = dev.run(modules.build("oom"), "main", memory=limit)
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert "UNREACHABLE" in result.detail
    assert str(limit) in result.detail


@pytest.mark.parametrize(("limit", "pages"), [(PAGE, 1), (256 * 1024, 4), (300_000, 4)])
def test_handling_a_failed_grow_is_returned(dev: Device, limit: int, pages: int) -> None:
    result = dev.run(modules.build("oom_graceful"), "main", memory=limit)
    assert result.outcome is Outcome.RETURNED
    assert result.values == (pages,)


def test_a_trap_far_from_the_memory_limit_stays_trapped(dev: Device) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (memory (export "memory") 1 2)
      (func (export "main")
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))
    """)
    result = dev.run(wasm, "main")
    assert result.outcome is Outcome.TRAPPED
    assert result.detail.startswith("UNREACHABLE")


def test_a_huge_grow_fails_instead_of_wrapping(dev: Device) -> None:
    wasm = wasmtime.wat2wasm("""
    (module (memory (export "memory") 1)
      (func (export "main") (result i32 i32)
        (memory.grow (i32.const -1)) (memory.size)))
    """)
    result = dev.run(wasm, "main")
    assert result.outcome is Outcome.RETURNED
    assert result.values == (-1, 1)


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
        ("add", "main", (2**32, 0), ["argument 0", "does not fit in i32"]),
        ("imports_unknown", "main", (), ["env.nope", "unknown import"]),
    ],
)
def test_load_failures_say_why(
    dev: Device, name: str, entry: str, args: tuple[int | float, ...], words: list[str]
) -> None:
    result = dev.run(modules.build(name), entry, args)
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
def test_imports_that_cannot_be_satisfied(dev: Device, wat: str, words: list[str]) -> None:
    result = dev.run(wasmtime.wat2wasm(f'(module {wat} (func (export "main")))'), "main")
    assert result.outcome is Outcome.LOAD_FAILED
    for word in words:
        assert word in result.detail


@pytest.mark.parametrize(
    "wasm",
    [b"\0asm\x01\0\0\0garbage", b"(module)", b"", b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f"],
)
def test_invalid_bytes_are_load_failed_and_invalid(dev: Device, wasm: bytes) -> None:
    result = dev.run(wasm, "main")
    assert result.outcome is Outcome.LOAD_FAILED
    assert "WebAssembly" in result.detail
    code, detail = dev.validate(wasm)
    assert code == 302 and detail  # WB_ERR_INVALID_MODULE


@pytest.mark.parametrize("name", modules.names())
def test_every_test_module_validates(dev: Device, name: str) -> None:
    assert dev.validate(modules.build(name)) == (0, "")


# ---------------------------------------------------------------------------------------------
# Differential: the firmware runtime and the Python reference runtime agree


DIFFERENTIAL = [
    ("add", "main", (1, 2), {}),
    ("add", "add_i64", (2**62, 5), {}),
    ("add", "add_f32", (0.1, 0.2), {}),
    ("add", "add_f64", (0.1, 0.2), {}),
    ("add", "swap", (3, -4), {}),
    ("add", "nope", (), {}),
    ("add", "main", (1,), {}),
    ("fib", "fib", (20,), {}),
    ("fib", "fib_i64", (15,), {}),
    ("fib", "fib", (20,), {"fuel": 1000}),
    ("hello", "main", (), {}),
    ("hello", "echo", (PAGE, 1), {}),
    ("trap", "main", (), {}),
    ("trap", "divzero", (), {}),
    ("trap", "oob", (), {}),
    ("stack", "main", (), {}),
    ("spin", "main", (), {"fuel": 10_000}),
    ("spin", "main", (), {"fuel": 0, "timeout_ms": 200}),
    ("oom", "main", (), {"memory": 256 * 1024}),
    ("oom_graceful", "main", (), {"memory": 256 * 1024}),
    ("big_memory", "main", (), {"memory": 1 << 20}),
    ("big_memory", "main", (), {"memory": 2 << 20}),
    ("imports_unknown", "main", (), {}),
]


@pytest.mark.parametrize(("name", "entry", "args", "limits"), DIFFERENTIAL)
def test_same_outcome_as_the_python_runtime(
    dev: Device, name: str, entry: str, args: tuple[int | float, ...], limits: dict[str, int]
) -> None:
    wasm = modules.build(name)
    memory = limits.get("memory", DEFAULT.memory_bytes)
    fuel = limits.get("fuel", DEFAULT.fuel)
    timeout_ms = limits.get("timeout_ms", 1000)
    ours = dev.run(wasm, entry, args, memory=memory, fuel=fuel, timeout_ms=timeout_ms)
    reference = WasmRuntime().run(
        wasm,
        entry,
        args,
        RunLimits(memory_bytes=memory, fuel=fuel or 1 << 62, timeout_s=timeout_ms / 1000),
    )
    assert ours.outcome is reference.outcome, (ours.detail, reference.detail)
    assert ours.values == reference.values
    assert ours.log == reference.log
    if reference.outcome is Outcome.RETURNED:
        # Every counted event (call, taken back-edge) is at least one wasm instruction, which
        # wasmtime charges: a budget enough for wasmtime is enough here.
        assert ours.fuel_used <= reference.fuel_used
    if reference.outcome is Outcome.TRAPPED and ":" in reference.detail:
        assert ours.detail.split(":")[0] == reference.detail.split(":")[0]  # same trap code


def test_data_module_agrees_with_the_python_runtime(dev: Device) -> None:
    wasm = modules.data_module(300_000, seed=7)
    ours = dev.run(wasm, "checksum")
    reference = WasmRuntime().run(wasm, "checksum")
    assert ours.outcome is reference.outcome is Outcome.RETURNED
    assert ours.values == reference.values
    assert ours.fuel_used <= reference.fuel_used
