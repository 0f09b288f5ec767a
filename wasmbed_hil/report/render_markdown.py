"""summary.md: the comparison as a CI comment (GitHub/GitLab flavoured Markdown).

A verdict line, a table of counts, then one list per non-empty section, each cut after
`limit` entries with "and N more". Test names are code spans (their fence longer than any
backtick run in the name); messages are text with Markdown's special characters escaped.
"""

from __future__ import annotations

import re

from .compare import GROUP_LABEL, NEEDS_BASELINE, SECTIONS, Comparison, Item, group_by_label

DEFAULT_LIMIT = 15
MESSAGE_CHARS = 160
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!{}])")
SHOWN_LABELS = ("backend", "fault")


def md_text(text: str, limit: int | None = None) -> str:
    """`text` on one line with Markdown's special characters (pipes and backticks among
    them) escaped; cut at `limit` characters."""
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return _SPECIAL.sub(r"\\\1", line.replace("&", "&amp;"))


def md_code(text: str, table: bool = False) -> str:
    """`text` as an inline code span that its own backticks cannot close; in a table cell
    its pipes are escaped too (GFM reads \\| there as a pipe, inside code as well)."""
    line = " ".join(str(text).split())
    longest = max((len(m) for m in re.findall(r"`+", line)), default=0)
    fence = "`" * (longest + 1)
    if line.startswith("`") or line.endswith("`"):
        line = f" {line} "
    if table:
        line = line.replace("|", "\\|")
    return f"{fence}{line}{fence}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _labels(item: Item) -> str:
    parts = [f"{name}: {item.test.label(name)}" for name in SHOWN_LABELS if item.test.label(name)]
    return f" ({md_text(', '.join(parts))})" if parts else ""


def _line(name: str, item: Item) -> str:
    test = item.test
    head = f"- {md_code(test.display)}{_labels(item)}"
    if name in ("new_failures", "still_failing", "infrastructure", "quarantined"):
        detail = test.message.strip().splitlines()[0] if test.message.strip() else test.status
        extra = ""
        if name == "quarantined" and item.quarantine:
            extra = f" — quarantined: {md_text(item.quarantine.reason, MESSAGE_CHARS)}"
        elif name == "infrastructure" and test.category_source.startswith("marker"):
            extra = f" — suspected ({md_text(test.category_source)})"
        notes = [item.note] if item.note else []
        if name == "new_failures" and item.baseline is not None and not item.baseline.failing:
            notes.insert(0, f"{item.baseline.status} in the baseline")
        note = f" — _{md_text('; '.join(notes))}_" if notes else ""
        return f"{head}: {md_text(detail, MESSAGE_CHARS)}{extra}{note}"
    if name == "flaky":
        return f"{head}: {md_text(item.note)}"
    if name == "fixed" and item.baseline:
        return f"{head}: {md_text(item.baseline.status)} in the baseline"
    if name == "skipped" and test.message:
        return f"{head}: {md_text(test.message, MESSAGE_CHARS)}"
    return head


def render_markdown(comparison: Comparison, title: str = "Regression report",
                    limit: int = DEFAULT_LIMIT, html_name: str = "report.html") -> str:
    counts = comparison.counts
    current = comparison.current
    new = counts["new_failures"]
    if new:
        verdict = (f"❌ {md_text(title)}: {new} new product failure{'s' if new != 1 else ''}")
    else:
        verdict = f"✅ {md_text(title)}: no new product failures"
    totals = current.totals()
    lines = [f"## {verdict}", ""]
    run_line = (f"**Current:** {md_code(str(current.source))}: {totals['total']} tests, "
                f"{totals['passed']} passed, {totals['failed']} failed, {totals['broken']} broken, "
                f"{totals['skipped']} skipped")
    lines.append(run_line + "  ")
    if comparison.baseline is not None:
        base = comparison.baseline.totals()
        lines.append(f"**Baseline:** {md_code(str(comparison.baseline.source))}: "
                     f"{base['total']} tests")
    else:
        lines.append("**Baseline:** none (every failure counts as new)")
    lines += ["", "| | Tests |", "|---|---:|"]
    for name, heading in SECTIONS.items():
        if name in NEEDS_BASELINE and comparison.baseline is None:
            continue
        value = str(counts[name])
        lines.append(f"| {heading} | {'**' + value + '**' if counts[name] else value} |")
    groups = group_by_label(current)
    if groups:
        lines += ["", f"### By {GROUP_LABEL}", "",
                  f"| {GROUP_LABEL.capitalize()} | Tests | Passed | Failed | Broken | Skipped |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {md_code(value, table=True)} | {c['total']} | {c['passed']} | "
                  f"{c['failed']} | {c['broken']} | {c['skipped']} |"
                  for value, c in groups.items()]
    for name, heading in SECTIONS.items():
        items = comparison.sections[name]
        if not items:
            continue
        lines += ["", f"### {heading} ({len(items)})", ""]
        if name == "slower":
            lines += ["| Test | Baseline | Current | Ratio |", "|---|---:|---:|---:|"]
            for item in items[:limit]:
                assert item.current and item.baseline
                ratio = ("\N{MULTIPLICATION SIGN}" + f"{item.ratio:.2f}"
                         if item.ratio is not None else "-")
                lines.append(f"| {md_code(item.test.display, table=True)} | "
                             f"{_seconds(item.baseline.duration_s)} | "
                             f"{_seconds(item.current.duration_s)} | {ratio} |")
        else:
            lines += [_line(name, item) for item in items[:limit]]
        if len(items) > limit:
            lines += ["", f"… and {len(items) - limit} more (see {html_name})"]
    expired = [e for e, _ in comparison.quarantine_notes if e.expired]
    if expired:
        lines += ["", "> **Expired quarantine entries** (no longer applied): "
                  + ", ".join(f"{md_code(e.test)} (until {e.until})" for e in expired[:limit])]
    lines += ["", f"_Duration regressions: slower by more than "
              f"{comparison.threshold * 100:g} % and {comparison.min_delta:g} s. "
              f"Full report: {html_name}._", ""]
    return "\n".join(lines)
