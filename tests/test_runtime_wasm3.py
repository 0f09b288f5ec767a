"""What only the firmware's wasm3 runtime (firmware/runtime/wasm3, host build under ASan + UBSan)
has: its "fuel" (one per call and per taken loop back-edge, counted even without a budget), the
guard hook, and the differential check against the Python reference runtime on wasmtime.

The contract both runtimes share is in test_runtime_contract.py.
"""

from __future__ import annotations

import pytest
from runtime_adapters import PAGE, SHORT, Wasm3Result, Wasm3Runtime, WasmtimeRuntime

from wasmbed_hil.bench import modules
from wasmbed_hil.protocol.types import Outcome


@pytest.fixture(scope="module")
def wasm3() -> Wasm3Runtime:
    return Wasm3Runtime()


@pytest.fixture(scope="module")
def wasmtime_rt() -> WasmtimeRuntime:
    return WasmtimeRuntime()


# ---------------------------------------------------------------------------------------------
# Fuel and the guard


def test_fuel_counts_one_per_call(wasm3: Wasm3Runtime) -> None:
    fib = modules.build("fib")
    first = wasm3.run(fib, "fib", (20,))
    second = wasm3.run(fib, "fib", (20,))
    assert first.fuel_used == second.fuel_used == 21891  # one per call: fib(20) makes 21891


def test_a_spin_without_fuel_budget_is_counted_and_calls_the_guard_hook(
    wasm3: Wasm3Runtime,
) -> None:
    result = wasm3.run(modules.build("spin"), "main", fuel=None, timeout_s=SHORT)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.fuel_used > 0  # taken back-edges; wasmtime's loop without calls reports 0
    assert isinstance(result, Wasm3Result)
    # The guard hook runs about every 20 ms of the run: more than once, however few time
    # slices a loaded machine gave the run before its deadline (5 failed at load 8).
    assert result.hooks >= 2


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
    ("spin", "main", (), {"fuel": None, "timeout_s": SHORT}),
    ("oom", "main", (), {"memory_bytes": 256 * 1024}),
    ("oom_graceful", "main", (), {"memory_bytes": 256 * 1024}),
    ("big_memory", "main", (), {"memory_bytes": 1 << 20}),
    ("big_memory", "main", (), {"memory_bytes": 2 << 20}),
    ("imports_unknown", "main", (), {}),
]


@pytest.mark.parametrize(("name", "entry", "args", "limits"), DIFFERENTIAL)
def test_same_outcome_as_the_python_runtime(
    wasm3: Wasm3Runtime,
    wasmtime_rt: WasmtimeRuntime,
    name: str,
    entry: str,
    args: tuple[int | float, ...],
    limits: dict[str, int | float | None],
) -> None:
    wasm = modules.build(name)
    ours = wasm3.run(wasm, entry, args, **limits)
    reference = wasmtime_rt.run(wasm, entry, args, **limits)
    assert ours.outcome is reference.outcome, (ours.detail, reference.detail)
    assert ours.values == reference.values
    assert ours.log == reference.log
    if reference.outcome is Outcome.RETURNED:
        # Every counted event (call, taken back-edge) is at least one wasm instruction, which
        # wasmtime charges: a budget enough for wasmtime is enough here.
        assert ours.fuel_used <= reference.fuel_used
    if reference.outcome is Outcome.TRAPPED and ":" in reference.detail:
        assert ours.detail.split(":")[0] == reference.detail.split(":")[0]  # same trap code


def test_data_module_agrees_with_the_python_runtime(
    wasm3: Wasm3Runtime, wasmtime_rt: WasmtimeRuntime
) -> None:
    wasm = modules.data_module(300_000, seed=7)
    ours = wasm3.run(wasm, "checksum")
    reference = wasmtime_rt.run(wasm, "checksum")
    assert ours.outcome is reference.outcome is Outcome.RETURNED
    assert ours.values == reference.values
    assert ours.fuel_used <= reference.fuel_used
