"""Reading a test run: an Allure results directory, a JUnit XML file or a stored summary.json.

Every reader produces the same normalized `Run`: one `CaseResult` per test, keyed by a name
that is the same in the three formats, `<module path>[.<Class>]#<function>[<params>]`,
e.g. `suites.heartbeat.test_heartbeat#test_x[2]` (Allure's fullName plus the parameter id;
JUnit's `classname#name`). Retries (the same test several times in one run) become the
test's attempts; the last one decides its status.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .categories import (
    BROKEN,
    FAILED,
    FAILING,
    PASSED,
    PRODUCT,
    SKIPPED,
    STATUSES,
    categorize,
)

SUMMARY_FORMAT = "wasmbed-hil/report-run"
SUMMARY_VERSION = 1


class RunReadError(Exception):
    """An input that cannot be read; the message names the file."""


@dataclass
class Attempt:
    status: str
    duration_s: float
    start_ms: int | None = None
    message: str = ""


@dataclass
class Attachment:
    name: str
    path: Path  # absolute
    type: str = ""


@dataclass
class CaseResult:
    """One test in one run (named so that pytest does not take it for a test class)."""

    key: str
    name: str
    status: str
    duration_s: float
    full_name: str = ""
    nodeid: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    message: str = ""
    trace: str = ""
    category: str | None = None  # infrastructure / product when failing, else None
    category_source: str = ""  # label, marker: <m>, default
    attachments: list[Attachment] = field(default_factory=list)
    history_id: str | None = None

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def infra_retries(self) -> int:
        """Attempts the pytest plugin re-ran within one test for infrastructure failures
        (`--hil-infra-retries`): Allure keeps only the last, labelled `infra_retries`."""
        values = self.labels.get("infra_retries") or ["0"]
        try:
            return int(values[-1])
        except ValueError:
            return 0

    @property
    def flaky(self) -> bool:
        """Passed, but only after a failed attempt (or an infrastructure retry)."""
        return self.status == PASSED and (
            self.infra_retries > 0
            or any(a.status in FAILING for a in self.attempts[:-1]))

    @property
    def display(self) -> str:
        return self.nodeid or self.key

    def label(self, name: str) -> str:
        return ", ".join(self.labels.get(name, []))


@dataclass
class Run:
    source: Path
    kind: str  # allure, junit, summary
    tests: dict[str, CaseResult]
    environment: dict[str, str] = field(default_factory=dict)
    # the runs this one merges (report/merge.py: shards), each its own source; [] when read
    parts: list[Path] = field(default_factory=list)

    @property
    def sources(self) -> list[Path]:
        """Where the results were read: the shards' paths, or the one source."""
        return self.parts or [self.source]

    def totals(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for test in self.tests.values():
            counts[test.status] = counts.get(test.status, 0) + 1
        counts["total"] = len(self.tests)
        return counts

    def duration_s(self) -> float:
        return sum(t.duration_s for t in self.tests.values())


# ----------------------------------------------------------------------------- entry point


def load_run(path: Path | str) -> Run:
    """The run at `path`: an Allure results directory (or a report directory holding a
    summary.json), a JUnit XML file or a summary.json. RunReadError when unreadable."""
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*-result.json")):
            return read_allure(path)
        if (path / "summary.json").is_file():
            return read_summary(path / "summary.json")
        raise RunReadError(f"{path}: no Allure results (*-result.json) in this directory")
    try:
        with path.open("rb") as f:
            # a UTF-8 byte order mark (Windows tools write one) before `<?xml` or `{`
            head = f.read(512).removeprefix(b"\xef\xbb\xbf").lstrip()
    except OSError as exc:
        raise RunReadError(f"{path}: {exc.strerror or exc}") from None
    if head.startswith(b"<"):
        return read_junit(path)
    if head.startswith(b"{"):
        return read_summary(path)
    raise RunReadError(f"{path}: neither an Allure results directory, a JUnit XML file nor "
                       "a summary.json")


# ----------------------------------------------------------------------------- Allure


def _labels(raw: Any) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for item in raw or []:
        if isinstance(item, dict) and item.get("name") is not None:
            values = labels.setdefault(str(item["name"]), [])
            value = str(item.get("value", ""))
            if value not in values:
                values.append(value)
    return labels


def _status(raw: Any) -> str:
    status = str(raw or "").lower()
    return status if status in STATUSES else BROKEN  # "unknown": interrupted


BACKEND_PARAMETER = "backend"  # the Allure parameter naming the backend a test ran on


def _param_value(value: Any) -> str:
    text = str(value)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # allure-pytest stores repr() of strings; pytest's ids do not
    return text


def allure_key(data: dict[str, Any]) -> tuple[str, str | None]:
    """(key, nodeid) of an allure-pytest result: fullName plus the parameter id, then
    `@BACKEND` when the result has the parameter `backend` (the pytest plugin sets it, so
    that one test run on two backends is two tests), and the pytest node id rebuilt from
    titlePath (None when the result has no titlePath)."""
    full_name = str(data.get("fullName") or "")
    name = str(data.get("name") or "")
    func = full_name.split("#", 1)[1] if "#" in full_name else ""
    params = [p for p in data.get("parameters") or [] if isinstance(p, dict)]
    backend = next((_param_value(p.get("value")) for p in params
                    if p.get("name") == BACKEND_PARAMETER), None)
    params = [p for p in params if p.get("name") != BACKEND_PARAMETER]
    if func and name.startswith(func + "["):
        suffix = name[len(func):]
    elif func and name != func and params:
        # a test with @allure.title: its name no longer carries the parameter id
        values = [_param_value(p.get("value")) for p in params]
        suffix = "[" + "-".join(values) + "]"
    else:
        suffix = ""
    key = full_name + suffix if full_name else name or str(data.get("historyId") or "")
    if backend:
        key += f"@{backend}"
    nodeid = None
    title_path = data.get("titlePath")
    if func and isinstance(title_path, list) and title_path:
        parts = [str(p) for p in title_path]
        files = [i for i, p in enumerate(parts) if p.endswith(".py")]
        split = files[0] + 1 if files else len(parts)
        nodeid = "::".join(["/".join(parts[:split]), *parts[split:], func + suffix])
    return key, nodeid


def _attachments(node: dict[str, Any], directory: Path, out: list[Attachment]) -> None:
    for item in node.get("attachments") or []:
        if isinstance(item, dict) and item.get("source"):
            out.append(Attachment(str(item.get("name") or item["source"]),
                                  (directory / str(item["source"])).absolute(),
                                  str(item.get("type") or "")))
    for step in node.get("steps") or []:
        if isinstance(step, dict):
            _attachments(step, directory, out)


def _properties(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    props = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "!")):
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


_ALLURE_LISTS = ("labels", "parameters", "attachments", "steps")


def _malformed(node: dict[str, Any], whose: str = "") -> str | None:
    """What in an Allure result (or step) has a shape the reader cannot use, or None: the
    reader iterates these lists and reads statusDetails' keys, and would crash on another
    type (a number as `labels`, a string as `statusDetails`)."""
    for name in _ALLURE_LISTS:
        value = node.get(name)
        if value and not isinstance(value, list):
            return f"{whose}{name!r} is a {type(value).__name__}, not a list"
    details = node.get("statusDetails")
    if details and not isinstance(details, dict):
        return f"{whose}'statusDetails' is a {type(details).__name__}, not an object"
    for step in node.get("steps") or []:
        why = _malformed(step, "a step's ") if isinstance(step, dict) else None
        if why:
            return why
    return None


def read_allure(directory: Path | str) -> Run:
    """Results written by allure-pytest (`--alluredir`): every `*-result.json`."""
    directory = Path(directory)
    groups: dict[str, list[tuple[tuple[int, int, str], dict[str, Any]]]] = {}
    tests: dict[str, CaseResult] = {}
    for file in sorted(directory.glob("*-result.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RunReadError(f"{file}: not a readable Allure result: {exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # Cut short, typically: pytest killed (a CI timeout) while allure-pytest wrote
            # it. Refusing the run would lose every other result exactly when the report
            # is needed; the test's outcome is unknown, so it counts as a failure.
            key = f"unreadable result {file.name}"
            message = (f"{file}: not a readable Allure result (cut short by a killed run?): "
                       f"{exc}")
            tests[key] = CaseResult(key=key, name=key, status=BROKEN, duration_s=0.0,
                                    attempts=[Attempt(BROKEN, 0.0, None, message)],
                                    message=message, category=PRODUCT,
                                    category_source="unreadable result")
            continue
        if not isinstance(data, dict):
            raise RunReadError(f"{file}: not an Allure result (a JSON object is expected)")
        why = _malformed(data)
        if why:
            raise RunReadError(f"{file}: not an Allure result ({why})")
        key, _ = allure_key(data)
        group = str(data.get("historyId") or key)
        order = (_int(data.get("start")), _int(data.get("stop")), file.name)
        groups.setdefault(group, []).append((order, data))
    for group, results in groups.items():
        results.sort(key=lambda r: r[0])
        attempts = [Attempt(_status(d.get("status")), _duration(d), _int(d.get("start")) or None,
                            str((d.get("statusDetails") or {}).get("message") or ""))
                    for _, d in results]
        last = results[-1][1]
        key, nodeid = allure_key(last)
        if key in tests:  # two tests with one name (rare: titles without parameters)
            key = f"{key}[{group[:8]}]"
        details = last.get("statusDetails") or {}
        labels = _labels(last.get("labels"))
        status = attempts[-1].status
        message = str(details.get("message") or "")
        category, why = categorize(status, labels, message)
        found: list[Attachment] = []
        _attachments(last, directory, found)
        tests[key] = CaseResult(
            key=key, name=str(last.get("name") or key), status=status,
            duration_s=attempts[-1].duration_s, full_name=str(last.get("fullName") or ""),
            nodeid=nodeid, attempts=attempts, labels=labels, message=message,
            trace=str(details.get("trace") or ""), category=category, category_source=why,
            attachments=found, history_id=str(last.get("historyId") or "") or None)
    return Run(directory, "allure", tests, _properties(directory / "environment.properties"))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        return 0


def _duration(data: dict[str, Any]) -> float:
    start, stop = _int(data.get("start")), _int(data.get("stop"))
    try:
        return max(0.0, (stop - start) / 1000.0) if start and stop else 0.0
    except OverflowError:  # integers beyond a float's range
        return 0.0


# ----------------------------------------------------------------------------- JUnit

_RETRY_TAGS = {"flakyFailure": FAILED, "rerunFailure": FAILED,
               "flakyError": BROKEN, "rerunError": BROKEN}


def _failure_status(message: str) -> str:
    """pytest writes every failing call as <failure>; tell assertions (failed) from other
    exceptions (broken) the way allure-pytest does."""
    head = message.lstrip()
    if not head or head.startswith(("AssertionError", "Failed", "[XPASS")):
        return FAILED
    first = head.split(":", 1)[0]
    return BROKEN if first.replace(".", "").replace("_", "").isalnum() else FAILED


def read_junit(path: Path | str) -> Run:
    """A JUnit XML file (pytest `--junitxml`); <failure> -> failed or broken, <error> ->
    broken, <skipped> -> skipped; <properties> become labels (`failure_category`)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise RunReadError(f"{path}: not a readable JUnit XML file: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise RunReadError(f"{path}: not a JUnit XML file (root element <{root.tag}>)")
    environment: dict[str, str] = {}
    for suite in root.iter("testsuite"):
        props = suite.find("properties")
        for prop in props.iter("property") if props is not None else []:
            environment[prop.get("name", "")] = prop.get("value", "")
    grouped: dict[str, list[ET.Element]] = {}
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        key = f"{classname}#{name}" if classname else name
        # the pytest plugin records the backend as a property: `@BACKEND` as in Allure's key
        backend = next((p.get("value") for p in case.iter("property")
                        if p.get("name") == BACKEND_PARAMETER and p.get("value")), None)
        if backend:
            key += f"@{backend}"
        grouped.setdefault(key, []).append(case)
    tests: dict[str, CaseResult] = {}
    for key, cases in grouped.items():
        attempts: list[Attempt] = []
        for case in cases:
            duration = _float(case.get("time"))
            for child in case:
                if child.tag in _RETRY_TAGS:
                    attempts.append(Attempt(_RETRY_TAGS[child.tag], _float(child.get("time")),
                                            message=child.get("message", "")))
            status, message, trace = PASSED, "", ""
            for tag in ("failure", "error", "skipped"):
                element = case.find(tag)
                if element is not None:
                    message, trace = element.get("message", ""), element.text or ""
                    status = {"error": BROKEN, "skipped": SKIPPED}.get(tag) or _failure_status(
                        message or trace)
                    break
            attempts.append(Attempt(status, duration, message=message))
        last = cases[-1]
        labels: dict[str, list[str]] = {}
        props = last.find("properties")
        for prop in props.iter("property") if props is not None else []:
            values = labels.setdefault(prop.get("name", ""), [])
            if prop.get("value", "") not in values:
                values.append(prop.get("value", ""))
        final = attempts[-1]
        element = next((e for e in (last.find(t) for t in ("failure", "error", "skipped"))
                        if e is not None), None)
        trace = (element.text or "") if element is not None else ""
        category, why = categorize(final.status, labels, final.message or trace)
        tests[key] = CaseResult(
            key=key, name=last.get("name", key), status=final.status,
            duration_s=final.duration_s, full_name=key.split("[", 1)[0].split("@", 1)[0],
            attempts=attempts,
            labels=labels, message=final.message, trace=trace, category=category,
            category_source=why)
    return Run(path, "junit", tests, environment)


def _float(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


# ----------------------------------------------------------------------------- summary.json


def run_to_json(run: Run, directory: Path, comparison: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The normalized run as summary.json stores it; attachment paths relative to
    `directory` (where summary.json is written)."""

    def rel(path: Path) -> str:
        try:
            return Path(os.path.relpath(path, directory.absolute())).as_posix()
        except ValueError:  # another drive
            return str(path)

    tests = []
    for test in sorted(run.tests.values(), key=lambda t: t.key):
        tests.append({
            "key": test.key, "name": test.name, "nodeid": test.nodeid,
            "fullName": test.full_name, "historyId": test.history_id,
            "status": test.status, "duration_s": round(test.duration_s, 3),
            "flaky": test.flaky,
            "attempts": [{"status": a.status, "duration_s": round(a.duration_s, 3),
                          "start_ms": a.start_ms, "message": a.message} for a in test.attempts],
            "labels": test.labels, "category": test.category,
            "category_source": test.category_source,
            "message": test.message, "trace": test.trace,
            "attachments": [{"name": a.name, "path": rel(a.path), "type": a.type}
                            for a in test.attachments],
        })
    data: dict[str, Any] = {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(run.source), "kind": run.kind, "environment": run.environment,
        "totals": run.totals(), "tests": tests,
    }
    if run.parts:
        data["shards"] = [str(part) for part in run.parts]
    if comparison is not None:
        data["comparison"] = comparison
    return data


def read_summary(path: Path | str) -> Run:
    """A summary.json written by `wasmbed-hil report`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a BOM, if any
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunReadError(f"{path}: not a readable summary.json: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
        raise RunReadError(f"{path}: not a summary.json written by wasmbed-hil report")
    if data.get("version") != SUMMARY_VERSION:
        raise RunReadError(f"{path}: summary.json version {data.get('version')!r}; this "
                           f"wasmbed-hil reads version {SUMMARY_VERSION}")
    base = path.parent.absolute()
    tests: dict[str, CaseResult] = {}
    try:
        for t in data["tests"]:
            if not isinstance(t["key"], str):
                raise TypeError(f"a test's key {t['key']!r} is not a string")
            if t["key"] in tests:  # the second would replace the first: a result lost
                raise RunReadError(f"{path}: test {t['key']!r} is listed twice")
            for name in ("nodeid", "historyId", "category"):
                if t.get(name) is not None and not isinstance(t.get(name), str):
                    raise TypeError(f"{name} of {t['key']!r} is not a string or null")
            status = _status(t["status"])
            labels = {str(k): [str(v) for v in vs] for k, vs in (t.get("labels") or {}).items()}
            message = str(t.get("message") or "")
            category, why = t.get("category"), str(t.get("category_source") or "")
            if status in FAILING and category is None:
                category, why = categorize(status, labels, message)
            tests[t["key"]] = CaseResult(
                key=str(t["key"]), name=str(t.get("name") or t["key"]), status=status,
                duration_s=_float(t.get("duration_s")), full_name=str(t.get("fullName") or ""),
                nodeid=t.get("nodeid"),
                attempts=[Attempt(_status(a.get("status")), _float(a.get("duration_s")),
                                  a.get("start_ms"), str(a.get("message") or ""))
                          for a in t.get("attempts") or []]
                or [Attempt(status, _float(t.get("duration_s")))],
                labels=labels, message=message, trace=str(t.get("trace") or ""),
                category=category if status in FAILING else None, category_source=why,
                attachments=[Attachment(str(a["name"]), Path(os.path.normpath(base / a["path"])),
                                        str(a.get("type") or ""))
                             for a in t.get("attachments") or []],
                history_id=t.get("historyId"))
        environment = {str(k): str(v) for k, v in (data.get("environment") or {}).items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise RunReadError(f"{path}: malformed summary.json ({type(exc).__name__}: {exc})"
                           ) from None
    return Run(path, "summary", tests, environment)
