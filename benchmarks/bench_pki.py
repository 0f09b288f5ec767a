"""Benchmark the fleet PKI: device certificates issued per second and CA creation time.

Run from the repository root: python -m benchmarks.bench_pki [--repeats N] [--count N]
(or python benchmarks/bench_pki.py with the package installed or on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import statistics
import time

from wasmbed_hil.pki import FleetCA


def issue_rate(ca: FleetCA, key_type: str, count: int) -> float:
    """Device identities (key + certificate + identity) issued per second."""
    start = time.perf_counter()
    identities = [
        ca.issue_device(f"bench-{index}", key_type=key_type).identity  # type: ignore[arg-type]
        for index in range(count)
    ]
    return len(identities) / (time.perf_counter() - start)


def ca_creation_ms() -> float:
    """Milliseconds to create one fleet CA."""
    start = time.perf_counter()
    FleetCA.create()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats per figure (median)")
    parser.add_argument("--count", type=int, default=300, help="issuances per repeat")
    args = parser.parse_args()
    if args.repeats < 1 or args.count < 1:
        parser.error("--repeats and --count must be positive")

    ca = FleetCA.create()
    ca.issue_device("warm-up")
    print(f"repeats={args.repeats} issuances/repeat={args.count}")
    for key_type in ("p256", "ed25519"):
        rates = [issue_rate(ca, key_type, args.count) for _ in range(args.repeats)]
        print(
            f"issue_device {key_type:8s} median {statistics.median(rates):8.0f}/s"
            f"  (min {min(rates):.0f}, max {max(rates):.0f})"
        )
    times = [ca_creation_ms() for _ in range(args.repeats)]
    print(
        f"FleetCA.create        median {statistics.median(times):8.2f} ms"
        f"  (min {min(times):.2f}, max {max(times):.2f})"
    )


if __name__ == "__main__":
    main()
