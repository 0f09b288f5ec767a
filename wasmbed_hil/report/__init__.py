"""Regression reports for scenario runs (`wasmbed-hil report`).

    results           read a run: Allure results, JUnit XML or a stored summary.json
    categories        infrastructure vs product failures
    quarantine        the quarantine file
    merge             one run from N shards' results (a test in two shards is an error)
    compare           classify every test against a baseline
    render_html       report.html, self-contained
    render_markdown   summary.md, for a CI comment

    run = load_run("reports/allure-results")
    comparison = compare(run, load_run("baseline/summary.json"), load_quarantine("q.yaml"))
    write_report(comparison, Path("reports"))   # report.html, summary.md, summary.json
    comparison.exit_code                        # 1 when there is a new product failure
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_atomic
from .compare import Comparison, Item, compare
from .merge import DuplicateTestError, load_runs, merge_runs
from .quarantine import Quarantine, QuarantineEntry, QuarantineError, load_quarantine
from .render_html import render_html
from .render_markdown import render_markdown
from .results import CaseResult, Run, RunReadError, load_run, run_to_json

OUTPUTS = ("report.html", "summary.md", "summary.json")


def write_report(comparison: Comparison, out_dir: Path | str,
                 title: str = "Regression report",
                 allure_report: Path | None = None) -> dict[str, Path]:
    """Write report.html, summary.md and summary.json into `out_dir` (created if needed);
    report.html links to `allure_report` (Allure 3's index.html) when given. OSError when it
    cannot be written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "report.html": render_html(comparison, out_dir, title, allure_report=allure_report),
        "summary.md": render_markdown(comparison, title),
        "summary.json": json.dumps(run_to_json(comparison.current, out_dir,
                                               comparison.to_json()), indent=1) + "\n",
    }
    paths = {}
    for name, text in texts.items():
        path = out_dir / name
        # "replace": a lone surrogate (JSON's "\ud800", a file name decoded with
        # surrogateescape in a message) cannot be UTF-8; summary.json escapes it anyway
        write_atomic(path, text.encode("utf-8", errors="replace"))
        paths[name] = path
    return paths


__all__ = [
    "OUTPUTS", "CaseResult", "Comparison", "DuplicateTestError", "Item", "Quarantine",
    "QuarantineEntry", "QuarantineError", "Run", "RunReadError", "compare", "load_quarantine",
    "load_run", "load_runs", "merge_runs",
    "render_html", "render_markdown", "run_to_json", "write_report",
]
