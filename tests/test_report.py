"""`wasmbed-hil report`: reading runs, classifying against a baseline, quarantine, outputs."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wasmbed_hil.cli import report
from wasmbed_hil.cli.common import CliError, fail
from wasmbed_hil.report import (
    CaseResult,
    RunReadError,
    compare,
    load_quarantine,
    load_run,
    write_report,
)
from wasmbed_hil.report.quarantine import QuarantineError, canonical_test, parse_quarantine
from wasmbed_hil.report.render_html import h
from wasmbed_hil.report.render_markdown import md_code, md_text

MODULE = "suites.demo.test_demo"
NODE = "suites/demo/test_demo.py"
ODD = "test_new_failure[<i>|`x`]"  # a parameter id with HTML and Markdown in it
T0 = 1_790_000_000_000


def cli(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> int:
    """Run `wasmbed-hil report ARGV` through a parser built with report.add_parser, as
    wasmbed_hil.cli.main does (CliError -> its exit code); without Allure 3 unless ARGV
    asks for it (test_allure3_renders_the_run does)."""
    parser = argparse.ArgumentParser(prog="wasmbed-hil")
    report.add_parser(parser.add_subparsers(dest="command"))
    if not any(a.startswith("--allure") for a in argv):
        argv = [*argv, "--allure=off"]
    args = parser.parse_args(["report", *argv])
    try:
        return int(args.run(args))
    except CliError as exc:
        return fail(str(exc), exc.code)


def result(directory: Path, name: str, status: str = "passed", duration: float = 0.2, *,
           start: int = T0, message: str | None = None, labels: dict[str, str] | None = None,
           attachments: list[tuple[str, str]] | None = None, cls: str | None = None) -> str:
    """Write one allure-pytest style *-result.json; returns the test's key."""
    directory.mkdir(parents=True, exist_ok=True)
    func = name.split("[", 1)[0]
    full_name = f"{MODULE}{'.' + cls if cls else ''}#{func}"
    data: dict[str, Any] = {
        "name": name, "status": status, "start": start,
        "stop": start + int(duration * 1000), "uuid": str(uuid.uuid4()),
        "historyId": hashlib.md5((full_name + name).encode()).hexdigest(),
        "testCaseId": hashlib.md5(full_name.encode()).hexdigest(), "fullName": full_name,
        "labels": [{"name": "suite", "value": "test_demo"}, {"name": "host", "value": "ci"},
                   {"name": "backend", "value": "virtual"},
                   *({"name": k, "value": v} for k, v in (labels or {}).items())],
        "titlePath": [*NODE.split("/"), *([cls] if cls else [])],
    }
    if "[" in name:
        data["parameters"] = [{"name": "p", "value": repr(name.split("[", 1)[1][:-1])}]
    if message is not None:
        data["statusDetails"] = {"message": message,
                                 "trace": f"def {func}():\n>   raise\nE   {message}\n"}
    if attachments:
        data["attachments"] = []
        for att_name, text in attachments:
            source = f"{uuid.uuid4()}-attachment.txt"
            (directory / source).write_text(text)
            data["attachments"].append({"name": att_name, "source": source,
                                        "type": "text/plain"})
    (directory / f"{data['uuid']}-result.json").write_text(json.dumps(data))
    return f"{full_name}{name[len(func):]}"


def key(name: str) -> str:
    func = name.split("[", 1)[0]
    return f"{MODULE}#{func}{name[len(func):]}"


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    """A baseline and a current run with one test of each kind, and a quarantine file."""
    base, cur = tmp_path / "base", tmp_path / "cur"
    for name in (ODD, "test_flaky", "test_infra", "test_quarantined", "test_skipped",
                 "test_removed", "test_suspect"):
        result(base, name)
    result(base, "test_fixed", "failed", message="AssertionError: was broken")
    result(base, "test_still", "failed", message="AssertionError: still broken")
    result(base, "test_slow", duration=1.0)
    result(base, "test_steady", duration=0.2)

    result(cur, ODD, "failed", message="AssertionError: <script>alert(1)</script> | `tick`",
           attachments=[("console device-0", "uart log\n")])
    result(cur, "test_fixed")
    result(cur, "test_flaky", "failed", start=T0, message="AssertionError: first try")
    result(cur, "test_flaky", "passed", start=T0 + 5_000)
    result(cur, "test_slow", duration=2.0)
    result(cur, "test_steady", duration=0.6)  # x3 but only 0.4 s longer: not a regression
    result(cur, "test_still", "failed", message="AssertionError: still broken")
    result(cur, "test_infra", "broken", message="RuntimeError: the bench gave up",
           labels={"failure_category": "infrastructure"})
    result(cur, "test_suspect", "broken", message="MachineError: emulator exited with 1")
    result(cur, "test_quarantined", "failed", message="AssertionError: known problem")
    result(cur, "test_skipped", "skipped", message="Skipped: only on qemu")
    result(cur, "test_new")
    quarantine = tmp_path / "quarantine.yaml"
    expired = (date.today() - timedelta(days=1)).isoformat()
    quarantine.write_text(
        f"- test: {NODE}::test_quarantined\n  reason: known issue 12\n"
        f"  until: {(date.today() + timedelta(days=30)).isoformat()}\n"
        f"- test: {MODULE}#test_new_failure\n  reason: lifted yesterday\n  until: {expired}\n")
    return {"base": base, "cur": cur, "quarantine": quarantine, "out": tmp_path / "out"}


SECTION_KEYS = {
    "new_failures": {key(ODD)},
    "infrastructure": {key("test_infra"), key("test_suspect")},
    "flaky": {key("test_flaky")},
    "slower": {key("test_slow")},
    "fixed": {key("test_fixed")},
    "still_failing": {key("test_still")},
    "quarantined": {key("test_quarantined")},
    "new_tests": {key("test_new")},
    "removed": {key("test_removed")},
    "skipped": {key("test_skipped")},
}


def test_every_test_is_classified(runs: dict[str, Path]) -> None:
    comparison = compare(load_run(runs["cur"]), load_run(runs["base"]),
                         load_quarantine(runs["quarantine"]))
    got = {name: {i.key for i in items} for name, items in comparison.sections.items()}
    assert got == SECTION_KEYS
    assert comparison.exit_code == 1
    new = comparison.sections["new_failures"][0]
    assert new.test.nodeid == f"{NODE}::{ODD}"
    assert "quarantine expired" in new.note
    infra = {i.key: i.test for i in comparison.sections["infrastructure"]}
    assert infra[key("test_infra")].category_source == "label"
    assert infra[key("test_suspect")].category_source == "marker: MachineError"
    flaky = comparison.sections["flaky"][0].test
    assert [a.status for a in flaky.attempts] == ["failed", "passed"]
    assert comparison.sections["slower"][0].ratio == pytest.approx(2.0)
    assert [(e.test, "expired" in why) for e, why in comparison.quarantine_notes] == [
        (f"{MODULE}#test_new_failure", True)]


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start:page.index("</section>", start)]


def test_cli_writes_the_reports(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                ) -> None:
    code = cli(["--current", str(runs["cur"]), "--baseline", str(runs["base"]), "--out",
                str(runs["out"]), "--quarantine", str(runs["quarantine"]), "--title",
                "Nightly <qemu>"])
    assert code == 1
    out = capsys.readouterr().out
    assert "1 new product failure" in out and "expired" in out
    page = (runs["out"] / "report.html").read_text()
    assert "<title>Nightly &lt;qemu&gt;</title>" in page
    for name, keys in SECTION_KEYS.items():
        section = _section(page, name.replace("_", "-"))
        for test_key in keys:
            func = test_key.split("#", 1)[1].split("[", 1)[0]
            assert func in section, (name, func)
        others = set().union(*SECTION_KEYS.values()) - keys
        for test_key in others:
            func = test_key.split("#", 1)[1].split("[", 1)[0]
            assert f"::<wbr>{func}<" not in section and f"::<wbr>{func}[" not in section
    new = _section(page, "new-failures")
    assert h(ODD) in new and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in new and "<script" not in page
    assert "<details><summary>Trace</summary>" in new
    attachment = next(runs["cur"].glob("*-attachment.txt"))
    assert f'href="../cur/{attachment.name}">console device-0</a>' in new
    assert "backend</b>virtual" in new
    assert "infrastructure (suspected)" in _section(page, "infrastructure")
    assert "known issue 12" in _section(page, "quarantined")
    assert "&times;2.00" in _section(page, "slower")
    assert not re.search(r"https?://|<script|<link|@import", page)  # self-contained

    md = (runs["out"] / "summary.md").read_text()
    assert md.startswith("## ❌ Nightly \\<qemu\\>: 1 new product failure")
    assert "| New failures | **1** |" in md and "| Still failing | **1** |" in md
    assert "### Duration regressions (1)" in md
    assert "AssertionError: \\<script\\>alert(1)\\</script\\> \\| \\`tick\\`" in md
    assert f"- ``{NODE}::{ODD}``" in md  # the name has a backtick: a longer fence
    assert "test_steady" not in md

    summary = json.loads((runs["out"] / "summary.json").read_text())
    assert summary["comparison"]["exit_code"] == 1
    assert summary["comparison"]["counts"]["flaky"] == 1
    tests = {t["key"]: t for t in summary["tests"]}
    assert tests[key("test_flaky")]["flaky"] is True
    assert len(tests[key("test_flaky")]["attempts"]) == 2
    assert tests[key("test_infra")]["category"] == "infrastructure"
    assert tests[key(ODD)]["attachments"][0]["path"] == f"../cur/{attachment.name}"


def test_summary_json_is_the_next_baseline(runs: dict[str, Path]) -> None:
    assert cli(["--current", str(runs["cur"]), "--out", str(runs["out"]),
                "--quarantine", str(runs["quarantine"])]) == 1
    stored = load_run(runs["out"] / "summary.json")
    original = load_run(runs["cur"])
    assert stored.tests.keys() == original.tests.keys()
    for k, test in original.tests.items():
        again = stored.tests[k]
        assert (again.status, again.duration_s, again.labels, again.category, again.nodeid,
                [a.status for a in again.attempts], again.message,
                [a.path for a in again.attachments]) == (
            test.status, test.duration_s, test.labels, test.category, test.nodeid,
            [a.status for a in test.attempts], test.message,
            [a.path for a in test.attachments])
    # the run against itself: nothing new (its product failures are "still failing")
    second = runs["out"].parent / "second"
    assert cli(["--current", str(runs["cur"]), "--baseline", str(runs["out"] / "summary.json"),
                "--out", str(second), "--quarantine", str(runs["quarantine"])]) == 0
    counts = json.loads((second / "summary.json").read_text())["comparison"]["counts"]
    assert counts["new_failures"] == 0 and counts["still_failing"] == 2
    assert counts["new_tests"] == counts["removed"] == counts["slower"] == 0
    # a report directory works as a baseline too (its summary.json)
    assert load_run(runs["out"]).tests.keys() == original.tests.keys()


def test_without_baseline_every_product_failure_is_new(runs: dict[str, Path]) -> None:
    comparison = compare(load_run(runs["cur"]), None, load_quarantine(runs["quarantine"]))
    new = {i.key for i in comparison.sections["new_failures"]}
    assert new == {key(ODD), key("test_still")}
    for name in ("fixed", "still_failing", "slower", "new_tests", "removed"):
        assert comparison.sections[name] == []
    assert comparison.exit_code == 1
    assert cli(["--current", str(runs["cur"]), "--out", str(runs["out"])]) == 1
    page = (runs["out"] / "report.html").read_text()
    assert "Needs a baseline" in _section(page, "fixed")


def test_passing_run_exits_0_and_defaults_apply(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "reports" / "allure-results"
    result(results, "test_a")
    result(results, "test_b", "broken", message="OSError: Address already in use")
    result(results, "test_c", "failed", message="AssertionError: known")
    (tmp_path / "quarantine.yaml").write_text(
        f"- test: {NODE}::test_c\n  reason: picked up from the current directory\n")
    assert cli([]) == 0
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {
        "allure-results", "report.html", "summary.md", "summary.json"}
    md = (tmp_path / "reports" / "summary.md").read_text()
    assert md.startswith("## ✅ Regression report: no new product failures")
    assert "### Quarantined (1)" in md and "picked up from the current directory" in md


def test_junit_xml_input(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="7">
 <properties><property name="hil.backend" value="qemu"/></properties>
 <testcase classname="{MODULE}" name="test_ok" time="0.25"/>
 <testcase classname="{MODULE}" name="test_assert" time="0.1">
  <failure message="AssertionError: 1 != 2">def test_assert(): ...</failure></testcase>
 <testcase classname="{MODULE}" name="test_crash" time="0.1">
  <failure message="wasmbed_hil.bench.backends.BackendUnavailable: qemu gone">trace</failure>
 </testcase>
 <testcase classname="{MODULE}" name="test_setup" time="0.1">
  <properties><property name="failure_category" value="product"/></properties>
  <error message="failed on setup with &quot;MachineError: x&quot;">trace</error></testcase>
 <testcase classname="{MODULE}" name="test_skip" time="0"><skipped message="no qemu"/>
 </testcase>
 <testcase classname="{MODULE}.TestK" name="test_p[a|b]" time="0.1">
  <failure message="AssertionError: retry">x</failure></testcase>
 <testcase classname="{MODULE}.TestK" name="test_p[a|b]" time="0.3"/>
 <testcase classname="{MODULE}" name="test_rerun" time="0.2">
  <flakyFailure message="AssertionError: once" time="0.1"/></testcase>
</testsuite></testsuites>
""")
    run = load_run(junit)
    assert run.kind == "junit" and run.environment == {"hil.backend": "qemu"}
    t = run.tests
    assert t[f"{MODULE}#test_ok"].status == "passed"
    assert t[f"{MODULE}#test_ok"].duration_s == 0.25
    assert t[f"{MODULE}#test_assert"].status == "failed"
    assert t[f"{MODULE}#test_assert"].category == "product"
    assert t[f"{MODULE}#test_crash"].status == "broken"
    assert t[f"{MODULE}#test_crash"].category == "infrastructure"  # marker
    assert t[f"{MODULE}#test_setup"].category == "product"  # the property decides
    assert t[f"{MODULE}#test_skip"].status == "skipped"
    assert t[f"{MODULE}.TestK#test_p[a|b]"].flaky
    assert t[f"{MODULE}#test_rerun"].flaky
    # JUnit and Allure name a test the same way
    allure = tmp_path / "allure"
    result(allure, "test_ok")
    result(allure, "test_p[a|b]", cls="TestK")
    keys = set(load_run(allure).tests)
    assert keys <= set(run.tests)
    comparison = compare(load_run(allure), run)
    assert comparison.sections["new_tests"] == []
    assert cli(["--current", str(junit), "--out", str(tmp_path / "out")]) == 1
    assert "test_assert" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize(("text", "error"), [
    ("- test: a.py::t\n", "'reason' is missing or empty"),
    ("- test: a.py::t\n  reason: '  '\n", "'reason' is missing or empty"),
    ("- test: a.py::t\n  reason: r\n  until: 2026-02-30\n", "'until' must be an ISO date"),
    ("- test: a.py::t\n  reason: r\n  until: next week\n", "'until' must be an ISO date"),
    ("- test: a.py::t\n  reason: r\n  owner: me\n", "unknown key(s) 'owner'"),
    ("- reason: r\n", "'test' is missing"),
    ("test: a.py::t\n", "expected a list"),
    ("- test: a.py::t\n  reason: r\n- test: a#t\n  reason: s\n", "already quarantined"),
    ("- [unclosed\n", "not valid YAML"),
    (b"- test: a.py::t\n  reason: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 29)"),
    # nested aliases: 9 ** 9 "lol"s as the reason's text, which hung the report
    ("- test: a.py::t0\n  reason: &r0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
     + "".join(f"- test: a.py::t{i}\n  reason: &r{i} [{', '.join([f'*r{i - 1}'] * 9)}]\n"
               for i in range(1, 10)),
     "an alias (*name): anchors and aliases are not allowed in a quarantine file"),
])
def test_quarantine_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           text: str | bytes, error: str) -> None:
    path = tmp_path / "q.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(QuarantineError, match=re.escape(error)):
        load_quarantine(path)
    result(tmp_path / "run", "test_a")
    assert cli(["--current", str(tmp_path / "run"), "--quarantine", str(path),
                "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "invalid quarantine file" in err and str(path) in err and error in err
    assert not (tmp_path / "out").exists()


def test_quarantine_dates_and_matching() -> None:
    today = date(2026, 6, 1)
    q = parse_quarantine("- {test: a/b.py::K::t, reason: r, until: 2026-06-01}\n"
                         "- {test: 'a.b#u', reason: r, until: '2026-05-31'}\n"
                         "- {test: a.b#v, reason: r}\n", today=today)
    assert [e.expired for e in q.entries] == [False, True, False]
    assert q.entries[0].until == date(2026, 6, 1)
    assert canonical_test("a/b.py::K::t[1]") == "a.b.K#t[1]"
    # a parameter id holding "::" (an IPv6 address) stays whole, as in pytest's node ids
    assert canonical_test("a/b.py::K::t[::1]") == "a.b.K#t[::1]"
    assert canonical_test("a/b.py::t[x::y]") == "a.b#t[x::y]"
    junit_test = CaseResult(key="a.b#t[::1]@virtual", name="t[::1]", status="failed",
                            duration_s=0.1)  # from JUnit: no node id to fall back on
    q = parse_quarantine("- {test: 'a/b.py::t[::1]', reason: r}\n", today=today)
    assert q.match(junit_test) is q.entries[0]
    assert parse_quarantine("", today=today).entries == []


@pytest.mark.parametrize(("entry", "covered"), [
    ("a/b.py::t[user@host]", True),  # an `@` in the parameter id, the test on any backend
    ("a/b.py::t@qemu", True),  # every parametrization on one backend
    ("a/b.py::t[user@host]@qemu", True),
    ("a/b.py::t", True),
    ("a/b.py::t@virtual", False),
    ("a/b.py::t[user]", False),
])
def test_quarantine_entries_cover_parameters_and_backends(entry: str, covered: bool) -> None:
    test = CaseResult(key="a.b#t[user@host]@qemu", name="t[user@host]", status="failed",
                      duration_s=0.1)
    q = parse_quarantine(f"- {{test: '{entry}', reason: r}}\n")
    assert (q.match(test) is not None) == covered


def test_unreadable_inputs_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    result(good, "test_a")
    out = str(tmp_path / "out")
    missing = tmp_path / "missing"
    assert cli(["--current", str(missing), "--out", out]) == 3
    assert f"cannot read the current run: {missing}" in capsys.readouterr().err
    assert cli(["--current", str(good), "--baseline", str(missing), "--out", out]) == 3
    assert f"cannot read the baseline: {missing}" in capsys.readouterr().err
    bad = tmp_path / "bad"
    result(bad, "test_a")
    (bad / "0000-result.json").write_text('["a list"]')  # readable, of another shape
    assert cli(["--current", str(bad), "--out", out]) == 3
    assert str(bad / "0000-result.json") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["--current", str(tmp_path / "empty"), "--out", out]) == 3
    assert "no Allure results" in capsys.readouterr().err
    for name, text in (("x.xml", "<testsuites><testcase"), ("x.json", '{"tests": []}'),
                       ("x.txt", "hello")):
        (tmp_path / name).write_text(text)
        assert cli(["--current", str(tmp_path / name), "--out", out]) == 3
        assert str(tmp_path / name) in capsys.readouterr().err
    assert cli(["--current", str(good), "--quarantine", str(missing), "--out", out]) == 3
    assert cli(["--current", str(good), "--threshold", "-1", "--out", out]) == 2
    for option in ("--threshold", "--min-delta"):  # NaN: never slower, silently
        assert cli(["--current", str(good), option, "nan", "--out", out]) == 2
        assert "must be >= 0" in capsys.readouterr().err
    assert not Path(out).exists()


def test_a_result_cut_short_is_a_broken_test_and_the_rest_of_the_run_is_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A *-result.json cut short (pytest killed by a CI timeout while allure-pytest wrote
    it) used to refuse the whole run (exit 3, no report) exactly when a report is needed.
    Now the other results are reported, and the cut one is a broken test named after its
    file: its outcome is unknown, so it fails the report (exit 1)."""
    run = tmp_path / "run"
    good, bad = result(run, "test_a"), result(run, "test_b", status="failed")
    cut = run / "ffff-result.json"
    cut.write_text('{"name": "test_c", "status": "pas')
    (run / "eeee-result.json").write_bytes(b"\xff\xfe")  # not even UTF-8
    out = tmp_path / "out"
    assert cli(["--current", str(run), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    keys = {t["key"]: t for t in summary["tests"]}
    assert "unreadable result ffff-result.json" in keys
    assert "unreadable result eeee-result.json" in keys
    unreadable = keys["unreadable result ffff-result.json"]
    assert unreadable["status"] == "broken" and unreadable["category"] == "product"
    assert str(cut) in unreadable["message"]
    assert keys[good]["status"] == "passed" and keys[bad]["status"] == "failed"
    assert "unreadable result ffff-result.json" in (out / "report.html").read_text()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)
ALLURE_FIELDS = ("name", "fullName", "status", "statusDetails", "start", "stop", "labels",
                 "parameters", "attachments", "steps", "titlePath", "historyId")
ALLURE_RESULTS = st.dictionaries(
    st.sampled_from(ALLURE_FIELDS),
    JSON_VALUES | st.lists(st.dictionaries(
        st.sampled_from(("name", "value", "source", "type", "message", *ALLURE_FIELDS)),
        JSON_VALUES, max_size=4), max_size=3))


@pytest.mark.parametrize(("fields", "error"), [
    ({"statusDetails": "boom"}, "'statusDetails' is a str, not an object"),
    ({"labels": 5}, "'labels' is a int, not a list"),
    ({"parameters": {"backend": "qemu"}}, "'parameters' is a dict, not a list"),
    ({"steps": [{"attachments": "log.txt"}]}, "a step's 'attachments' is a str, not a list"),
])
def test_a_malformed_allure_result_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, Any],
        error: str) -> None:
    run = tmp_path / "run"
    result(run, "test_a")
    bad = run / "bad-result.json"
    bad.write_text(json.dumps({"name": "test_b", "fullName": f"{MODULE}#test_b",
                               "status": "failed", **fields}))
    with pytest.raises(RunReadError, match=re.escape(f"{bad}: not an Allure result ({error})")):
        load_run(run)
    assert cli(["--current", str(run), "--out", str(tmp_path / "out")]) == 3
    assert error in capsys.readouterr().err


@settings(max_examples=150, deadline=None)
@given(data=ALLURE_RESULTS)
def test_any_json_object_as_an_allure_result_is_read_or_refused(data: dict[str, Any]) -> None:
    """Whatever a *-result.json holds, the report reads it (and writes its outputs) or
    refuses it with RunReadError: never another exception."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (run / "x-result.json").write_text(json.dumps(data))
        try:
            loaded = load_run(run)
        except RunReadError as exc:
            assert "x-result.json" in str(exc)
            return
        write_report(compare(loaded, loaded), Path(tmp) / "out")


SUMMARY_TEST_FIELDS = ("key", "name", "nodeid", "fullName", "historyId", "status",
                       "duration_s", "attempts", "labels", "category", "category_source",
                       "message", "trace", "attachments")
SUMMARY_TESTS = st.lists(st.fixed_dictionaries(
    {"key": st.text(max_size=4), "status": st.sampled_from(("passed", "failed", "broken"))},
    optional={name: JSON_VALUES | st.lists(st.dictionaries(
        st.sampled_from(("name", "path", "type", "status", "duration_s", "start_ms",
                         "message")), JSON_VALUES, max_size=4), max_size=2)
        for name in SUMMARY_TEST_FIELDS if name not in ("key", "status")}), max_size=3)


@pytest.mark.parametrize(("fields", "tests", "error"), [
    ({"environment": ["commit=abc"]}, [], "AttributeError"),
    ({}, [{"key": "m#t", "status": "failed", "nodeid": 5}], "nodeid of 'm#t' is not a string"),
    ({}, [{"key": "m#t", "status": "failed"}, {"key": "m#t", "status": "passed"}],
     "test 'm#t' is listed twice"),
])
def test_a_damaged_summary_json_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, Any],
        tests: list[dict[str, Any]], error: str) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"format": "wasmbed-hil/report-run", "version": 1,
                                "tests": tests, **fields}))
    with pytest.raises(RunReadError, match=re.escape(error)):
        load_run(path)
    run = tmp_path / "run"
    result(run, "test_a")
    assert cli(["--current", str(run), "--baseline", str(path),
                "--out", str(tmp_path / "out")]) == 3
    assert f"cannot read the baseline: {path}" in capsys.readouterr().err


def test_lone_surrogates_are_written_and_printed_as_question_marks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON's "\\ud800" in a result (a file name decoded with surrogateescape in a message)
    and a path argument in bytes that are not UTF-8 cannot be UTF-8: writing report.html
    and printing the summary raised UnicodeEncodeError."""
    run = tmp_path / "run\udcff"  # the directory b"run\xff"
    result(run, "test_a", "failed", message="FileNotFoundError: b\udcffd.bin")
    out = tmp_path / "out"
    assert cli(["--current", str(run), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FileNotFoundError: b?d.bin" in printed and "run?" in printed
    assert "FileNotFoundError: b?d.bin" in (out / "summary.md").read_text(encoding="utf-8")
    assert "b?d.bin" in (out / "report.html").read_text(encoding="utf-8")
    assert load_run(out).tests[key("test_a")].message == "FileNotFoundError: b\udcffd.bin"
    assert cli(["--current", str(tmp_path / "missing\udcff"), "--out", str(out)]) == 3
    assert "cannot read the current run: " in capsys.readouterr().err


def test_a_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    """A JUnit file or a baseline saved by a Windows tool starts with a UTF-8 BOM: it was
    refused, as 'neither an Allure results directory, a JUnit XML file nor a summary.json'
    and as 'Unexpected UTF-8 BOM'."""
    junit = tmp_path / "junit.xml"
    junit.write_bytes(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n<testsuites>'
                      b'<testsuite name="s"><testcase classname="m" name="t"/></testsuite>'
                      b'</testsuites>')
    assert list(load_run(junit).tests) == ["m#t"]
    summary = tmp_path / "summary.json"
    summary.write_bytes(b"\xef\xbb\xbf" + json.dumps({
        "format": "wasmbed-hil/report-run", "version": 1,
        "tests": [{"key": "m#t", "status": "passed"}]}).encode())
    assert list(load_run(summary).tests) == ["m#t"]


@settings(max_examples=150, deadline=None)
@given(tests=SUMMARY_TESTS | JSON_VALUES, environment=JSON_VALUES)
def test_any_summary_json_is_read_or_refused(tests: Any, environment: Any) -> None:
    """A summary.json (a baseline kept between runs, so possibly edited or damaged) is read
    and compared or refused with RunReadError naming it: never another exception."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "summary.json"
        path.write_text(json.dumps({"format": "wasmbed-hil/report-run", "version": 1,
                                    "tests": tests, "environment": environment}))
        try:
            loaded = load_run(path)
        except RunReadError as exc:
            assert str(path) in str(exc)
            return
        assert len(loaded.tests) == len(tests)  # none dropped
        write_report(compare(loaded, loaded), Path(tmp) / "out")


def test_markdown_lists_are_cut(tmp_path: Path) -> None:
    for i in range(20):
        result(tmp_path / "run", f"test_f{i:02d}", "failed", message=f"AssertionError: {i}")
    out = tmp_path / "out"
    assert cli(["--current", str(tmp_path / "run"), "--out", str(out)]) == 1
    md = (out / "summary.md").read_text()
    assert "### New failures (20)" in md
    assert "test_f14" in md and "test_f15" not in md
    assert "… and 5 more (see report.html)" in md
    assert md.count("\n- ") == 15


@pytest.mark.parametrize("text", [
    "plain", "a|b", "`", "``x``", "x`", "<script>alert(1)</script>", "[link](http://x)",
    "*bold* _em_ ~~s~~ # h", "multi\nline\r\n| row |", "\\|`\\", "&amp; &lt;", "'\"",
])
def test_escaping_leaves_nothing_active(text: str) -> None:
    assert "<" not in h(text) and '"' not in h(text)
    escaped = md_text(text)
    assert "\n" not in escaped
    assert not re.search(r"(?<!\\)(?:\\\\)*[|`<>\[\]*_]", escaped)
    code = md_code(text, table=True)
    fence = re.match(r"`+", code).group()  # type: ignore[union-attr]
    inner = code[len(fence):-len(fence)]
    assert fence not in inner and not inner.replace("\\|", "").count("|")


TINY = '''
import allure
import pytest


def test_passes():
    allure.attach("some output", name="log", attachment_type=allure.attachment_type.TEXT)


def test_fails():
    assert 1 == 2, "boom"


def test_crashes():
    raise RuntimeError("emulator did not start")


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    pass


class TestGroup:
    def test_method(self):
        pass
'''


def test_real_allure_pytest_output(tmp_path: Path) -> None:
    """Keeps the reader in step with what allure-pytest really writes."""
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tiny/test_tiny.py", "-q", "-p", "no:cacheprovider",
         "-p", "no:xdist", "--alluredir", "ar", "--junitxml", "junit.xml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = load_run(tmp_path / "ar")
    prefix = "tiny.test_tiny"
    assert {k: t.status for k, t in run.tests.items()} == {
        f"{prefix}#test_passes": "passed", f"{prefix}#test_fails": "failed",
        f"{prefix}#test_crashes": "broken", f"{prefix}#test_skipped": "skipped",
        f"{prefix}#test_param[1]": "passed", f"{prefix}#test_param[2]": "passed",
        f"{prefix}.TestGroup#test_method": "passed"}
    tests = run.tests
    assert tests[f"{prefix}#test_param[2]"].nodeid == "tiny/test_tiny.py::test_param[2]"
    assert tests[f"{prefix}.TestGroup#test_method"].nodeid == (
        "tiny/test_tiny.py::TestGroup::test_method")
    assert "boom" in tests[f"{prefix}#test_fails"].message
    assert tests[f"{prefix}#test_crashes"].category == "infrastructure"  # marker: emulator
    assert tests[f"{prefix}#test_fails"].category == "product"
    assert tests[f"{prefix}#test_fails"].duration_s >= 0
    [attachment] = tests[f"{prefix}#test_passes"].attachments
    assert attachment.name == "log" and attachment.path.read_text() == "some output"
    # the JUnit file of the same run names every test the same way
    junit = load_run(tmp_path / "junit.xml")
    assert {k: t.status for k, t in junit.tests.items()} == {
        k: t.status for k, t in run.tests.items()}

    quarantine = tmp_path / "q.yaml"
    quarantine.write_text("- test: tiny/test_tiny.py::test_param\n  reason: covers both\n")
    out = tmp_path / "out"
    assert cli(["--current", str(tmp_path / "ar"), "--baseline", str(tmp_path / "junit.xml"),
                "--out", str(out), "--quarantine", str(quarantine)]) == 0
    assert cli(["--current", str(tmp_path / "ar"), "--out", str(out),
                "--quarantine", str(quarantine)]) == 1
    page = (out / "report.html").read_text()
    assert "tiny/<wbr>test_tiny.py::<wbr>test_fails" in _section(page, "new-failures")
    assert f'href="../ar/{attachment.path.name}"' not in page  # passed: no card
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparison"]["sections"]["new_failures"] == [f"{prefix}#test_fails"]
    assert summary["comparison"]["sections"]["infrastructure"] == [f"{prefix}#test_crashes"]


def test_the_run_box_shows_what_the_backend_recorded_without_knowing_it(tmp_path: Path) -> None:
    """The bench's keys (hil.*) come first, whichever backend wrote them; the page names no
    backend itself."""
    from wasmbed_hil.report.render_html import _run_box
    from wasmbed_hil.report.results import Run

    env = {"python": "3.11.7", "hil.emulator": "Bochs 2.8", "host": "Linux",
           "hil.board": "pc (Bochs)", "hil.backend": "bochs", "commit": "abc1234"}
    box = _run_box("Current run", Run(tmp_path, "allure", {}, env))
    shown = re.search(r'<div class="env">(.*?)</div>', box)
    assert shown is not None
    assert shown.group(1) == ("backend bochs · board pc (Bochs) · emulator Bochs 2.8 · "
                              "commit abc1234 · python 3.11.7")


def test_results_are_grouped_by_fault(tmp_path: Path) -> None:
    """The fault matrix labels each scenario with its fault; the reports count per fault."""
    run_dir = tmp_path / "faults"
    result(run_dir, "test_m[silence-run]", labels={"fault": "silence"})
    result(run_dir, "test_m[silence-enroll]", "failed", message="not converged",
           labels={"fault": "silence"})
    result(run_dir, "test_m[reboot-run]", "skipped", labels={"fault": "reboot"})
    result(run_dir, "test_plain")
    comparison = compare(load_run(run_dir))
    groups = comparison.to_json()["by_fault"]
    assert list(groups) == ["reboot", "silence"]
    assert groups["silence"]["total"] == 2 and groups["silence"]["failed"] == 1
    assert groups["reboot"]["skipped"] == 1
    out = tmp_path / "out"
    assert cli(["--current", str(run_dir), "--out", str(out)]) == 1
    summary = (out / "summary.md").read_text()
    assert "### By fault" in summary
    assert "| `silence` | 2 | 1 | 1 | 0 | 0 |" in summary
    page = (out / "report.html").read_text()
    assert 'id="by-fault"' in page and "<td class=\"mono\">reboot</td>" in page


# ----------------------------------------------------------------------------- Allure 3


def _allure_data(index: Path) -> str:
    """The JSON files a single-file Allure 3 report embeds (base64), decoded and joined."""
    import base64

    page = index.read_text(encoding="utf-8")
    blobs = re.findall(r'd\("(data/test-results/[^"]+)","([A-Za-z0-9+/=]+)"', page)
    assert blobs, "no embedded test results in the Allure report"
    return "\n".join(base64.b64decode(data).decode() for _, data in blobs)


@pytest.mark.timeout(900)  # the first run installs Allure 3 with npm
@pytest.mark.skipif(report.allure3.unavailable_reason() is not None,
                    reason=f"Allure 3 needs node and npm: {report.allure3.unavailable_reason()}")
def test_allure3_renders_the_run_with_history(tmp_path: Path) -> None:
    results = tmp_path / "allure-results"
    result(results, "test_allure_sees_this_one")
    result(results, "test_and_this_failure", "failed", message="AssertionError: shown")
    out = tmp_path / "reports"
    cache = Path(os.environ.get(report.allure3.ENV_CACHE)
                 or Path(__file__).resolve().parents[1] / report.allure3.DEFAULT_CACHE)
    argv = ["--current", str(results), "--out", str(out), "--allure=required",
            "--allure-cache", str(cache)]
    assert cli(argv) == 1  # the failure is new: our verdict is unchanged by Allure
    index = out / "allure-report" / "index.html"
    data = _allure_data(index)
    assert "test_allure_sees_this_one" in data and "test_and_this_failure" in data
    assert "googletagmanager" not in index.read_text(encoding="utf-8")
    page = (out / "report.html").read_text()
    assert 'href="allure-report/index.html"' in page
    history = out / "allure-history.jsonl"
    first = history.read_text().splitlines()
    assert first and all(json.loads(line) for line in first)
    # the next run reads the history and appends to it
    result(results, "test_allure_sees_this_one", start=T0 + 60_000)
    assert cli(argv) == 1
    assert len(history.read_text().splitlines()) == len(first) + 1


def test_a_damaged_allure_history_is_left_out_not_fatal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run cut short while Allure wrote its history left half a line: Allure 3 fails on
    it (exit 1, naming neither the file nor the line), in this run and every later one.
    The damaged line is left out, said in one line, and the report is made."""
    results = tmp_path / "allure-results"
    result(results, "test_a")
    out = tmp_path / "reports"
    cache = Path(os.environ.get(report.allure3.ENV_CACHE)
                 or Path(__file__).resolve().parents[1] / report.allure3.DEFAULT_CACHE)
    argv = ["--current", str(results), "--out", str(out), "--allure=required",
            "--allure-cache", str(cache)]
    assert cli(argv) == 0
    history = out / "allure-history.jsonl"
    whole = history.read_bytes()
    history.write_bytes(whole + whole[:len(whole) // 2])  # the second run's line cut
    capsys.readouterr()
    assert cli(argv) == 0
    assert "allure: 1 damaged line of the history" in capsys.readouterr().err
    assert (out / "allure-report" / "index.html").is_file()
    lines = history.read_bytes().splitlines()
    assert len(lines) == 2 and lines[0] == whole.strip()
    assert all(json.loads(line) for line in lines)
    assert sorted(p.name for p in out.iterdir()) == [
        "allure-history.jsonl", "allure-report", "report.html", "summary.json", "summary.md"]


def test_allure_cut_short_leaves_the_history_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Allure rewrites a copy of the history; killed half-way, the history is unchanged."""
    allure3 = report.allure3
    history = tmp_path / "allure-history.jsonl"
    history.write_text('{"uuid": "run-1"}\n')
    results = tmp_path / "results"
    result(results, "test_a")

    def killed(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        config = json.loads(Path(argv[argv.index("--config") + 1]).read_text())
        with open(config["historyPath"], "a") as f:
            f.write('{"uuid": "run-2", "testRes')
        return subprocess.CompletedProcess(argv, -9, "", "Killed")

    monkeypatch.setattr(allure3, "unavailable_reason", lambda: None)
    monkeypatch.setattr(allure3, "executable", lambda cache: tmp_path / "allure")
    monkeypatch.setattr(allure3.subprocess, "run", killed)
    with pytest.raises(allure3.AllureError, match="exit -9"):
        allure3.generate(results, tmp_path / "out", history, "t")
    assert history.read_text() == '{"uuid": "run-1"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "allure-history.jsonl", "results"]


def test_without_node_the_allure_step_is_skipped_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "allure-results"
    result(results, "test_a")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "reports"
    assert cli(["--current", str(results), "--out", str(out), "--allure=auto"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "allure" in line] == [
        "allure: skipped, node and npm not installed (Debian: apt-get install nodejs npm)"]
    assert not (out / "allure-report").exists()
    assert "allure-report" not in (out / "report.html").read_text()
    assert cli(["--current", str(results), "--out", str(out), "--allure=required"]) == 3
    assert "Allure 3 report not made: node and npm not installed" in capsys.readouterr().err
