"""benchmarks/bench_enroll.py, run for real at a tiny size: the enrollment figures come from the
gateway's own counters and process, and the handshake ceiling's bare TLS server completes one
mutual TLS handshake per client certificate and is gone afterwards."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their siblings by plain name
    if "bench_enroll" in sys.modules:
        return sys.modules["bench_enroll"]
    spec = importlib.util.spec_from_file_location("bench_enroll", BENCH / "bench_enroll.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_enroll"] = module
    spec.loader.exec_module(module)
    return module


def _children() -> set[int]:
    """Live child processes of this test process."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(entry))
    return out


def test_enrollments_are_counted_by_the_gateway(bench: ModuleType, tmp_path: Path) -> None:
    before = _children()
    res = bench.measure(tmp_path, devices=3, procs=1, concurrency=2)
    assert (res["enrolled"], res["online"], res["failed"]) == (3, 3, 0)
    # /proc counts CPU in ticks (10 ms): three enrollments may not reach one.
    assert res["gateway_cpu_s"] >= 0
    assert res["per_core_s"] > 0 or math.isnan(res["per_core_s"])
    # Each device heartbeats once welcomed: the window's heartbeats are counted and shown.
    assert 0 <= res["heartbeats"] <= 6  # at most two each (5 s interval, a short window)
    assert _children() <= before


def test_the_handshake_ceiling_completes_one_handshake_per_client(
    bench: ModuleType, tmp_path: Path,
) -> None:
    before = _children()
    res = bench.handshake_ceiling(tmp_path, handshakes=4, concurrency=2)
    assert (res["handshakes"], res["failures"]) == (4, 0)
    assert res["server_cpu_s"] >= 0
    assert res["per_core_s"] > 0 or math.isnan(res["per_core_s"])
    assert _children() <= before  # the server process is stopped


def test_openssl_alone_times_complete_handshakes(bench: ModuleType, tmp_path: Path) -> None:
    res = bench.openssl_handshake_us(tmp_path, 3)
    assert res["handshakes"] == 3
    assert res["server_us"] > 0 and res["per_core_s"] > 0
