"""The virtual device's WebAssembly runtime: the Python reference model of the firmware.

It runs deployed modules under limits (memory, fuel, wall clock, log size) with wasmtime and
reports every way a run can end as a distinct `Outcome`. `WasmRuntime.run` blocks; callers run
it in a worker thread (``asyncio.to_thread``). Runs in different threads do not interfere.

Design of timeout and stop (one process-wide engine, per-run isolation):

* All runs share one `wasmtime.Engine` (``consume_fuel`` and ``epoch_interruption`` on), so a
  module compiled once can run in any store and the compile cache is meaningful.
* Every run gets its own `wasmtime.Store` whose epoch deadline is one tick ahead and whose
  *epoch deadline callback* is registered. Whenever the engine epoch is incremented, each store
  that reaches an epoch check (function entry, loop back-edge) calls that callback; it looks only
  at its own run: if the run's `StopToken` is stopped it ends the run (STOPPED), if the run's
  wall-clock deadline has passed it ends the run (TIMED_OUT), otherwise it extends the deadline
  by one tick and the run continues. An increment made for one run therefore never ends another.
* The epoch is incremented by `StopToken.stop` (immediately) and by one process-wide watchdog
  thread at each pending run's deadline (no periodic ticking). The watchdog is a daemon thread
  started on demand; it exits after ``_WATCHDOG_LINGER_S`` without pending deadlines.
* The Python bindings expose `Engine.increment_epoch` and `Store.set_epoch_deadline`, but not
  the deadline callback, and their host-function trampoline reports exceptions through a
  process-global variable (racy between threads). The few raw C-API calls used instead
  (``wasmtime_store_epoch_deadline_callback`` and ``wasmtime_func_new`` with an own trampoline
  for ``env.log``) are confined to the "C-API shim" section below.

Known limitation: wasmtime keeps the fuel counter in a register within a function and writes
it back to the store only at calls and returns (and when fuel runs out), so a run that traps,
is STOPPED or TIMED_OUT reports the fuel consumed up to its last call or return: a tight loop
without calls can show a much lower ``fuel_used`` than it really consumed (possibly 0).
Fuel is checked at function entries and loop headers, so a run may overshoot its fuel by
the instructions of one straight-line stretch of code.
"""

from __future__ import annotations

import ctypes
import hashlib
import heapq
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from ...protocol.types import Outcome

__all__ = [
    "CompiledModule",
    "ModuleError",
    "RunLimits",
    "RunResult",
    "StopToken",
    "WasmRuntime",
]

PAGE_SIZE = 65536
"""Size of one WebAssembly memory page in bytes."""

_WATCHDOG_LINGER_S = 0.5
_SUPPORTED_VALTYPES = ("i32", "i64", "f32", "f64")
_LOG_SIGNATURE = (("i32", "i32"), ())


@dataclass(frozen=True)
class RunLimits:
    """Limits of one run. Defaults follow upstream (1 MiB memory, 1000 ms CPU)."""

    memory_bytes: int = 1 << 20
    fuel: int = 50_000_000
    timeout_s: float = 1.0
    max_log_bytes: int = 4096

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "fuel", "max_log_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"RunLimits.{name} must be an int >= 0, got {value!r}")
        if not 0 <= self.timeout_s < math.inf:
            raise ValueError(f"RunLimits.timeout_s must be finite and >= 0, got {self.timeout_s!r}")


_DEFAULT_LIMITS = RunLimits()


@dataclass(frozen=True)
class RunResult:
    """How one run ended."""

    outcome: Outcome
    values: tuple[int | float, ...]  # the entry's results when RETURNED, else ()
    log: bytes  # what the module wrote via env.log, truncated at max_log_bytes
    fuel_used: int  # fuel set minus fuel left
    duration_us: int
    detail: str  # trap message or reason, "" when RETURNED


class ModuleError(Exception):
    """The bytes are not a valid WebAssembly module."""


class StopToken:
    """Thread-safe stop request; `stop` ends the runs using this token as soon as possible."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def stop(self) -> None:
        """Request the stop; runs using this token end with Outcome.STOPPED."""
        self._event.set()
        engine = _ENGINE
        if engine is not None:
            engine.increment_epoch()  # makes running stores consult their callbacks

    @property
    def stopped(self) -> bool:
        """True once `stop` has been called."""
        return self._event.is_set()


@dataclass(frozen=True, eq=False)
class CompiledModule:
    """A module compiled for the shared engine, with what `run` needs to know about it."""

    sha256: str  # hex digest of the module bytes
    size: int  # length of the module bytes
    functions: MappingProxyType[str, tuple[tuple[str, ...], tuple[str, ...]]]
    other_exports: MappingProxyType[str, str]  # non-function exports: name -> kind
    import_error: str | None  # why the imports cannot be satisfied, None when they can
    log_imports: int  # number of imports (all env.log) to satisfy
    memory_min_bytes: int  # largest declared minimum of the module's own memories
    module: wasmtime.Module = field(repr=False)

    @property
    def exports(self) -> tuple[str, ...]:
        """Names of all exports."""
        return tuple(self.functions) + tuple(self.other_exports)


# ---------------------------------------------------------------------------------------------
# Shared engine


_ENGINE: wasmtime.Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> wasmtime.Engine:
    """The process-wide engine (fuel and epoch interruption enabled), created on first use."""
    global _ENGINE
    if _ENGINE is None:
        with _ENGINE_LOCK:
            if _ENGINE is None:
                config = wasmtime.Config()
                config.consume_fuel = True
                config.epoch_interruption = True
                _ENGINE = wasmtime.Engine(config)
    return _ENGINE


# ---------------------------------------------------------------------------------------------
# Per-run state


class _Run:
    """Mutable state of one run, shared with the C callbacks (looked up by id)."""

    __slots__ = (
        "deadline_ns",
        "host_fault",
        "interrupted",
        "log",
        "max_log",
        "on_log",
        "stop",
        "timeout_s",
    )

    def __init__(
        self,
        limits: RunLimits,
        stop: StopToken | None,
        on_log: Callable[[bytes], None] | None,
        start_ns: int,
    ) -> None:
        self.timeout_s = limits.timeout_s
        self.deadline_ns = start_ns + int(limits.timeout_s * 1e9)
        self.stop = stop
        self.on_log = on_log
        self.max_log = limits.max_log_bytes
        self.log = bytearray()
        self.interrupted: Outcome | None = None  # STOPPED / TIMED_OUT once the callback ended it
        self.host_fault: str | None = None  # why env.log trapped the module

    def interruption(self) -> Outcome | None:
        """STOPPED or TIMED_OUT if this run must end now, else None."""
        if self.stop is not None and self.stop.stopped:
            return Outcome.STOPPED
        if time.perf_counter_ns() >= self.deadline_ns:
            return Outcome.TIMED_OUT
        return None

    def interruption_detail(self) -> str:
        if self.interrupted is Outcome.STOPPED:
            return "stopped on request"
        return f"wall-clock budget of {self.timeout_s:g} s exhausted"


_RUNS: dict[int, _Run] = {}
_RUN_IDS = itertools.count(1)  # 0 would arrive in the callbacks as a NULL pointer


# ---------------------------------------------------------------------------------------------
# Watchdog: bumps the engine epoch when a run's deadline passes


class _Watchdog:
    """Process-wide daemon thread that increments the engine epoch at each scheduled deadline.

    The thread is only woken when a new deadline is earlier than its next planned wake-up, so
    a run that ends before its deadline costs no thread switch. It re-examines the heap at
    least every ``_WATCHDOG_LINGER_S``, exits after that long without pending deadlines, and
    is restarted on demand.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_ns = 0  # when the thread will re-examine the heap by itself

    def schedule(self, deadline_ns: int) -> tuple[int, int]:
        """Register a deadline (perf_counter_ns); returns the handle for `cancel`."""
        entry = (deadline_ns, next(self._seq))
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="wasmbed-wasm-watchdog", daemon=True
                )
                self._thread.start()
            elif deadline_ns < self._wake_ns:
                self._cond.notify()
        return entry

    def cancel(self, entry: tuple[int, int]) -> None:
        """Forget a deadline whose run has ended (the thread notices at its next wake-up)."""
        with self._cond:
            try:
                self._heap.remove(entry)
            except ValueError:
                return
            heapq.heapify(self._heap)

    def _loop(self) -> None:
        linger = int(_WATCHDOG_LINGER_S * 1e9)
        idle_since: int | None = None
        with self._cond:
            while True:
                now = time.perf_counter_ns()
                if self._heap and self._heap[0][0] <= now:
                    while self._heap and self._heap[0][0] <= now:
                        heapq.heappop(self._heap)
                    _engine().increment_epoch()
                    continue
                if self._heap:  # wake at least every linger period, to notice cancels
                    idle_since = None
                    wake = min(self._heap[0][0], now + linger)
                else:
                    idle_since = now if idle_since is None else idle_since
                    wake = idle_since + linger
                    if now >= wake:
                        self._thread = None
                        return
                self._wake_ns = wake
                self._cond.wait((wake - now) / 1e9)


_WATCHDOG = _Watchdog()


# ---------------------------------------------------------------------------------------------
# C-API shim: the only place that uses wasmtime's raw bindings


_EPOCH_CALLBACK_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_FINALIZER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = ctypes.cast(None, _FINALIZER_TYPE)
_UPDATE_DEADLINE_CONTINUE = 0


def _error_ptr(message: str) -> int:
    """A new wasmtime_error_t (ownership passes to wasmtime) as an address."""
    raw = ffi.wasmtime_error_new(ctypes.create_string_buffer(message.encode()))
    return ctypes.cast(raw, ctypes.c_void_p).value or 0


def _trap_ptr(message: str) -> int:
    """A new wasm_trap_t (ownership passes to wasmtime) as an address."""
    data = message.encode()
    raw = ffi.wasmtime_trap_new(ctypes.create_string_buffer(data), len(data))
    return ctypes.cast(raw, ctypes.c_void_p).value or 0


@_EPOCH_CALLBACK_TYPE
def _on_epoch_deadline(_context: Any, data: int | None, delta: Any, kind: Any) -> int:
    """Called in the running thread when its store reaches the epoch deadline."""
    try:
        run = _RUNS.get(data or 0)
        if run is not None:
            reason = run.interruption()
            if reason is not None:
                run.interrupted = reason
                return _error_ptr(run.interruption_detail())
    except BaseException:  # never let an exception cross the C boundary; keep running
        pass
    delta[0] = 1
    kind[0] = _UPDATE_DEADLINE_CONTINUE
    return 0


@ffi.wasmtime_func_callback_t
def _env_log(
    env: int | None, caller: Any, args: Any, _nargs: int, _results: Any, _nresults: int
) -> int:
    """Host function env.log(ptr: i32, len: i32): append memory[ptr:ptr+len] to the run's log."""
    run = _RUNS.get(env or 0)
    if run is None:
        return _trap_ptr("env.log: called outside of a run")

    def fault(message: str) -> int:
        run.host_fault = message
        return _trap_ptr(message)

    try:
        ptr = args[0].of.i32 & 0xFFFFFFFF
        length = args[1].of.i32 & 0xFFFFFFFF
        item = ffi.wasmtime_extern_t()
        name = b"memory"
        found = ffi.wasmtime_caller_export_get(caller, name, len(name), ctypes.byref(item))
        if not found or item.kind != ffi.WASMTIME_EXTERN_MEMORY.value:
            return fault("env.log: the module exports no memory named 'memory'")
        context = ffi.wasmtime_caller_context(caller)
        size = ffi.wasmtime_memory_data_size(context, ctypes.byref(item.of.memory))
        if ptr + length > size:
            return fault(
                f"env.log: range [{ptr}, {ptr + length}) is outside the memory of {size} bytes"
            )
        room = max(0, run.max_log - len(run.log))
        wanted = length if run.on_log is not None else min(length, room)
        base = (
            ctypes.cast(
                ffi.wasmtime_memory_data(context, ctypes.byref(item.of.memory)), ctypes.c_void_p
            ).value
            or 0
        )
        chunk = ctypes.string_at(base + ptr, wanted) if wanted else b""
        run.log += chunk[:room]
        if run.on_log is not None:
            try:
                run.on_log(chunk)
            except Exception as exc:
                return fault(f"env.log: the on_log callback raised {exc!r}")
        return 0
    except BaseException as exc:  # never let an exception cross the C boundary
        return fault(f"env.log: host error {exc!r}")


def _set_epoch_callback(store: wasmtime.Store, run_id: int) -> None:
    ffi.wasmtime_store_epoch_deadline_callback(
        store.ptr(), _on_epoch_deadline, run_id, _NO_FINALIZER
    )


_LOG_FUNCTYPE = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [])


def _new_log_func(store: wasmtime.Store, run_id: int) -> wasmtime.Func:
    """env.log for one store; its callback finds the run by `run_id`."""
    raw = ffi.wasmtime_func_t()
    ffi.wasmtime_func_new(
        store._context(), _LOG_FUNCTYPE.ptr(), _env_log, run_id, _NO_FINALIZER, ctypes.byref(raw)
    )
    return wasmtime.Func._from_raw(raw)


# ---------------------------------------------------------------------------------------------
# Module inspection


def _read_leb(data: bytes, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 at `pos`: (value, next position)."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _declared_memory_min(wasm: bytes) -> int:
    """Largest declared minimum, in bytes, of the memories defined in a validated module."""
    pos, largest = 8, 0
    try:
        while pos < len(wasm):
            section_id = wasm[pos]
            size, pos = _read_leb(wasm, pos + 1)
            if section_id == 5:  # memory section: vec(limits)
                count, at = _read_leb(wasm, pos)
                for _ in range(count):
                    flags = wasm[at]
                    minimum, at = _read_leb(wasm, at + 1)
                    if flags & 0x01:
                        _, at = _read_leb(wasm, at)
                    page = PAGE_SIZE
                    if flags & 0x08:  # custom-page-sizes proposal: log2 of the page size
                        log2, at = _read_leb(wasm, at)
                        page = 1 << log2
                    largest = max(largest, minimum * page)
                return largest
            pos += size
    except IndexError:
        pass
    return largest


def _valtype_names(types: Sequence[wasmtime.ValType]) -> tuple[str, ...]:
    return tuple(str(t) for t in types)


def _signature(params: Sequence[str], results: Sequence[str]) -> str:
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _kind_name(ty: object) -> str:
    return {
        wasmtime.FuncType: "function",
        wasmtime.MemoryType: "memory",
        wasmtime.TableType: "table",
        wasmtime.GlobalType: "global",
    }.get(type(ty), type(ty).__name__)


def _inspect(module: wasmtime.Module, wasm: bytes) -> CompiledModule:
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    others: dict[str, str] = {}
    for export in module.exports:
        ty = export.type
        if isinstance(ty, wasmtime.FuncType):
            functions[export.name] = (_valtype_names(ty.params), _valtype_names(ty.results))
        else:
            others[export.name] = _kind_name(ty)
    import_error: str | None = None
    log_imports = 0
    for imp in module.imports:
        ty = imp.type
        where = f"{imp.module}.{imp.name}"
        if (imp.module, imp.name) != ("env", "log"):
            import_error = import_error or (
                f"unknown import {where} ({_kind_name(ty)}); this runtime offers only env.log"
            )
            continue
        if not isinstance(ty, wasmtime.FuncType):
            import_error = (
                import_error or f"import {where} must be a function, not {_kind_name(ty)}"
            )
            continue
        sig = (_valtype_names(ty.params), _valtype_names(ty.results))
        if sig != _LOG_SIGNATURE:
            import_error = import_error or (
                f"import {where} has type {_signature(*sig)}, "
                f"expected {_signature(*_LOG_SIGNATURE)}"
            )
            continue
        log_imports += 1
    return CompiledModule(
        sha256=hashlib.sha256(wasm).hexdigest(),
        size=len(wasm),
        functions=MappingProxyType(functions),
        other_exports=MappingProxyType(others),
        import_error=import_error,
        log_imports=log_imports,
        memory_min_bytes=_declared_memory_min(wasm),
        module=module,
    )


def _convert_args(
    entry: str, params: tuple[str, ...], args: Sequence[int | float]
) -> list[int | float] | str:
    """Arguments converted to the entry's parameter types, or why they do not fit."""
    if len(args) != len(params):
        return (
            f"entry {entry!r} takes {len(params)} argument(s) ({', '.join(params)}), "
            f"got {len(args)}"
        )
    converted: list[int | float] = []
    for index, (value, ty) in enumerate(zip(args, params, strict=True)):
        if ty not in _SUPPORTED_VALTYPES:
            return f"entry {entry!r} parameter {index} has unsupported type {ty}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"argument {index} for {ty} must be a number, got {type(value).__name__}"
        if ty in ("i32", "i64"):
            if not isinstance(value, int):
                return f"argument {index} for {ty} must be an int, got {value!r}"
            bits = 32 if ty == "i32" else 64
            if not -(1 << (bits - 1)) <= value < (1 << bits):
                return f"argument {index} = {value} does not fit in {ty}"
            if value >= 1 << (bits - 1):  # unsigned form: wrap to the signed value
                value -= 1 << bits
            converted.append(value)
        else:
            converted.append(float(value))
    return converted


def _trap_reason(message: str) -> str:
    """The 'Caused by' part of a wasmtime error message, on one line."""
    lines = message.strip().splitlines()
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1 :]
    return "; ".join(line.strip() for line in lines if line.strip())


def _exported_memories(instance: wasmtime.Instance, store: wasmtime.Store) -> list[int]:
    """Sizes in bytes of the instance's exported memories."""
    sizes = []
    for item in instance.exports(store).values():
        if isinstance(item, wasmtime.Memory):
            sizes.append(item.data_len(store))
    return sizes


# ---------------------------------------------------------------------------------------------
# Runtime


class WasmRuntime:
    """Validates, compiles (with a bounded SHA-256 cache) and runs modules under `RunLimits`.

    Host imports offered (module "env"): ``log(ptr: i32, len: i32)`` appends
    ``memory[ptr:ptr+len]`` of the module's exported memory "memory" to the run's log; an
    out-of-range ``ptr``/``len`` traps the module. Any other import makes the run LOAD_FAILED.
    """

    CACHE_SIZE = 32

    def __init__(self) -> None:
        self._engine = _engine()
        self._cache: OrderedDict[str, CompiledModule] = OrderedDict()
        self._cache_lock = threading.Lock()

    def validate(self, wasm: bytes) -> None:
        """Raise ModuleError unless `wasm` is a valid WebAssembly binary module."""
        wasm = _as_bytes(wasm)
        if not wasm.startswith(b"\0asm"):
            raise ModuleError(
                "not a WebAssembly binary module (no \\0asm magic; text format is not accepted)"
            )
        try:
            wasmtime.Module.validate(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"invalid WebAssembly module: {_trap_reason(str(exc))}") from None

    def compile(self, wasm: bytes) -> CompiledModule:
        """Compile `wasm` (cached by SHA-256); raise ModuleError for invalid bytes."""
        wasm = _as_bytes(wasm)
        digest = hashlib.sha256(wasm).hexdigest()
        with self._cache_lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
                return cached
        self.validate(wasm)
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"cannot compile module: {_trap_reason(str(exc))}") from None
        compiled = _inspect(module, wasm)
        with self._cache_lock:
            compiled = self._cache.setdefault(digest, compiled)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def run(
        self,
        module: CompiledModule | bytes,
        entry: str,
        args: Sequence[int | float] = (),
        limits: RunLimits = _DEFAULT_LIMITS,
        stop: StopToken | None = None,
        *,
        on_log: Callable[[bytes], None] | None = None,
    ) -> RunResult:
        """Instantiate `module` and call `entry(*args)` under `limits`; blocks until it ends.

        Never raises for module behaviour; every outcome is a RunResult:

        * RETURNED: values are the entry's results (i32/i64 as signed ints, f32/f64 as floats).
        * TRAPPED: detail is ``"<TRAP_CODE>: <wasmtime message>"`` (or the env.log fault).
        * OUT_OF_FUEL, TIMED_OUT, STOPPED: the fuel, wall-clock or stop request ended it.
        * OUT_OF_MEMORY: (a) instantiation was refused because a declared minimum memory
          exceeds ``limits.memory_bytes``; or (b) the module trapped while one of its exported
          memories was within one 64 KiB page of the limit, i.e. ``limit - size < 65536``:
          memory.grow failed because of the limit and the module gave up. A module that
          handles the failed grow and returns is RETURNED. Memories that are not exported
          cannot be inspected, so (b) only applies to exported memories.
        * LOAD_FAILED: invalid bytes, missing or non-function entry, arguments not matching
          the entry's parameters, or imports other than env.log (detail says which).

        `on_log`, if given, is called in the running thread with each chunk the module
        passes to env.log (untruncated); if it raises, the module traps.
        """
        start = time.perf_counter_ns()
        if isinstance(module, bytes | bytearray | memoryview):
            try:
                module = self.compile(bytes(module))
            except ModuleError as exc:
                return _result(Outcome.LOAD_FAILED, start, detail=str(exc))
        elif not isinstance(module, CompiledModule):
            raise TypeError(f"module must be CompiledModule or bytes, not {type(module).__name__}")

        signature = module.functions.get(entry)
        if signature is None:
            if entry in module.other_exports:
                reason = f"export {entry!r} is a {module.other_exports[entry]}, not a function"
            else:
                names = ", ".join(module.exports) or "none"
                reason = f"entry {entry!r} is not exported (exports: {names})"
            return _result(Outcome.LOAD_FAILED, start, detail=reason)
        params, results = signature
        unsupported = [t for t in results if t not in _SUPPORTED_VALTYPES]
        if unsupported:
            reason = f"entry {entry!r} returns unsupported type {unsupported[0]}"
            return _result(Outcome.LOAD_FAILED, start, detail=reason)
        converted = _convert_args(entry, params, args)
        if isinstance(converted, str):
            return _result(Outcome.LOAD_FAILED, start, detail=converted)
        if module.import_error is not None:
            return _result(Outcome.LOAD_FAILED, start, detail=module.import_error)

        run = _Run(limits, stop, on_log, start)
        run_id = next(_RUN_IDS)
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(1)
        _set_epoch_callback(store, run_id)
        _RUNS[run_id] = run
        watch = _WATCHDOG.schedule(run.deadline_ns)
        try:
            # Checked after the deadline is armed: a stop() from now on bumps the epoch.
            if stop is not None and stop.stopped:
                return _result(Outcome.STOPPED, start, log=run.log, detail="stopped on request")
            return self._execute(module, entry, converted, limits, store, run_id, start)
        finally:
            _WATCHDOG.cancel(watch)
            del _RUNS[run_id]

    def _execute(
        self,
        module: CompiledModule,
        entry: str,
        args: list[int | float],
        limits: RunLimits,
        store: wasmtime.Store,
        run_id: int,
        start: int,
    ) -> RunResult:
        run = _RUNS[run_id]
        imports: list[wasmtime.Func] = []
        if module.log_imports:
            log_func = _new_log_func(store, run_id)
            imports = [log_func] * module.log_imports
        try:
            instance = wasmtime.Instance(store, module.module, imports)
        except Exception as exc:
            if isinstance(exc, wasmtime.WasmtimeError) and run.interrupted is None:
                if module.memory_min_bytes > limits.memory_bytes:
                    detail = (
                        f"module declares {module.memory_min_bytes} bytes of memory, limit is "
                        f"{limits.memory_bytes}: {_trap_reason(str(exc))}"
                    )
                    return _result(Outcome.OUT_OF_MEMORY, start, run.log, store, limits, detail)
                return _result(
                    Outcome.LOAD_FAILED,
                    start,
                    run.log,
                    store,
                    limits,
                    f"instantiation failed: {_trap_reason(str(exc))}",
                )
            return self._classify(exc, None, store, run, limits, start)
        func = instance.exports(store).get(entry)
        if not isinstance(func, wasmtime.Func):  # excluded by the static checks in run()
            detail = f"entry {entry!r} is not an exported function"
            return _result(Outcome.LOAD_FAILED, start, run.log, store, limits, detail)
        try:
            value = func(store, *args)
        except Exception as exc:
            return self._classify(exc, instance, store, run, limits, start)
        if value is None:
            values: tuple[int | float, ...] = ()
        elif isinstance(value, list):
            values = tuple(value)
        else:
            values = (value,)
        return _result(Outcome.RETURNED, start, run.log, store, limits, "", values)

    @staticmethod
    def _classify(
        exc: Exception,
        instance: wasmtime.Instance | None,
        store: wasmtime.Store,
        run: _Run,
        limits: RunLimits,
        start: int,
    ) -> RunResult:
        """Outcome of a run that ended with an exception from wasmtime."""
        if run.interrupted is not None:
            return _result(
                run.interrupted, start, run.log, store, limits, run.interruption_detail()
            )
        if run.host_fault is not None:
            return _result(Outcome.TRAPPED, start, run.log, store, limits, run.host_fault)
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            detail = f"fuel budget of {limits.fuel} exhausted"
            return _result(Outcome.OUT_OF_FUEL, start, run.log, store, limits, detail)
        reason = _trap_reason(str(exc))
        detail = f"{code.name}: {reason}" if code is not None else reason
        if instance is not None:
            near = [
                s
                for s in _exported_memories(instance, store)
                if limits.memory_bytes - s < PAGE_SIZE
            ]
            if near:
                detail = (
                    f"memory at {near[0]} bytes reached the limit of {limits.memory_bytes}, "
                    f"then {detail}"
                )
                return _result(Outcome.OUT_OF_MEMORY, start, run.log, store, limits, detail)
        return _result(Outcome.TRAPPED, start, run.log, store, limits, detail)


def _as_bytes(wasm: object) -> bytes:
    if isinstance(wasm, bytes):
        return wasm
    if isinstance(wasm, bytearray | memoryview):
        return bytes(wasm)
    raise TypeError(f"module bytes expected, not {type(wasm).__name__}")


def _result(
    outcome: Outcome,
    start: int,
    log: bytes | bytearray = b"",
    store: wasmtime.Store | None = None,
    limits: RunLimits | None = None,
    detail: str = "",
    values: tuple[int | float, ...] = (),
) -> RunResult:
    fuel_used = 0
    if store is not None and limits is not None:
        try:
            fuel_used = limits.fuel - store.get_fuel()
        except wasmtime.WasmtimeError:
            fuel_used = limits.fuel
    return RunResult(
        outcome=outcome,
        values=values,
        log=bytes(log),
        fuel_used=fuel_used,
        duration_us=(time.perf_counter_ns() - start) // 1000,
        detail=detail,
    )
