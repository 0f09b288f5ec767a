"""Time from healing a fault to convergence, per fault kind (bench.faultkinds).

Run from the repository root:
    .venv/bin/python benchmarks/bench_convergence.py                    # virtual, 5 runs each
    .venv/bin/python benchmarks/bench_convergence.py --backend qemu --runs 3

For each fault kind the backend supports (the device-level ones that need no transfer), on a
device with an established session and the harness's test timings (heartbeat 200 ms,
Unreachable after 800 ms): apply the fault (a sustained one is held until the gateway notices
it), heal it, and time the convergence oracle's wait (bench.convergence), which ends when the
device is connected and has had a heartbeat acknowledged since, and nothing disagrees. Prints
the median, min and max per kind and never asserts. An instant fault's time runs from the
fault, a sustained one's from its healing. Every device and gateway it starts is closed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasmbed_hil.bench.convergence import ConvergenceOracle, DesiredState
from wasmbed_hil.bench.faultkinds import FAULT_KINDS, FaultContext, strike
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.scope import BenchScope
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.pki import FleetCA

BOUND_S = 30.0


def one(loop: LoopThread, ca: FleetCA, workdir: Path, backend: str, name: str,
        rng: random.Random) -> float | str:
    """Seconds from heal to convergence, or why the kind cannot run on this backend."""
    kind = FAULT_KINDS[name]
    scope = BenchScope(loop, ca, workdir, label=name)
    try:
        gateway = scope.gateway(GatewayConfig.for_tests())
        device = scope.device(backend, "dut", gateway)
        reason = kind.unsupported(device, "heartbeat", 0)
        if reason:
            return reason
        device.power_on()
        device.wait_online(20)
        gateway.wait_heartbeats(device, 1, 10)
        ctx = FaultContext(gateway, device, rng, timeout=20, operation="heartbeat")
        kind.arm(ctx)
        strike(kind, ctx)
        if kind.sustained:
            kind.wait_effect(ctx)
            kind.heal(ctx)
        kind.disarm(ctx)  # an armed fault (a message fault) has struck and is taken off
        oracle = ConvergenceOracle(loop, gateways=[gateway], devices=[device])
        return oracle.wait(BOUND_S, DesiredState().holds_nothing(device)).elapsed_s
    finally:
        errors = scope.close()
        if errors:
            print(f"  cleanup: {'; '.join(errors)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="virtual")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    kinds = [n for n, k in FAULT_KINDS.items() if not k.needs_platform and not k.needs_transfer]
    loop = LoopThread(name="bench-convergence")
    ca = FleetCA.create("bench convergence CA")
    rng = random.Random(args.seed)
    print(f"heal -> converged, backend {args.backend}, {args.runs} runs per fault kind")
    print(f"{'fault':<18}{'median s':>10}{'min s':>9}{'max s':>9}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
            for i, name in enumerate(kinds):
                times: list[float] = []
                skipped = ""
                for run in range(args.runs):
                    got = one(loop, ca, Path(tmp) / f"{i}-{run}", args.backend, name, rng)
                    if isinstance(got, str):
                        skipped = got
                        break
                    times.append(got)
                if skipped:
                    print(f"{name:<18}  skipped: {skipped}")
                    continue
                print(f"{name:<18}{statistics.median(times):>10.3f}{min(times):>9.3f}"
                      f"{max(times):>9.3f}")
    finally:
        leftovers = loop.close()
        if leftovers:
            print(f"tasks left on the loop: {leftovers}", file=sys.stderr)


if __name__ == "__main__":
    main()
