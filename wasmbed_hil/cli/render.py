"""How the REST commands (`devices`, `apps`, `deploy`) print: the console, JSON on stdout,
phases in colour, the key/value block and the per-device results table, a spinner.

`-o json` prints the API's own JSON on stdout, without colour or progress; otherwise tables
(colour only on a terminal).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import console

RETURNED = "RETURNED"  # the outcome of a run that returned

_PHASE_STYLE = {
    "Connected": "green", "Running": "green", RETURNED: "green", "Enrolled": "cyan",
    "Deploying": "cyan", "Installed": "cyan", "Creating": "cyan", "Disconnected": "yellow",
    "PartiallyRunning": "yellow", "Stopped": "yellow", "Unknown": "yellow", "Deleting": "yellow",
    "Unreachable": "red", "Failed": "red",
}


def output_console() -> Console:
    """The stdout console of a command's result."""
    out = console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 200  # piped: a table row stays one line, for grep and awk
    return out


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def styled_phase(phase: str) -> str:
    """A phase or run outcome as markup: coloured by what it means, escaped."""
    colour = _PHASE_STYLE.get(phase)
    if colour is None and phase not in ("Pending", "?"):
        colour = "red" if phase.isupper() else None  # TRAPPED, OUT_OF_FUEL, ...
    return f"[{colour}]{escape(phase)}[/]" if colour else escape(phase)


def format_values(values: Any) -> str:
    if not values:
        return "-"
    return ", ".join(json.dumps(v) for v in values)


def format_targets(targets: dict[str, Any]) -> str:
    """An Application's targetDevices in words."""
    if targets.get("deviceNames"):
        return "devices " + ", ".join(targets["deviceNames"])
    if targets.get("allDevices"):
        return "all devices"
    selector = targets.get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        terms.append({"Exists": key, "DoesNotExist": f"!{key}"}.get(
            op, f"{key} {str(op).lower()} ({','.join(values)})"))
    return "devices matching " + (",".join(terms) or "everything")


def table(columns: Sequence[str], **kwargs: Any) -> Table:
    """A borderless table with these columns (headed in capitals, long cells folded)."""
    listing = Table(box=None, pad_edge=False, header_style="bold", **kwargs)
    for column in columns:
        listing.add_column(column.upper(), overflow="fold")
    return listing


def block(rows: list[tuple[str, str]]) -> Table:
    """One object in detail: a bold key, its value, a row each."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def results_table(app: dict[str, Any]) -> Table | str:
    """An Application's per-device results: phase, outcome, values, error."""
    rows = app.get("deviceStatuses") or []
    if not rows:
        return "no target devices"
    results = table(("device", "phase", "outcome", "values", "error"))
    for r in rows:
        results.add_row(escape(r.get("device", "?")), styled_phase(r.get("phase", "?")),
                        styled_phase(r["outcome"]) if r.get("outcome") else "-",
                        escape(format_values(r.get("values"))), escape(r.get("error") or ""))
    return results


def spinner(out: Console, text: str) -> Any:
    """A spinner on a terminal; nothing otherwise."""
    return out.status(escape(text)) if out.is_terminal else contextlib.nullcontext()
