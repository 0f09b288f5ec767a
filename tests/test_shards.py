"""Suites split across machines: `--hil-shard K/N` and `wasmbed-hil report --current A B`.

The shards' tests must partition the collected tests (each in exactly one shard, whatever
the collection order), follow the recorded durations, and their results merge into one
report equal to the unsharded run's; a test reported by two shards is an error.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.cli import report
from wasmbed_hil.cli.common import CliError, fail
from wasmbed_hil.pytest_plugin.shard import load_durations, parse_shard, select
from wasmbed_hil.report import DuplicateTestError, load_run, load_runs

ROOT = Path(__file__).resolve().parent.parent
MODULE = "suites.demo.test_demo"
T0 = 1_790_000_000_000


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wasmbed-hil")
    report.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", *argv, "--allure=off"])
    try:
        return int(args.run(args))
    except CliError as exc:
        return fail(str(exc), exc.code)


def result(directory: Path, name: str, status: str = "passed", backend: str = "virtual",
           environment: dict[str, str] | None = None) -> None:
    """One allure-pytest style result of `name` on `backend`, as the pytest plugin writes
    it (the parameter `backend`)."""
    directory.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "name": name, "status": status, "start": T0, "stop": T0 + 200,
        "uuid": str(uuid.uuid4()), "historyId": f"{name}@{backend}",
        "fullName": f"{MODULE}#{name}", "titlePath": ["suites", "demo", "test_demo.py"],
        "parameters": [{"name": "backend", "value": repr(backend)}],
    }
    (directory / f"{data['uuid']}-result.json").write_text(json.dumps(data))
    if environment:
        (directory / "environment.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in environment.items()))


def test_the_shards_results_merge_into_one_run(tmp_path: Path) -> None:
    one, two = tmp_path / "shard-1", tmp_path / "shard-2"
    result(one, "test_a", environment={"commit": "abc", "hil.shard": "1/2"})
    result(one, "test_b", "failed")
    result(two, "test_c", environment={"commit": "abc", "hil.shard": "2/2"})
    run = load_runs([one, two])
    assert sorted(run.tests) == [f"{MODULE}#test_{x}@virtual" for x in "abc"]
    assert run.tests[f"{MODULE}#test_b@virtual"].status == "failed"
    assert run.kind == "allure" and run.sources == [one, two]
    assert run.environment == {"commit": "abc", "hil.shard": "1/2, 2/2"}
    assert load_runs([one]).tests.keys() == load_run(one).tests.keys()


def test_a_shard_whose_value_is_part_of_anothers_is_still_shown(tmp_path: Path) -> None:
    """Where the shards differ every value is shown, also when one shard's value looks like
    a part of another's (`nrf52, rev 2` and `nrf52`)."""
    one, two, three = (tmp_path / f"shard-{k}" for k in (1, 2, 3))
    result(one, "test_a", environment={"hil.board": "nrf52, rev 2"})
    result(two, "test_b", environment={"hil.board": "nrf52"})
    result(three, "test_c", environment={"hil.board": "nrf52"})
    assert load_runs([one, two, three]).environment == {"hil.board": "nrf52, rev 2, nrf52"}


def test_one_test_on_two_backends_is_two_tests_not_a_duplicate(tmp_path: Path) -> None:
    result(tmp_path / "virtual", "test_a", backend="virtual")
    result(tmp_path / "qemu", "test_a", "failed", backend="qemu")
    run = load_runs([tmp_path / "virtual", tmp_path / "qemu"])
    assert {k: t.status for k, t in run.tests.items()} == {
        f"{MODULE}#test_a@virtual": "passed", f"{MODULE}#test_a@qemu": "failed"}


def test_a_test_in_two_shards_is_an_error_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "shard-1", tmp_path / "shard-2"
    result(one, "test_a")
    result(one, "test_b")
    result(two, "test_b", "failed")  # would be taken for a retry in one results directory
    with pytest.raises(DuplicateTestError, match="1 test reported by two shards"):
        load_runs([one, two])
    assert cli(["--current", str(one), str(two), "--out", str(tmp_path / "out")]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "test_b" in err and str(one) in err and str(two) in err
    assert not (tmp_path / "out").exists()


def test_cli_merges_shards_into_one_report_and_one_baseline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = [tmp_path / f"shard-{k}" for k in (1, 2)]
    result(shards[0], "test_a")
    result(shards[1], "test_b", "failed")
    out = tmp_path / "out"
    assert cli(["--current", str(shards[0]), "--current", str(shards[1]),
                "--out", str(out)]) == 1  # test_b is a new product failure
    assert "2 tests in" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"] == [str(s) for s in shards]
    assert summary["totals"]["total"] == 2 and summary["totals"]["failed"] == 1
    # the merged summary is the next baseline; the next run's shards compare with it
    result(tmp_path / "next-1", "test_a")
    result(tmp_path / "next-2", "test_b")
    assert cli(["--current", str(tmp_path / "next-1"), str(tmp_path / "next-2"),
                "--baseline", str(out / "summary.json"), "--out", str(tmp_path / "o2")]) == 0
    fixed = json.loads((tmp_path / "o2" / "summary.json").read_text())["comparison"]
    assert fixed["sections"]["fixed"] == [f"{MODULE}#test_b@virtual"]


# ----------------------------------------------------------------------------- --hil-shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "x", "1/2/3", "-1/2", ""])
def test_a_bad_shard_is_a_usage_error(text: str) -> None:
    with pytest.raises(pytest.UsageError, match="--hil-shard"):
        parse_shard(text)


@dataclass(frozen=True)
class FakeItem:
    nodeid: str


ITEMS = [FakeItem(f"test_many.py::test_{i}") for i in range(10)]


def test_shards_partition_the_tests_by_recorded_duration() -> None:
    durations = {item.nodeid: 1.0 for item in ITEMS} | {"test_many.py::test_7": 10.0}
    one, estimate = select(ITEMS, durations, 1, 2)
    assert one == [FakeItem("test_many.py::test_7")] and estimate == 10.0  # against 9 x 1 s
    assert select(ITEMS, durations, 2, 2) == ([i for i in ITEMS if i not in one], 9.0)
    thirds = [select(ITEMS, durations, k, 3)[0] for k in (1, 2, 3)]
    assert sorted(i.nodeid for shard in thirds for i in shard) == sorted(i.nodeid for i in ITEMS)
    assert [len(s) for s in thirds] == [1, 5, 4]  # 10, 5 and 4 s
    # a test without a recorded duration counts as the average of the others
    partial = {"test_many.py::test_0": 12.0, "test_many.py::test_1": 2.0}  # average 7 s
    assert [select(ITEMS, partial, k, 2)[1] for k in (1, 2)] == [35.0, 35.0]  # 12+2+8x7


@pytest.mark.parametrize("seed", range(5))
def test_shards_do_not_depend_on_the_collection_order(seed: int) -> None:
    """Every machine (and xdist worker) gets the same shards, whatever order its collection
    came in (pytest-randomly shuffles it per process); each shard keeps that order."""
    shuffled = ITEMS[:]
    random.Random(seed).shuffle(shuffled)
    for durations in ({}, {i.nodeid: float(n % 3) for n, i in enumerate(ITEMS)}):
        for k in (1, 2, 3):
            mine, theirs = select(shuffled, durations, k, 3)[0], select(ITEMS, durations, k, 3)[0]
            assert set(mine) == set(theirs)
            assert mine == [i for i in shuffled if i in theirs]


def test_more_shards_than_tests_split_alike_without_a_list_per_shard(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards past the number of tests get none; pytest-split's time and memory grow with
    N x tests, so a huge N (a typo: 1/1000000000) never ended. The split is the same."""
    from pytest_split.algorithms import LeastDurationAlgorithm

    for durations in ({}, {i.nodeid: float(n % 3) for n, i in enumerate(ITEMS)}):
        whole = LeastDurationAlgorithm()(25, sorted(ITEMS, key=lambda i: i.nodeid), durations)
        assert [select(ITEMS, durations, k, 25) for k in range(1, 26)] == [
            (sorted(g.selected, key=ITEMS.index), g.duration) for g in whole]
    original = LeastDurationAlgorithm.__call__
    asked: list[int] = []

    def bounded(self: Any, splits: int, items: list[Any], durations: dict[str, float]) -> Any:
        asked.append(splits)
        assert splits <= len(items), f"{splits} shards computed for {len(items)} tests"
        return original(self, splits, items, durations)

    monkeypatch.setattr(LeastDurationAlgorithm, "__call__", bounded)
    assert select(ITEMS, {}, 3, 10**9) == ([ITEMS[2]], 1.0)
    assert select(ITEMS, {}, 11, 10**9) == ([], 0.0)
    assert asked == [10]


def test_a_bad_durations_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    assert load_durations(path) == {}  # none recorded yet: split by count
    path.write_text(json.dumps([["a::b", 2]]))  # pytest-split's old format
    assert load_durations(path) == {"a::b": 2.0}
    for bad in ("{", '{"a::b": -1}', '{"a::b": "2"}', "[1, 2]", '{"a": true}'):
        path.write_text(bad)
        with pytest.raises(pytest.UsageError, match="durations file"):
            load_durations(path)


def _collected(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         *args], cwd=project, capture_output=True, text=True, timeout=60)


def test_bad_shard_option_stops_the_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_two.py").write_text("def test_a():\n    pass\n")
    proc = _collected(project, "--hil-shard", "3/2")
    assert proc.returncode == 4  # pytest's usage error
    assert "--hil-shard=3/2: K must be between 1 and N" in proc.stderr
    proc = _collected(project, "--hil-shard", "1/2", "--splits", "2", "--group", "1")
    assert proc.returncode == 4 and "give one" in proc.stderr


# ----------------------------------------------------------------------------- end to end

# Two modules of real scenarios on the virtual backend, a few seconds of work in all.
SUITE = ["suites/enrollment/test_certificates.py", "suites/console"]


def _run_pytest(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *SUITE, "-q", "-p", "no:cacheprovider",
         "--hil-backend=virtual", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen[str]]) -> None:
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(400)  # three pytest start-ups and ten scenarios, on a loaded machine
def test_two_shards_run_at_once_merge_into_the_unsharded_run(tmp_path: Path) -> None:
    durations = tmp_path / "durations.json"
    whole = tmp_path / "whole"
    _finish([_run_pytest(f"--alluredir={whole}", "--store-durations",
                         f"--durations-path={durations}")])
    assert len(json.loads(durations.read_text())) >= 10  # every scenario's time recorded
    shards = [tmp_path / "shard-1", tmp_path / "shard-2"]
    # at once, as two CI machines would; one of them under pytest-xdist
    _finish([_run_pytest(f"--alluredir={shards[0]}", "--hil-shard=1/2", "-n", "2",
                         f"--durations-path={durations}"),
             _run_pytest(f"--alluredir={shards[1]}", "--hil-shard=2/2",
                         f"--durations-path={durations}")])
    parts = [load_run(s) for s in shards]
    assert all(p.tests for p in parts)  # both shards ran something
    merged, unsharded = load_runs(shards), load_run(whole)
    assert sorted(merged.tests) == sorted(unsharded.tests)
    assert sorted(t.nodeid or "" for t in merged.tests.values()) == sorted(
        t.nodeid or "" for t in unsharded.tests.values())
    assert all(key.endswith("@virtual") for key in merged.tests)
    assert merged.environment["hil.shard"] == "1/2, 2/2"
    assert merged.totals() == unsharded.totals()
    out = tmp_path / "report"
    assert cli(["--current", *map(str, shards), "--baseline", str(whole),
                "--out", str(out)]) == 0
    comparison = json.loads((out / "summary.json").read_text())["comparison"]
    assert not comparison["sections"]["new_tests"] and not comparison["sections"]["removed"]


def test_allure_gets_the_shards_results_gathered_into_one_directory(tmp_path: Path) -> None:
    from wasmbed_hil.report.allure3 import AllureError, _gather

    one, two = tmp_path / "shard-1", tmp_path / "shard-2"
    result(one, "test_a", environment={"hil.shard": "1/2"})
    result(two, "test_b", environment={"hil.shard": "2/2"})
    gathered = _gather([one, two], tmp_path / "all")
    assert load_run(gathered).tests.keys() == load_runs([one, two]).tests.keys()
    assert (gathered / "environment.properties").read_text() == "hil.shard=1/2\n"  # the first
    clash = next(two.glob("*-result.json"))
    (one / clash.name).write_text("{}")  # one UUID, two different results
    with pytest.raises(AllureError, match="two results directories"):
        _gather([one, two], tmp_path / "again")
