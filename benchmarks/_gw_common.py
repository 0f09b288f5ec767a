"""Helpers shared by the gateway benchmark's child process (_gw_server.py).

The children talk to bench_gateway.py with one JSON object per line: commands on stdin,
replies on stdout (logs go to stderr). End of stdin means "stop now": a child never outlives
the benchmark that started it, even when that one is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def tune_ssl_buffer(size: int) -> int | None:
    """Set asyncio's per-connection TLS read buffer to `size` (0: leave it); the size in
    force, None if not tunable (wasmbed_hil.gateway.tlsbuffer holds the knob)."""
    from wasmbed_hil.gateway.tlsbuffer import set_tls_read_buffer, tls_read_buffer

    return set_tls_read_buffer(size) if size > 0 else tls_read_buffer()


def rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')} {os.getpid()}] {msg}\n")
    sys.stderr.flush()


def child_signals() -> None:
    """Ctrl-C reaches the whole process group: let the parent decide (it sends "stop" or closes
    stdin); SIGTERM ends the child at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(3))


def child_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark child process's start: its signals (child_signals) and the arguments every
    child takes, --ca-dir (the fleet CA the parent made) and --workdir."""
    child_signals()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    return parser


async def commands() -> AsyncIterator[dict[str, Any]]:
    """Commands from stdin; {"cmd": "stop"} is yielded on end of input."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            yield {"cmd": "stop", "eof": True}
            return
        line = line.strip()
        if line:
            yield json.loads(line)


class GcPauses:
    """Durations of the cyclic garbage collector's runs (they stop the event loop)."""

    def __init__(self) -> None:
        self._started = 0.0
        self.pauses: list[tuple[int, float]] = []
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info.get("generation", -1), time.perf_counter() - self._started))

    def take(self) -> dict[str, float]:
        pauses, self.pauses = self.pauses, []
        gen2 = [d for g, d in pauses if g == 2]
        return {
            "gc_runs": len(pauses),
            "gc_max_ms": round(max((d for _, d in pauses), default=0.0) * 1000, 2),
            "gc_gen2_runs": len(gen2),
            "gc_gen2_max_ms": round(max(gen2, default=0.0) * 1000, 2),
        }


class LagMonitor:
    """How late the event loop wakes a task that sleeps `period` seconds (loop saturation)."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period)
            self.samples.append(max(0.0, loop.time() - before - self.period))

    def take(self) -> dict[str, float]:
        """p99 and max lag (ms) since the last take()."""
        samples, self.samples = sorted(self.samples), []
        if not samples:
            return {"lag_p99_ms": 0.0, "lag_max_ms": 0.0}
        p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))]
        return {"lag_p99_ms": round(p99 * 1000, 2), "lag_max_ms": round(samples[-1] * 1000, 2)}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
