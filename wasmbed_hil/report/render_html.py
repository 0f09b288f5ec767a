"""report.html: the comparison as one self-contained page (inline CSS, no script, no web
fonts, works offline). Failure traces fold with <details>. Attachments are linked, not
copied: by their path relative to the page, so the page must stay next to the results
directory it was made from (as in CI artifacts: reports/report.html, reports/allure-results).
Everything that comes from the runs is HTML-escaped.
"""

from __future__ import annotations

import os
from datetime import datetime
from html import escape
from pathlib import Path
from urllib.parse import quote

from .categories import INFRASTRUCTURE
from .compare import GROUP_LABEL, NEEDS_BASELINE, SECTIONS, Comparison, Item, group_by_label
from .results import CaseResult, Run

# Labels every allure-pytest result carries: noise next to a test.
HIDDEN_LABELS = frozenset({"host", "thread", "framework", "language", "package", "suite",
                           "parentSuite", "subSuite", "testClass", "testMethod",
                           "failure_category", "resultFormat"})
TRACE_CHARS = 20_000
MESSAGE_CHARS = 4_000
MANY_ROWS = 60
TABLE_LABELS = ("backend", "fault", "tag")  # tables show these; the failure cards show every label

COLOURS = {
    "new_failures": "#cf222e", "infrastructure": "#8250df", "flaky": "#bc4c00",
    "slower": "#9a6700", "fixed": "#1a7f37", "still_failing": "#a40e26",
    "quarantined": "#57606a", "new_tests": "#0969da", "removed": "#6e7781",
    "skipped": "#6e7781",
}
HINTS = {
    "new_failures": "Product failures that were not failing in the baseline. These fail the "
                    "report.",
    "infrastructure": "The bench failed (emulator, port, toolchain), not the product. Never "
                      "counted as regressions.",
    "flaky": "Passed, but only after a failed attempt in this run.",
    "slower": "Passed in both runs, and now slower than the baseline by more than the "
              "threshold.",
    "fixed": "Failed in the baseline, pass now.",
    "still_failing": "Product failures already failing in the baseline.",
    "quarantined": "Known failures listed in the quarantine file: reported, not counted.",
    "new_tests": "In this run, not in the baseline.",
    "removed": "In the baseline, not in this run.",
    "skipped": "Skipped in this run (xfail included).",
}
SHORT = {"infrastructure": "Infra", "slower": "Slower", "new_tests": "New tests",
         "removed": "Removed"}
CARD_SECTIONS = frozenset({"new_failures", "infrastructure", "still_failing", "quarantined"})

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#eef1f4;--bg:#f6f8fa;--card:#fff;
--mono:ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,
"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:28px 28px 48px}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
code,pre,.mono{font-family:var(--mono);font-size:12.5px}
header.top{display:flex;justify-content:space-between;align-items:flex-start;gap:24px;
margin-bottom:18px}
h1{font-size:24px;font-weight:600;margin:0 0 4px}
.sub{color:var(--muted);margin:0}
.verdict{border-radius:8px;padding:10px 16px;font-weight:600;white-space:nowrap;
border:1px solid}
.verdict.fail{background:#ffebe9;border-color:#ff818266;color:#a40e26}
.verdict.pass{background:#dafbe1;border-color:#4ac26b66;color:#116329}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(96px,1fr));gap:8px;
margin:0 0 16px}
.card{display:block;background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:8px 12px;color:var(--fg);border-top:3px solid var(--c);min-width:0}
a.card:hover{text-decoration:none;box-shadow:0 1px 6px #1f232814}
.card .n{font-size:26px;font-weight:650;color:var(--c);line-height:1.2}
.card.zero{border-top-color:var(--line)}.card.zero .n{color:#8c959f}
.card .l{font-size:12px;color:var(--muted);white-space:nowrap;overflow:hidden;
text-overflow:ellipsis}
.card.na .n{color:#afb8c1;font-size:20px;line-height:1.56}
.runs{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:26px}
.run{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px}
.run h3{margin:0 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
.run .src{word-break:break-all;margin-bottom:6px}
.run .stats{display:flex;flex-wrap:wrap;gap:2px 14px}.run .stats>span{white-space:nowrap}
.run .env{color:var(--muted);font-size:12.5px;margin-top:4px}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:5px;
vertical-align:1px}
section{margin-top:26px}
h2{font-size:17px;font-weight:600;margin:0 0 2px;display:flex;align-items:center;gap:8px}
h2 .count{font-size:12px;font-weight:600;background:var(--c);color:#fff;border-radius:10px;
padding:1px 8px}
h2 .count.zero{background:var(--soft);color:var(--muted)}
section.empty{margin-top:14px;display:flex;align-items:baseline;gap:12px}
section.empty h2{font-size:15px;color:var(--muted)}section.empty h2::before{background:var(--line)}
section.empty .hint{margin:0}
h2::before{content:"";width:4px;height:18px;border-radius:2px;background:var(--c)}
.hint{color:var(--muted);margin:0 0 10px;font-size:13px}
.none{color:var(--muted);font-style:italic;margin:0}
.test{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--c);
border-radius:8px;padding:12px 16px;margin-bottom:10px}
.test .head{display:flex;align-items:baseline;gap:10px}
.test .name{font-weight:600;flex:1}
.test .dur{color:var(--muted);white-space:nowrap;font-size:13px}
.badge{display:inline-block;font-size:11.5px;font-weight:600;border-radius:10px;
padding:1px 8px;white-space:nowrap;background:var(--soft);color:var(--muted)}
.badge.failed{background:#ffebe9;color:#a40e26}.badge.broken{background:#fff1e5;
color:#953800}.badge.passed{background:#dafbe1;color:#116329}
.badge.skipped{background:var(--soft);color:var(--muted)}
.badge.infra{background:#fbefff;color:#6e40c9}
.meta{color:var(--muted);font-size:13px;margin-top:4px}
.labels{margin-top:6px;display:flex;flex-wrap:wrap;gap:4px}
.label{font-size:12px;border:1px solid var(--line);border-radius:4px;padding:0 6px;
background:#f6f8fa;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.label b{font-weight:600;color:var(--muted);margin-right:4px}
pre{margin:8px 0 0;padding:10px 12px;border-radius:6px;overflow:auto;white-space:pre-wrap;
word-break:break-word}
pre.msg{background:#fff5f5;border:1px solid #ffcecb;color:#82071e;max-height:14em}
.infrastructure pre.msg{background:#fbf7ff;border-color:#e4d3ff;color:#512a97}
.quarantined pre.msg,.still_failing pre.msg{background:#f6f8fa;border-color:var(--line);
color:var(--fg)}
details{margin-top:8px}
summary{cursor:pointer;color:var(--muted);font-size:13px;user-select:none}
details pre{background:#f6f8fa;border:1px solid var(--line);max-height:32em}
.reason{margin-top:8px;padding:6px 10px;border-radius:6px;background:#f6f8fa;
border:1px solid var(--line)}
.att{margin-top:8px;font-size:13px;display:flex;flex-wrap:wrap;gap:4px 12px}
.att .missing{color:var(--muted);text-decoration:line-through}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);
border-radius:8px;overflow:hidden}
th{text-align:left;font-size:12px;font-weight:600;color:var(--muted);background:#f6f8fa;
padding:7px 12px;border-bottom:1px solid var(--line)}
td{padding:7px 12px;border-bottom:1px solid var(--soft);vertical-align:top}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.name{overflow-wrap:anywhere}
.up{color:#9a6700;font-weight:600}
.notes{margin-top:10px;color:var(--muted);font-size:13px}
.notes ul{margin:4px 0 0;padding-left:18px}
footer{margin-top:36px;padding-top:12px;border-top:1px solid var(--line);color:var(--muted);
font-size:12.5px}
@media (max-width:760px){.runs{grid-template-columns:1fr}header.top{flex-direction:column}}
"""


def h(value: object) -> str:
    return escape(str(value), quote=True)


def name_html(text: str) -> str:
    """A test name, escaped, that may wrap after its path separators."""
    return h(text).replace("/", "/<wbr>").replace("::", "::<wbr>").replace("#", "#<wbr>")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _anchor(name: str) -> str:
    return name.replace("_", "-")


def _labels(test: CaseResult, only: tuple[str, ...] | None = None) -> str:
    chips = []
    for name, values in test.labels.items():
        if name in HIDDEN_LABELS or (only is not None and name not in only):
            continue
        for value in values:
            chips.append(f'<span class="label" title="{h(name)}: {h(value)}"><b>{h(name)}</b>'
                         f'{h(value)}</span>')
    return f'<div class="labels">{"".join(chips)}</div>' if chips else ""


def _attachments(test: CaseResult, out_dir: Path) -> str:
    if not test.attachments:
        return ""
    links = []
    for att in test.attachments:
        if att.path.exists():
            try:
                rel = Path(os.path.relpath(att.path, out_dir.absolute())).as_posix()
            except ValueError:  # another drive: an absolute file URL
                rel = att.path.as_uri()
            links.append(f'<a href="{h(quote(rel))}">{h(att.name)}</a>')
        else:
            links.append(f'<span class="missing" title="not found: {h(att.path)}">'
                         f'{h(att.name)}</span>')
    return f'<div class="att"><span>Attachments:</span>{"".join(links)}</div>'


def _badge(test: CaseResult) -> str:
    return f'<span class="badge {h(test.status)}">{h(test.status)}</span>'


def _category(test: CaseResult) -> str:
    if test.category != INFRASTRUCTURE:
        return ""
    if test.category_source == "label":
        return '<span class="badge infra">infrastructure</span>'
    return (f'<span class="badge infra" title="no failure_category label; '
            f'{h(test.category_source)}">infrastructure (suspected)</span>')


def _was(item: Item) -> str:
    old = item.baseline
    parts = []
    if old is not None:
        parts.append(f"baseline: {h(old.status)} in {_seconds(old.duration_s)}")
    if len(item.test.attempts) > 1:
        parts.append(f"{len(item.test.attempts)} attempts: "
                     + " → ".join(h(a.status) for a in item.test.attempts))
    if item.note:
        parts.append(h(item.note))
    return f'<div class="meta">{" · ".join(parts)}</div>' if parts else ""


def _card(name: str, item: Item, out_dir: Path) -> str:
    test = item.test
    parts = [f'<article class="test {name}">',
             f'<div class="head">{_badge(test)}{_category(test)}'
             f'<span class="name mono">{name_html(test.display)}</span>'
             f'<span class="dur">{_seconds(test.duration_s)}</span></div>',
             _labels(test), _was(item)]
    if item.quarantine is not None and name == "quarantined":
        until = f" (until {item.quarantine.until})" if item.quarantine.until else ""
        parts.append(f'<div class="reason"><b>Quarantined{until}:</b> '
                     f'{h(item.quarantine.reason)}</div>')
    if test.message:
        parts.append(f'<pre class="msg">{h(_clip(test.message.strip(), MESSAGE_CHARS))}</pre>')
    if test.trace:
        parts.append(f"<details><summary>Trace</summary><pre>"
                     f"{h(_clip(test.trace, TRACE_CHARS))}</pre></details>")
    parts.append(_attachments(test, out_dir))
    parts.append("</article>")
    return "".join(parts)


def _name_cell(test: CaseResult) -> str:
    return (f'<td><span class="name mono">{name_html(test.display)}</span>'
            f"{_labels(test, TABLE_LABELS)}</td>")


def _table(name: str, items: list[Item]) -> str:
    if name == "slower":
        head = ('<tr><th>Test</th><th class="num">Baseline</th><th class="num">Current</th>'
                '<th class="num">Delta</th><th class="num">Ratio</th></tr>')
        rows = []
        for item in items:
            assert item.current and item.baseline
            ratio = f"&times;{item.ratio:.2f}" if item.ratio is not None else "&ndash;"
            rows.append(f"<tr>{_name_cell(item.test)}"
                        f'<td class="num">{_seconds(item.baseline.duration_s)}</td>'
                        f'<td class="num">{_seconds(item.current.duration_s)}</td>'
                        f'<td class="num up">+{_seconds(item.delta_s)}</td>'
                        f'<td class="num up">{ratio}</td></tr>')
    elif name == "flaky":
        head = ("<tr><th>Test</th><th>Attempts</th><th>Failed attempt</th>"
                '<th class="num">Duration</th></tr>')
        rows = []
        for item in items:
            failed = next((a for a in item.test.attempts if a.status != "passed"), None)
            message = failed.message.strip().splitlines()[0] if failed and failed.message else ""
            rows.append(f"<tr>{_name_cell(item.test)}"
                        f"<td>{' → '.join(h(a.status) for a in item.test.attempts)}</td>"
                        f'<td class="mono">{h(message[:300])}</td>'
                        f'<td class="num">{_seconds(item.test.duration_s)}</td></tr>')
    else:
        head = ('<tr><th>Test</th><th>Status</th><th>Baseline</th>'
                '<th class="num">Duration</th></tr>')
        rows = []
        for item in items:
            test = item.test
            detail = ""
            if name == "skipped" and test.message:
                detail = f'<div class="meta">{h(test.message.strip()[:300])}</div>'
            elif name == "fixed" and item.baseline and item.baseline.message:
                first = item.baseline.message.strip().splitlines()[0][:300]
                detail = f'<div class="meta">was: {h(first)}</div>'
            baseline = (f"{h(item.baseline.status)}" if item.baseline else "&ndash;")
            current = _badge(item.current) if item.current else "&ndash;"
            rows.append(f"<tr><td><span class=\"name mono\">{name_html(test.display)}</span>"
                        f"{_labels(test, TABLE_LABELS)}{detail}</td><td>{current}</td>"
                        f'<td>{baseline}</td><td class="num">{_seconds(test.duration_s)}</td>'
                        "</tr>")
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    if len(items) > MANY_ROWS:
        return f"<details><summary>Show all {len(items)}</summary>{table}</details>"
    return table


def _groups(run: Run) -> str:
    """A table of status counts per fault (the fault matrix's label); "" without any."""
    groups = group_by_label(run)
    if not groups:
        return ""
    rows = "".join(
        f'<tr><td class="mono">{h(value)}</td><td class="num">{c["total"]}</td>'
        f'<td class="num">{c["passed"]}</td><td class="num">{c["failed"]}</td>'
        f'<td class="num">{c["broken"]}</td><td class="num">{c["skipped"]}</td></tr>'
        for value, c in groups.items())
    head = (f"<tr><th>{h(GROUP_LABEL.capitalize())}</th><th class=\"num\">Tests</th>"
            '<th class="num">Passed</th><th class="num">Failed</th><th class="num">Broken</th>'
            '<th class="num">Skipped</th></tr>')
    return (f'<section id="by-{GROUP_LABEL}"><h2>By {h(GROUP_LABEL)}</h2>'
            f"<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>")


def _quarantine_notes(comparison: Comparison) -> str:
    if not comparison.quarantine_notes:
        return ""
    notes = "".join(f'<li><span class="mono">{name_html(e.test)}</span>: {h(why)}</li>'
                    for e, why in comparison.quarantine_notes)
    return f'<div class="notes">Quarantine file notes:<ul>{notes}</ul></div>'


def _section(name: str, comparison: Comparison, out_dir: Path) -> str:
    items = comparison.sections[name]
    colour = COLOURS[name]
    count_class = "count" if items else "count zero"
    empty = not items and not (name == "quarantined" and comparison.quarantine_notes)
    parts = [f'<section id="{_anchor(name)}" class="{"empty" if empty else ""}" '
             f'style="--c:{colour}">',
             f'<h2>{h(SECTIONS[name])}<span class="{count_class}">{len(items)}</span></h2>',
             f'<p class="hint">{h(HINTS[name])}</p>']
    if name in NEEDS_BASELINE and comparison.baseline is None:
        parts[-1] = '<p class="hint">Needs a baseline (--baseline).</p>'
    elif empty:
        parts[-1] = '<p class="hint">None.</p>'
    elif not items:
        parts.append('<p class="none">None.</p>')
    elif name in CARD_SECTIONS:
        parts += [_card(name, item, out_dir) for item in items]
    else:
        parts.append(_table(name, items))
    if name == "quarantined":
        parts.append(_quarantine_notes(comparison))
    parts.append("</section>")
    return "".join(parts)


def _run_box(title: str, run: Run | None) -> str:
    if run is None:
        return (f'<div class="run"><h3>{h(title)}</h3><div class="src">none: every failure of '
                f"the current run counts as new</div></div>")
    totals = run.totals()
    stats = "".join(
        f'<span><span class="dot" style="background:{colour}"></span>{totals[status]} '
        f"{status}</span>"
        for status, colour in (("passed", "#1a7f37"), ("failed", "#cf222e"),
                               ("broken", "#bc4c00"), ("skipped", "#8c959f")))
    # The bench's keys first (hil.*: the backend, its labels and the tools it recorded).
    first = ["hil.backend", "hil.board", "hil.firmware"]
    env_keys = [*first, *(k for k in run.environment if k.startswith("hil.") and k not in first),
                "commit", "wasmbed-hil", "python"]
    env = " · ".join(f"{h(k.removeprefix('hil.'))} {h(run.environment[k])}"
                     for k in env_keys if run.environment.get(k))
    return (f'<div class="run"><h3>{h(title)} · {h(run.kind)}</h3>'
            f'<div class="src mono">{h(run.source)}</div>'
            f'<div class="stats"><span><b>{totals["total"]} tests</b> in '
            f"{_seconds(run.duration_s())}</span>{stats}</div>"
            + (f'<div class="env">{env}</div>' if env else "") + "</div>")


def render_html(comparison: Comparison, out_dir: Path | str, title: str = "Regression report",
                generated: datetime | None = None, *, allure_report: Path | None = None
                ) -> str:
    """The page for `comparison`, to be written into `out_dir` (attachment links are
    relative to it); with `allure_report`, a link to that full report (Allure 3's)."""
    out_dir = Path(out_dir)
    generated = generated or datetime.now().astimezone()
    counts = comparison.counts
    new = counts["new_failures"]
    if new:
        verdict = (f'<div class="verdict fail">✗ {new} new product failure'
                   f'{"s" if new != 1 else ""}</div>')
    else:
        verdict = '<div class="verdict pass">✓ No new product failures</div>'
    baseline = comparison.baseline
    quarantine = comparison.quarantine
    sub = " · ".join([
        f"Generated {generated:%Y-%m-%d %H:%M %Z}",
        f"slower: more than +{comparison.threshold * 100:g} % and {comparison.min_delta:g} s",
        (f"quarantine: {len(quarantine.active)} active, {len(quarantine.expired)} expired"
         if quarantine else "no quarantine file"),
    ])
    cards = []
    for name, heading in SECTIONS.items():
        if name in NEEDS_BASELINE and baseline is None:
            cards.append(f'<div class="card na" style="--c:{COLOURS[name]}" title="needs a '
                         f'baseline"><div class="n">&ndash;</div><div class="l">'
                         f'{h(SHORT.get(name, heading))}</div></div>')
            continue
        zero = " zero" if not counts[name] else ""
        cards.append(f'<a class="card{zero}" style="--c:{COLOURS[name]}" '
                     f'href="#{_anchor(name)}"><div class="n">{counts[name]}</div>'
                     f'<div class="l">{h(SHORT.get(name, heading))}</div></a>')
    q_text = (f"quarantine {h(quarantine.path)} ({len(quarantine.active)} active, "
              f"{len(quarantine.expired)} expired)" if quarantine and quarantine.path
              else "no quarantine file")
    if allure_report is not None:
        link = Path(os.path.relpath(allure_report.absolute(), out_dir.absolute())).as_posix()
        sub += (f' · <a href="{h(link)}">every test, attempt and attachment: the Allure '
                "report</a>")
    body = [
        '<header class="top"><div>', f"<h1>{h(title)}</h1>", f'<p class="sub">{sub}</p>',
        f"</div>{verdict}</header>",
        f'<nav class="cards">{"".join(cards)}</nav>',
        '<div class="runs">', _run_box("Current run", comparison.current),
        _run_box("Baseline", baseline), "</div>",
        _groups(comparison.current),
        *(_section(name, comparison, out_dir) for name in SECTIONS),
        f"<footer>wasmbed-hil report · duration regression: slower than the baseline by more "
        f"than {comparison.threshold * 100:g} % and {comparison.min_delta:g} s · {q_text} · "
        f"exit code {comparison.exit_code}</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{h(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
