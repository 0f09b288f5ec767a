"""One interface over the two implementations of the runtime contract, for the test suites.

* wasmtime: `wasmbed_hil.bench.virtual.runtime.WasmRuntime`, the virtual device's runtime
  (the Python reference model of the firmware).
* wasm3: the firmware's runtime (`firmware/runtime/wasm3`), built for the host under ASan +
  UBSan with the runner `firmware/runtime/wasm3/tests/wb_run_host.c`, which runs one module with
  `wb_runtime_run` and prints the `wb_run_result_t` as JSON.

`tests/test_runtime_contract.py` writes each contract test once against `Runtime` and runs it on
both; `tests/test_runtime_wasmtime.py` and `tests/test_runtime_wasm3.py` hold what only one of
them has. Each adapter maps the contract's limits to its runtime's own spelling and returns a
`RunResult` (wasm3: a `Wasm3Result`, which adds the guard-hook count).
"""

from __future__ import annotations

import fcntl
import functools
import json
import shutil
import struct
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import wasmtime

from wasmbed_hil.bench.virtual.runtime import (
    ModuleError,
    RunLimits,
    RunResult,
    StopToken,
    WasmRuntime,
)
from wasmbed_hil.protocol.types import Outcome

ROOT = Path(__file__).resolve().parent.parent
WASM3_TESTS_DIR = ROOT / "firmware" / "runtime" / "wasm3" / "tests"
WASM3_RUNNER = WASM3_TESTS_DIR / "build" / "wb_run_host"
WASM3_HEADER = ROOT / ".cache" / "firmware-deps" / "wasm3" / "wasm3" / "wasm3.h"
WB_ERR_INVALID_MODULE = 302  # what wb_runtime_validate returns for bytes that are no module

PAGE = 65536
DEFAULT = RunLimits()  # the contract's default limits (the firmware's are the same)
MAX_LOG = 4096  # the log is cut here by default (RunLimits.max_log_bytes, WB_MAX_LOG)
WAIT = 10.0  # upper bound for waits; never reached when the code is right
SHORT = 0.2  # wall-clock budgets of the runs that are meant to time out
UNBOUNDED_FUEL = 10**15  # what "no fuel budget" is for wasmtime, which always meters fuel

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


def as_f32(value: float) -> float:
    """`value` rounded to single precision."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def threads_joined() -> Iterator[None]:
    """Body of an autouse fixture: every thread a test starts is joined by its end."""
    before = set(threading.enumerate())
    yield
    left = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and t.name != "wasmbed-wasm-watchdog"
    ]
    assert not left, f"threads left running: {left}"


Args = tuple[int | float, ...]


@dataclass(frozen=True)
class Limits:
    """The contract's limits of a run; each adapter spells them the way its runtime does."""

    memory_bytes: int = DEFAULT.memory_bytes
    fuel: int | None = DEFAULT.fuel  # None: no fuel budget
    timeout_s: float = DEFAULT.timeout_s


ENDLESS = Limits(fuel=None, timeout_s=WAIT)  # only a stop (or a bug) ends the run


class Runtime(ABC):
    """What the contract needs of a runtime."""

    name: ClassVar[str]
    ends_within_s: ClassVar[float]  # a run stopped, or timed out after SHORT, has ended by then

    def run(
        self,
        wasm: bytes,
        entry: str,
        args: Sequence[int | float] = (),
        *,
        memory_bytes: int = DEFAULT.memory_bytes,
        fuel: int | None = DEFAULT.fuel,
        timeout_s: float = DEFAULT.timeout_s,
        stopped_before: bool = False,
    ) -> RunResult:
        """Load `wasm` under the limits (fuel None: no fuel budget) and run `entry(*args)`.

        stopped_before: the run's stop request is already set when it starts.
        """
        limits = Limits(memory_bytes, fuel, timeout_s)
        return self._run(wasm, entry, tuple(args), limits, stopped_before)

    @abstractmethod
    def _run(self, wasm: bytes, entry: str, args: Args, limits: Limits, stopped: bool) -> RunResult:
        """`run` in the runtime's own terms (stopped: the stop request is set before the run)."""

    @abstractmethod
    def run_and_stop(self, wasm: bytes, entry: str, args: Sequence[int | float] = ()) -> RunResult:
        """Run under ENDLESS limits; stop the run from outside once it is under way."""

    @abstractmethod
    def validate(self, wasm: bytes) -> str | None:
        """None if `wasm` is a valid module, else why not."""


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


class WasmtimeRuntime(Runtime):
    """The contract on `WasmRuntime`: stops come from a `StopToken` set by another thread."""

    name = "wasmtime"
    ends_within_s = WAIT

    def __init__(self, rt: WasmRuntime | None = None) -> None:
        self.rt = rt or WasmRuntime()

    @staticmethod
    def run_limits(limits: Limits) -> RunLimits:
        fuel = UNBOUNDED_FUEL if limits.fuel is None else limits.fuel
        return RunLimits(memory_bytes=limits.memory_bytes, fuel=fuel, timeout_s=limits.timeout_s)

    def _run(self, wasm: bytes, entry: str, args: Args, limits: Limits, stopped: bool) -> RunResult:
        token: StopToken | None = None
        if stopped:
            token = StopToken()
            token.stop()
        return self.rt.run(wasm, entry, args, self.run_limits(limits), token)

    def run_and_stop(self, wasm: bytes, entry: str, args: Sequence[int | float] = ()) -> RunResult:
        """The stop comes after the module's first env.log call (the module must make one)."""
        token = StopToken()
        started = threading.Event()
        worker = RunThread(
            self.rt,
            wasm,
            entry,
            tuple(args),
            self.run_limits(ENDLESS),
            token,
            on_log=lambda _chunk: started.set(),
        )
        worker.start()
        assert started.wait(WAIT), "the run never called env.log"
        assert not token.stopped
        token.stop()
        assert token.stopped
        return worker.outcome()

    def validate(self, wasm: bytes) -> str | None:
        try:
            self.rt.validate(wasm)
        except ModuleError as exc:
            return str(exc)
        return None


@dataclass(frozen=True)
class Wasm3Result(RunResult):
    hooks: int = 0  # how often the guard called wb_runtime_guard_hook (about every 20 ms)


@functools.cache
def wasm3_runner() -> Path:
    """The host runner, built (once per process; make keeps it up to date) or the test skipped."""
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
    WASM3_TESTS_DIR.joinpath("build").mkdir(exist_ok=True)
    with open(WASM3_TESTS_DIR / "build" / ".lock", "w") as lock:  # pytest-xdist workers build once
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["make", "-s", "-C", str(WASM3_TESTS_DIR), "runner"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode != 0:
        pytest.fail(f"building the host runner failed:\n{proc.stdout}\n{proc.stderr}")
    return WASM3_RUNNER


def _arg(value: int | float) -> str:
    if isinstance(value, float):
        return "f:" + value.hex()
    return str(value)


class Wasm3Runtime(Runtime):
    """The contract on the firmware's wasm3 runtime, one runner process per run.

    The module goes to the runner on its stdin (no files). "No fuel budget" is fuel 0; a stop
    in progress is set by the runner's guard hook (`--stop-after-hooks`).
    """

    name = "wasm3"
    ends_within_s = 2.0  # the guard looks at the clock and the stop flag about every 20 ms
    STOP_AFTER_HOOKS: ClassVar[int] = 3

    def __init__(self, runner: Path | None = None) -> None:
        self.runner = runner or wasm3_runner()

    def _call(self, options: Sequence[str], wasm: bytes, *rest: str) -> dict[str, Any]:
        cmd = [str(self.runner), *options, "/dev/stdin", *rest]
        proc = subprocess.run(cmd, input=wasm, capture_output=True, timeout=60)
        stderr = proc.stderr.decode(errors="replace")
        assert proc.returncode == 0, f"runner failed ({proc.returncode}):\n{stderr}"
        assert "runtime error" not in stderr, stderr  # UBSan reports
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    def _run(
        self,
        wasm: bytes,
        entry: str,
        args: Args,
        limits: Limits,
        stopped: bool,
        options: Sequence[str] = (),
    ) -> Wasm3Result:
        """`options`: further runner options (see wb_run_host.c)."""
        flags = [
            "--memory", str(limits.memory_bytes),
            "--fuel", str(0 if limits.fuel is None else limits.fuel),
            "--timeout-ms", str(round(limits.timeout_s * 1000)),
            *(["--stop-before"] if stopped else []),
            *options,
        ]  # fmt: skip
        data = self._call(flags, wasm, entry, *(_arg(a) for a in args))
        values = tuple(float.fromhex(v["f"]) if "f" in v else int(v["i"]) for v in data["values"])
        return Wasm3Result(
            outcome=Outcome(data["outcome_code"]),
            values=values,
            log=bytes.fromhex(data["log_hex"]),
            fuel_used=data["fuel_used"],
            duration_us=data["duration_us"],
            detail=data["detail"],
            hooks=data["hooks"],
        )

    def run_and_stop(
        self, wasm: bytes, entry: str, args: Sequence[int | float] = ()
    ) -> Wasm3Result:
        """The stop comes from the STOP_AFTER_HOOKS-th guard hook (about 60 ms into the run)."""
        options = ["--stop-after-hooks", str(self.STOP_AFTER_HOOKS)]
        return self._run(wasm, entry, tuple(args), ENDLESS, False, options)

    def validate(self, wasm: bytes) -> str | None:
        data = self._call(["--validate"], wasm)
        if data["validate"] == 0:
            assert data["detail"] == ""
            return None
        assert data["validate"] == WB_ERR_INVALID_MODULE, data
        assert data["detail"], "an invalid module without a reason"
        return str(data["detail"])


def make_runtime(name: str) -> Runtime:
    """The adapter called `name` ("wasmtime" or "wasm3"); wasm3 skips where it cannot be built."""
    if name == "wasmtime":
        return WasmtimeRuntime()
    if name == "wasm3":
        return Wasm3Runtime()
    raise ValueError(f"no runtime {name!r}")
