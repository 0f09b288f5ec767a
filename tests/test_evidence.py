"""Evidence in reports: attachments and labels, the infrastructure/product split, and
retries that apply to infrastructure failures only. Runs pytest on generated scenarios."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from wasmbed_hil.bench.errors import InfrastructureError
from wasmbed_hil.bench.machines.qemu import MachineError
from wasmbed_hil.pytest_plugin.evidence import INFRASTRUCTURE, PRODUCT, classify, format_trace

SCENARIOS = '''
import errno
from pathlib import Path

from wasmbed_hil.bench.machines.qemu import MachineError

COUNTER = Path(__file__).with_name("attempts")


def _attempt(name):
    path = COUNTER.with_suffix("." + name)
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def test_passes_with_a_device(gateway, device, wasm):
    result = gateway.run(device, wasm("add"), "adder", args=(1, 2))
    assert result.values == (3,)


def test_product_failure(gateway, device):
    _attempt("product")
    assert device.device_id == "something else"


def test_emulator_that_does_not_start_once(gateway):
    if _attempt("flaky_infra") == 1:
        raise MachineError("qemu-system-arm: cannot start (simulated)")


def test_port_in_use(gateway):
    _attempt("port")
    raise OSError(errno.EADDRINUSE, "Address already in use")
'''


def run_scenarios(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_generated.py").write_text(SCENARIOS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         str(tmp_path / "test_generated.py"), "--rootdir", str(tmp_path),
         "--alluredir", str(tmp_path / "allure"), "--junitxml", str(tmp_path / "junit.xml"),
         *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def results(tmp_path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted((tmp_path / "allure").glob("*-result.json")):
        result = json.loads(path.read_text())
        out.setdefault(result["name"], []).append(result)
    for attempts in out.values():
        attempts.sort(key=lambda r: r["start"])
    return out


def labels(result: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in result["labels"]:
        out.setdefault(label["name"], []).append(label["value"])
    return out


def test_classify() -> None:
    assert classify(MachineError("no qemu")) == INFRASTRUCTURE
    assert classify(InfrastructureError("toolchain")) == INFRASTRUCTURE
    assert classify(OSError(98, "Address already in use")) == INFRASTRUCTURE
    assert classify(AssertionError("phase")) == PRODUCT
    assert classify(ValueError("bad")) == PRODUCT
    assert classify(None) == PRODUCT
    try:
        try:
            raise MachineError("cause")
        except MachineError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert classify(wrapped) == INFRASTRUCTURE


def test_trace_format() -> None:
    assert format_trace([]) == "(no messages)"
    text = format_trace([(10.0, "in", 0, "Hello", {"a": 1}),
                         (10.25, "out", 0, "Welcome", {"b": "x"})])
    lines = text.splitlines()
    assert lines[0].startswith("+    0.000s  dev -> gw  #0     Hello")
    assert lines[1].startswith("+    0.250s  gw -> dev  #0     Welcome")
    assert lines[1].endswith('{"b": "x"}')
    fault = format_trace([(10.0, "fault", 4, "DeployChunk", {"action": "drop"})])
    assert fault.startswith("+    0.000s  FAULT      #4     DeployChunk")


def test_reports_carry_evidence_and_categories(tmp_path: Path) -> None:
    done = run_scenarios(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    runs = results(tmp_path)
    passed = runs["test_passes_with_a_device"][-1]
    assert passed["status"] == "passed"
    names = [a["name"] for a in passed["attachments"]]
    assert names[:3] == ["console device-0", "protocol device-0 via gateway-0",
                         "gateway events gateway-0"]
    trace = (tmp_path / "allure" / passed["attachments"][1]["source"]).read_text()
    assert "Hello" in trace and "ExecutionResult" in trace and "DeployChunk" in trace
    assert "timeline" in names  # all sources on one clock (tests/test_timeline.py)
    source = passed["attachments"][names.index("timeline")]["source"]
    timeline = (tmp_path / "allure" / source).read_text().splitlines()
    assert timeline[0].startswith("# +0 = ")
    for needle in ("[device-0 console]", "[gateway gateway-0]", "[protocol device-0 dev->gw]"):
        assert any(needle in line for line in timeline), needle
    tags = labels(passed)
    assert tags["backend"] == ["virtual"]
    assert tags["module"][0].startswith("adder sha256:")
    assert tags["limits"][0].startswith("adder: memory=")
    assert labels(runs["test_product_failure"][-1])["failure_category"] == [PRODUCT]
    assert labels(runs["test_port_in_use"][-1])["failure_category"] == [INFRASTRUCTURE]
    props = (tmp_path / "allure" / "environment.properties").read_text()
    assert "hil.backend=virtual" in props and "python=" in props
    categories = json.loads((tmp_path / "allure" / "categories.json").read_text())
    assert categories[0]["name"].startswith("Infrastructure")
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    properties = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in junit.iter("testcase")
    }
    assert properties["test_product_failure"]["failure_category"] == PRODUCT
    assert properties["test_port_in_use"]["failure_category"] == INFRASTRUCTURE


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_only_infrastructure_failures_are_retried(tmp_path: Path, workers: list[str]) -> None:
    """--hil-infra-retries through pytest-rerunfailures: each attempt is an Allure result of
    its own (one historyId), the JUnit file has one test case per test with the earlier
    attempts folded in as Surefire's flakyFailure / rerunFailure."""
    done = run_scenarios(tmp_path, "--hil-infra-retries", "2", *workers)
    assert done.returncode == 1, done.stdout + done.stderr
    attempts = {p.suffix[1:]: int(p.read_text()) for p in tmp_path.glob("attempts.*")}
    assert attempts == {"product": 1, "flaky_infra": 2, "port": 3}
    assert "1 passed" not in done.stdout  # the summary counts the recovered one as passed
    assert "2 failed, 2 passed" in done.stdout, done.stdout
    assert "RERUN" in done.stdout or "rerun" in done.stdout
    runs = results(tmp_path)
    recovered = runs["test_emulator_that_does_not_start_once"][-1]
    assert recovered["status"] == "passed"
    assert labels(recovered)["infra_retries"] == ["1"]
    earlier = [a for a in recovered["attachments"] if a["name"].startswith("earlier attempts")]
    text = (tmp_path / "allure" / earlier[0]["source"]).read_text()
    assert "MachineError: qemu-system-arm: cannot start (simulated)" in text
    port = runs["test_port_in_use"][-1]
    assert labels(port)["infra_retries"] == ["2"]
    assert labels(port)["failure_category"] == [INFRASTRUCTURE]
    assert "infra_retries" not in labels(runs["test_product_failure"][-1])
    # every attempt in Allure: the earlier ones failed for the infrastructure
    attempts_shown = {name: [(r["status"], labels(r).get("failure_category"))
                             for r in rs] for name, rs in runs.items()}
    assert attempts_shown == {
        "test_passes_with_a_device": [("passed", None)],
        "test_product_failure": [("failed", [PRODUCT])],
        "test_emulator_that_does_not_start_once": [("broken", [INFRASTRUCTURE]),
                                                   ("passed", None)],
        "test_port_in_use": [("broken", [INFRASTRUCTURE])] * 3,
    }
    for rs in runs.values():
        assert len({r["historyId"] for r in rs}) == 1
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in junit.iter("testcase")}
    assert len(list(junit.iter("testcase"))) == len(cases) == 4  # one test case per test
    recovered_case = cases["test_emulator_that_does_not_start_once"]
    assert recovered_case.find("failure") is None
    (flaky,) = recovered_case.findall("flakyFailure")
    assert "MachineError: qemu-system-arm: cannot start" in (flaky.get("message") or "")
    port_case = cases["test_port_in_use"]
    assert port_case.find("failure") is not None
    assert len(port_case.findall("rerunFailure")) == 2
    assert [p.get("value") for p in port_case.iter("property")
            if p.get("name") == "failure_category"] == [INFRASTRUCTURE]
    assert not list(cases["test_product_failure"].iter("rerunFailure"))
    from wasmbed_hil.report import load_run

    run = load_run(tmp_path / "allure")  # the regression report counts the retry as flaky
    assert [t.name for t in run.tests.values() if t.flaky] == [
        "test_emulator_that_does_not_start_once"]
    assert {t.name: len(t.attempts) for t in run.tests.values()}[
        "test_port_in_use"] == 3
    junit_run = load_run(tmp_path / "junit.xml")  # and so it does from the JUnit file
    assert [t.name for t in junit_run.tests.values() if t.flaky] == [
        "test_emulator_that_does_not_start_once"]
    # under the same names, backend included: either can be the other's baseline
    assert sorted(junit_run.tests) == sorted(run.tests)
    assert all(k.endswith("@virtual") for k in run.tests)


def test_one_test_on_two_backends_is_two_tests(tmp_path: Path) -> None:
    """`make hil` puts the runs of several backends into one Allure directory: the parameter
    `backend` keeps them apart (historyId, the report's key), the label shows it."""
    (tmp_path / "test_generated.py").write_text(SCENARIOS)
    for backend in ("virtual", "renode"):  # renode: skipped where it is not installed
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             f"{tmp_path / 'test_generated.py'}::test_passes_with_a_device",
             "--rootdir", str(tmp_path), "--alluredir", str(tmp_path / "allure"),
             f"--junitxml={tmp_path / f'junit-{backend}.xml'}", f"--hil-backend={backend}"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    runs = results(tmp_path)["test_passes_with_a_device"]
    assert len(runs) == 2 and len({r["historyId"] for r in runs}) == 2
    assert sorted(p["value"] for r in runs for p in r["parameters"]
                  if p["name"] == "backend") == ["'renode'", "'virtual'"]
    from wasmbed_hil.report import load_run

    tests = load_run(tmp_path / "allure").tests
    assert sorted(tests) == ["test_generated#test_passes_with_a_device@renode",
                             "test_generated#test_passes_with_a_device@virtual"]
    assert {t.label("backend") for t in tests.values()} == {"virtual", "renode"}
    assert all(len(t.attempts) == 1 for t in tests.values())
    # the JUnit files name the tests alike, so they merge as two shards, not a duplicate
    from wasmbed_hil.report import load_runs

    junit = load_runs([tmp_path / f"junit-{backend}.xml" for backend in ("virtual", "renode")])
    assert sorted(junit.tests) == sorted(tests)


def _qemu_unavailable() -> str | None:
    from wasmbed_hil.bench.backends import get_backend

    return get_backend("qemu").unavailable_reason()


@pytest.mark.skipif(_qemu_unavailable() is not None, reason=str(_qemu_unavailable()))
def test_firmware_scenarios_carry_their_image_and_the_files_come_once(tmp_path: Path) -> None:
    from wasmbed_hil.bench.firmware.build import image_path

    done = run_scenarios(tmp_path, "--hil-backend=qemu", "--hil-attach-image",
                         "-k", "passes_with_a_device or product_failure")
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    elf = image_path()
    digest = hashlib.sha256(elf.read_bytes()).hexdigest()
    runs = results(tmp_path)
    files: list[tuple[str, bytes]] = []
    for name in ("test_passes_with_a_device", "test_product_failure"):
        (result,) = runs[name]
        assert labels(result)["firmware_sha256"] == [digest]
        by_name = {a["name"]: a["source"] for a in result["attachments"]}
        facts = (tmp_path / "allure" / by_name["firmware image"]).read_text()
        assert f"sha256  {digest}" in facts and f"path    {elf}" in facts
        assert "board   mps2-an385" in facts and f"map     {elf.with_suffix('.map')}" in facts
        files += [(n, (tmp_path / "allure" / s).read_bytes()) for n, s in by_name.items()
                  if n.startswith(("firmware wasmbed", "linker map"))]
    assert [n for n, _ in files] == ["firmware wasmbed.elf", "linker map wasmbed.map"]
    assert files[0][1] == elf.read_bytes()
    assert b"Memory Configuration" in files[1][1]  # GNU ld's map


def test_the_virtual_backend_has_no_image_to_attach(tmp_path: Path) -> None:
    done = run_scenarios(tmp_path, "--hil-attach-image", "-k", "passes_with_a_device")
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    (result,) = results(tmp_path)["test_passes_with_a_device"]
    assert not [a for a in result["attachments"] if "firmware" in a["name"]]
    assert "firmware_sha256" not in labels(result)


BACKEND_SPECIFIC = '''
import pytest


@pytest.mark.backend_specific("virtual", reason="builds its own platform on virtual")
def test_without_a_harness_fixture():
    pass
'''


def test_a_backend_specific_test_without_harness_fixtures_is_one_test_per_backend(
        tmp_path: Path) -> None:
    """suites/netns uses no harness fixture but runs on one backend only: `make hil`'s report
    once merged its pass on virtual and its skip on qemu into one skipped test."""
    (tmp_path / "test_specific.py").write_text(BACKEND_SPECIFIC)
    for backend in ("virtual", "qemu"):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             str(tmp_path / "test_specific.py"), "--rootdir", str(tmp_path),
             "--alluredir", str(tmp_path / "allure"), f"--hil-backend={backend}"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    from wasmbed_hil.report import load_run

    tests = load_run(tmp_path / "allure").tests
    assert sorted(tests) == ["test_specific#test_without_a_harness_fixture@qemu",
                             "test_specific#test_without_a_harness_fixture@virtual"]
    assert {t.label("backend"): t.status for t in tests.values()} == {
        "virtual": "passed", "qemu": "skipped"}


CRASHES = """
import os

def test_survives():
    pass

def test_kills_its_worker():
    os._exit(1)
"""


@pytest.mark.timeout(300)  # a pytest start-up with workers on a loaded machine
def test_a_test_that_kills_its_xdist_worker_is_a_broken_result(tmp_path: Path) -> None:
    """allure-pytest writes a test's result in the worker: one that died with its worker had
    none, and the regression report passed a run that had lost it. The controller writes it
    (broken, a product failure by default, under the key the test would have had)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_crashes.py").write_text(CRASHES)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_crashes.py",
         "-n", "2", "--alluredir", str(tmp_path / "allure"), "--hil-backend=virtual"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1 and "1 failed, 1 passed" in done.stdout, done.stdout
    from wasmbed_hil.report import compare, load_run

    run = load_run(tmp_path / "allure")
    crashed = run.tests["test_crashes#test_kills_its_worker@virtual"]
    assert (crashed.status, crashed.category) == ("broken", PRODUCT)
    assert crashed.nodeid == "test_crashes.py::test_kills_its_worker"
    assert "crashed while running 'test_crashes.py::test_kills_its_worker'" in crashed.message
    assert run.tests["test_crashes#test_survives"].status == "passed"
    assert compare(run).exit_code == 1
