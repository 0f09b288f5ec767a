"""The firmware's fuzz harnesses (firmware/fuzz): executions per second and total executions of
each, one harness at a time (`make -C firmware/fuzz fuzz-long`, niced), from libFuzzer's final
statistics. A finding fails the run (the make target stops, the input is in
firmware/fuzz/build/artifacts/<harness>/).

    .venv/bin/python benchmarks/bench_fuzz.py --seconds 10          # a quick look
    .venv/bin/python benchmarks/bench_fuzz.py --runs 10000000       # the long run (issue 11)
    .venv/bin/python benchmarks/bench_fuzz.py --log FILE            # figures of a saved run

Prints "skipped" when no clang with libFuzzer is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "firmware" / "fuzz"
HARNESSES = ("codec", "session", "blob")


@dataclass(frozen=True)
class Stats:
    harness: str
    executions: int
    per_second: int
    new_units: int
    peak_rss_mb: int


def parse(output: str) -> list[Stats]:
    """libFuzzer's -print_final_stats=1 lines, per "== fuzz <harness>" section of the make
    target's output."""
    stats = []
    for section in re.split(r"^== fuzz ", output, flags=re.M)[1:]:
        harness = section.split(":", 1)[0].strip()
        fields = dict(re.findall(r"^stat::(\w+):\s+(\d+)", section, flags=re.M))
        if "number_of_executed_units" not in fields:
            raise SystemExit(f"{harness}: no final statistics (a finding?)\n{section[-3000:]}")
        stats.append(Stats(harness, int(fields["number_of_executed_units"]),
                           int(fields["average_exec_per_sec"]), int(fields["new_units_added"]),
                           int(fields["peak_rss_mb"])))
    return stats


def report(stats: list[Stats], seconds: dict[str, float]) -> None:
    print(f"{'harness':<10} {'executions':>14} {'exec/s':>10} {'wall s':>9} {'new inputs':>11} "
          f"{'peak MB':>8}")
    for s in stats:
        wall = f"{seconds[s.harness]:.0f}" if s.harness in seconds else "-"
        print(f"{s.harness:<10} {s.executions:>14,} {s.per_second:>10,} {wall:>9} "
              f"{s.new_units:>11,} {s.peak_rss_mb:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=0, help="executions per harness (0: none)")
    parser.add_argument("--seconds", type=int, default=0, help="bound per harness (0: none)")
    parser.add_argument("--harness", choices=HARNESSES, action="append",
                        help="only these (repeatable); default all three")
    parser.add_argument("--log", type=Path, help="print the figures of a saved make output")
    args = parser.parse_args()
    if args.log is not None:
        report(parse(args.log.read_text(encoding="utf-8", errors="replace")), {})
        return 0
    if args.runs <= 0 and args.seconds <= 0:
        parser.error("give --runs and/or --seconds (or --log)")
    toolchain = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(FUZZ),
                                "toolchain"], capture_output=True, text=True)
    if toolchain.returncode != 0:
        print("skipped: " + toolchain.stderr.strip().splitlines()[0])
        return 0
    print(toolchain.stdout.strip())
    stats: list[Stats] = []
    seconds: dict[str, float] = {}
    for harness in args.harness or HARNESSES:
        start = time.monotonic()
        # -runs=-1: no bound on executions (libFuzzer's default); the time bound then applies
        result = subprocess.run(
            ["make", "-C", str(FUZZ), "fuzz-long", f"HARNESSES={harness}",
             f"FUZZ_RUNS={args.runs if args.runs > 0 else -1}", f"FUZZ_SECONDS={args.seconds}"],
            capture_output=True, text=True)
        seconds[harness] = time.monotonic() - start
        output = result.stdout + result.stderr
        if result.returncode != 0:
            print(output[-4000:], file=sys.stderr)
            print(f"{harness}: FINDING or failure (exit {result.returncode}); input under "
                  f"{FUZZ / 'build' / 'artifacts' / harness}", file=sys.stderr)
            return 1
        stats += parse(output)
    report(stats, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
