"""`wasmbed-hil report`: the regression report of a scenario run against a baseline.

Reads the current run (Allure results, JUnit XML or a summary.json; several of them for
the shards of one run, merged) and optionally a baseline, classifies every test (new
failure, fixed, still failing, flaky, slower, infrastructure, quarantined, new, removed,
skipped) and writes report.html, summary.md and
summary.json (the next baseline) into --out. Exit 1 when there is a new product failure that
is not quarantined, 0 otherwise; 2 for a bad option or quarantine file; 3 when an input
cannot be read. See docs/report.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..report import (
    Comparison,
    QuarantineError,
    RunReadError,
    allure3,
    compare,
    load_quarantine,
    load_runs,
    write_report,
)
from ..report.compare import DEFAULT_MIN_DELTA, DEFAULT_THRESHOLD, NEEDS_BASELINE, SECTIONS
from .common import EXIT_ENVIRONMENT, EXIT_USAGE, CliError, console

DEFAULT_CURRENT = Path("reports/allure-results")
DEFAULT_OUT = Path("reports")
DEFAULT_QUARANTINE = Path("quarantine.yaml")
SHOWN = 10
STYLES = {"new_failures": "bold red", "infrastructure": "magenta", "flaky": "yellow",
          "slower": "yellow", "fixed": "green", "still_failing": "red",
          "quarantined": "dim", "new_tests": "cyan"}


def _plain(message: str) -> str:
    """A message that the console prints as it is (fail() reads rich markup: a test id's
    `[param]` would vanish), lone surrogates as `?`: a path given in bytes that are not
    UTF-8, or JSON's "\\ud800" in a result, cannot be written to a UTF-8 terminal."""
    return escape(message.encode("utf-8", "replace").decode("utf-8"))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report", help="regression report of a test run against a baseline",
        description="Compare a scenario run (Allure results directory, JUnit XML or a "
        "summary.json) with a baseline and write report.html, summary.md and summary.json "
        "(keep it as the next baseline). Exit 1 when there is a new product failure that is "
        "not quarantined, 3 when an input cannot be read.",
    )
    p.add_argument("--current", type=Path, nargs="+", action="extend", metavar="PATH",
                   help="the run to report; several paths: the results of the shards of "
                   "one run (pytest --hil-shard K/N), merged into one, a test reported by "
                   f"two of them an error (default: {DEFAULT_CURRENT})")
    p.add_argument("--baseline", type=Path, nargs="+", action="extend", metavar="PATH",
                   help="the run to compare with, one path or its shards' (default: none, "
                   "the run alone)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"where to write the report (default: {DEFAULT_OUT})")
    p.add_argument("--quarantine", type=Path, metavar="PATH",
                   help=f"quarantine file (default: ./{DEFAULT_QUARANTINE} if present)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="F",
                   help="duration regression when slower than the baseline by more than this "
                   f"fraction (default: {DEFAULT_THRESHOLD})")
    p.add_argument("--min-delta", type=float, default=DEFAULT_MIN_DELTA, metavar="S",
                   help="... and by more than this many seconds (default: "
                   f"{DEFAULT_MIN_DELTA})")
    p.add_argument("--title", default="Regression report", metavar="TEXT",
                   help="title of the report (default: Regression report)")
    allure = p.add_argument_group(
        "Allure 3", "With Allure results as --current, the run is also rendered by Allure 3 "
        f"(npm package allure@{allure3.VERSION}, installed pinned on first use with npm ci) "
        "into OUT/allure-report/index.html, which report.html links to.")
    allure.add_argument("--allure", choices=("auto", "off", "required"), default="auto",
                        help="auto: where node and npm are, else skip with one line; "
                        "required: fail (exit 3) when it cannot run; off: never "
                        "(default: auto)")
    allure.add_argument("--allure-cache", type=Path, metavar="DIR",
                        help=f"where Allure 3 is installed (default: ${allure3.ENV_CACHE} or "
                        f"{allure3.DEFAULT_CACHE})")
    allure.add_argument("--allure-history", type=Path, metavar="PATH",
                        help="history file Allure reads and appends to, carried between runs "
                        "(default: OUT/allure-history.jsonl)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # not `< 0`: argparse's float() takes "nan", which every comparison is False for, so
    # no test would ever be slower
    if not (args.threshold >= 0 and args.min_delta >= 0):
        raise CliError("--threshold and --min-delta must be >= 0", code=EXIT_USAGE)
    quarantine = None
    path = args.quarantine
    if path is None and DEFAULT_QUARANTINE.is_file():
        path = DEFAULT_QUARANTINE
    if path is not None:
        try:
            quarantine = load_quarantine(path)
        except OSError as exc:
            raise CliError(_plain(f"cannot read the quarantine file {path}: "
                                  f"{exc.strerror or exc}")) from None
        except QuarantineError as exc:
            raise CliError(_plain(f"invalid quarantine file: {exc}"), code=EXIT_USAGE) from None
    args.current = args.current or [DEFAULT_CURRENT]
    try:
        current = load_runs(args.current)
    except RunReadError as exc:
        raise CliError(_plain(f"cannot read the current run: {exc}")) from None
    baseline = None
    if args.baseline is not None:
        try:
            baseline = load_runs(args.baseline)
        except RunReadError as exc:
            raise CliError(_plain(f"cannot read the baseline: {exc}")) from None
    comparison = compare(current, baseline, quarantine, args.threshold, args.min_delta)
    allure_index = _allure(args, current.kind == "allure")
    try:
        written = write_report(comparison, args.out, args.title, allure_index)
    except OSError as exc:
        raise CliError(_plain(f"cannot write the report into {args.out}: "
                              f"{exc.strerror or exc}"), code=EXIT_ENVIRONMENT) from None
    _print(comparison, written["report.html"])
    return comparison.exit_code


def _allure(args: argparse.Namespace, allure_results: bool) -> Path | None:
    """Allure 3's index.html for the run, or None (said in one line) when it is not made."""
    if args.allure == "off":
        return None
    err = console(stderr=True)
    if not allure_results:
        what = ("is not an Allure results directory" if len(args.current) == 1
                else "are not all Allure results directories")
        why = f"{' and '.join(str(p) for p in args.current)} {what}"
    else:
        why = allure3.unavailable_reason() or ""
        if not why:
            try:
                results = args.current[0] if len(args.current) == 1 else args.current
                made = allure3.generate(
                    results, args.out / "allure-report",
                    args.allure_history or args.out / "allure-history.jsonl",
                    args.title, args.allure_cache)
                if made.damaged:
                    err.print(f"allure: {made.damaged} damaged line"
                              f"{'s' if made.damaged != 1 else ''} of the history "
                              f"{_plain(str(made.history))} left out")
                return made.index
            except (allure3.AllureError, OSError) as exc:
                why = str(exc)
    if args.allure == "required":
        raise CliError(_plain(f"Allure 3 report not made: {why}"), code=EXIT_ENVIRONMENT)
    err.print(f"allure: skipped, {_plain(why)}")
    return None


def _print(comparison: Comparison, html: Path) -> None:
    out = console()
    counts = comparison.counts
    totals = comparison.current.totals()
    new = counts["new_failures"]
    verdict = (f"[bold red]FAIL[/] {new} new product failure{'s' if new != 1 else ''}"
               if new else "[bold green]PASS[/] no new product failures")
    against = (f"against {_plain(str(comparison.baseline.source))}" if comparison.baseline
               else "without a baseline")
    out.print(f"{verdict}: {totals['total']} tests in {_plain(str(comparison.current.source))}"
              f" {against}")
    table = Table(show_header=False, box=None, padding=(0, 2))
    for name, heading in SECTIONS.items():
        if name in NEEDS_BASELINE and comparison.baseline is None:
            continue
        style = STYLES.get(name, "") if counts[name] else "dim"
        table.add_row(f"[{style}]{heading}[/]" if style else heading,
                      f"[{style}]{counts[name]}[/]" if style else str(counts[name]))
    out.print(table)
    for item in comparison.sections["new_failures"][:SHOWN]:
        message = item.test.message.strip().splitlines()[0] if item.test.message.strip() else ""
        out.print(f"  [red]✗[/] {_plain(item.test.display)}"
                  + (f" [dim]{_plain(message[:120])}[/]" if message else ""))
    if new > SHOWN:
        out.print(f"  ... and {new - SHOWN} more")
    for entry, why in comparison.quarantine_notes:
        if entry.expired:
            out.print(f"[yellow]quarantine entry {_plain(entry.test)} {_plain(why)}[/]")
    out.print(f"report: {_plain(str(html))} (summary.md, summary.json beside it)")
