"""Benchmark of the virtual device's WebAssembly runtime (wasmbed_hil.bench.virtual.runtime).

Prints medians over --repeats samples: compile time, fib(25), the per-run overhead of `add`,
and the costs of the timeout/stop design (shared engine + epoch deadline callback + watchdog)
next to what a per-run Engine would cost instead. Figures only, no assertions.

    .venv/bin/python benchmarks/bench_runtime.py --repeats 20
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wasmtime

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.virtual import runtime
from wasmbed_hil.bench.virtual.runtime import RunLimits, StopToken, WasmRuntime


def median_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1000


def timed(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def line(label: str, value: float, unit: str = "us") -> None:
    print(f"{label:<58} {value:>12.1f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="samples per figure")
    repeats = parser.parse_args().repeats

    rt = WasmRuntime()
    fib_wasm, add_wasm = modules.build("fib"), modules.build("add")
    spin = rt.compile(modules.build("spin"))
    version = importlib.metadata.version("wasmtime")
    print(f"wasmtime {version}, {os.cpu_count()} CPUs, median of {repeats} samples")

    line(
        "compile fib (validate + compile + inspect, cache miss)",
        median_us([timed(lambda: WasmRuntime().compile(fib_wasm)) for _ in range(repeats)]),
    )
    line(
        "compile fib (cache hit)",
        median_us([timed(lambda: rt.compile(fib_wasm)) for _ in range(repeats)]),
    )

    fib = rt.compile(fib_wasm)
    results = [rt.run(fib, "fib", (25,)) for _ in range(repeats)]
    line("fib(25) run, duration_us", statistics.median(r.duration_us for r in results))
    line("fib(25) fuel used", statistics.median(r.fuel_used for r in results), "fuel")

    add = rt.compile(add_wasm)
    for _ in range(20):  # warm up
        rt.run(add, "main", (1, 2))
    line(
        "add(1, 2) per-run overhead (store + instantiate + call)",
        median_us([timed(lambda: rt.run(add, "main", (1, 2))) for _ in range(repeats * 10)]),
    )
    line(
        "hello (env.log host call) per run",
        median_us(
            [timed(lambda: rt.run(modules.build("hello"), "main")) for _ in range(repeats * 10)]
        ),
    )

    print("-- timeout/stop design: shared engine, per-store epoch callback, watchdog thread")
    entry = runtime._WATCHDOG.schedule(time.perf_counter_ns() + 10**9)
    runtime._WATCHDOG.cancel(entry)
    line(
        "watchdog schedule + cancel (part of every run)",
        median_us(
            [
                timed(
                    lambda: runtime._WATCHDOG.cancel(
                        runtime._WATCHDOG.schedule(time.perf_counter_ns() + 10**9)
                    )
                )
                for _ in range(repeats * 10)
            ]
        ),
    )
    engine = runtime._engine()
    line(
        "engine.increment_epoch (cost of stop() / a deadline)",
        median_us([timed(engine.increment_epoch) for _ in range(repeats * 10)]),
    )

    overshoot = []
    for _ in range(repeats):
        r = rt.run(spin, "main", limits=RunLimits(fuel=10**15, timeout_s=0.02))
        overshoot.append((r.duration_us - 20_000) * 1000)
    line("timeout overshoot past a 20 ms budget (spin)", median_us(overshoot))

    def ticker_until_stopped(token: StopToken, started: threading.Event, ended: list[int]) -> None:
        limits = RunLimits(fuel=10**15, timeout_s=10)
        rt.run(spin, "ticker", limits=limits, stop=token, on_log=lambda _chunk: started.set())
        ended.append(time.perf_counter_ns())

    latencies = []
    for _ in range(repeats):
        token, started, ended = StopToken(), threading.Event(), []
        worker = threading.Thread(target=ticker_until_stopped, args=(token, started, ended))
        worker.start()
        started.wait(10)
        t0 = time.perf_counter_ns()
        token.stop()
        worker.join(10)
        latencies.append(ended[0] - t0)
    line("stop() until run() returned in its thread (ticker)", median_us(latencies))

    busy: list[int] = []
    done = threading.Event()

    def bump() -> None:  # 1000 epoch increments/s from elsewhere (stops/deadlines of others)
        while not done.wait(0.001):
            engine.increment_epoch()

    bumper = threading.Thread(target=bump)
    bumper.start()
    busy = [rt.run(fib, "fib", (25,)).duration_us for _ in range(repeats)]
    done.set()
    bumper.join()
    line("fib(25) duration_us while the epoch is bumped 1000/s", statistics.median(busy))

    print("-- alternative rejected: a per-run Engine (own epoch, no callback)")
    config_ns, deser_add, deser_fib = [], [], []
    ser_add, ser_fib = add.module.serialize(), fib.module.serialize()
    for _ in range(repeats * 5):
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        start = time.perf_counter_ns()
        own = wasmtime.Engine(cfg)
        config_ns.append(time.perf_counter_ns() - start)
        deser_add.append(timed(lambda e=own: wasmtime.Module.deserialize(e, ser_add)))
        deser_fib.append(timed(lambda e=own: wasmtime.Module.deserialize(e, ser_fib)))
    line("wasmtime.Engine(config) creation", median_us(config_ns))
    line("Module.deserialize(add) into a new engine", median_us(deser_add))
    line("Module.deserialize(fib) into a new engine", median_us(deser_fib))
    line(
        "per-run engine would add (engine + deserialize add)",
        median_us(config_ns) + median_us(deser_add),
    )


if __name__ == "__main__":
    main()
