"""The plugin in a project of its own (a temporary folder, not this repository): its markers
under --strict-markers, a docstring for every fixture, the leaked-child-process guard (on by
default, off with --hil-no-leak-check, per worker under xdist) and the provenance of the
project under test. Plus where wasmbed_hil.resources puts things, and --version."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wasmbed_hil import resources
from wasmbed_hil.bench.firmware import build
from wasmbed_hil.cli import main
from wasmbed_hil.pytest_plugin import MARKERS

PLUGIN_FIXTURES = ("hil_fault_seed", "fault_rng", "converged", "hil_timeout", "hil_loop",
                   "fleet_ca", "hil_backend_name", "hil_scope", "hil_backend", "gateway_config",
                   "gateway", "device_factory", "device", "fleet", "control_plane", "wasm")


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "WASMBED_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _project(tmp_path: Path, tests: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_it.py").write_text(tests)
    return project


MARKED = '''
import pytest

@pytest.mark.backend_specific("virtual", reason="the virtual backend's own")
@pytest.mark.hil_gateway(pairing=True)
@pytest.mark.hil_platform(gateways=1)
@pytest.mark.hil_fault("silence")
def test_marked():
    pass
'''


def test_the_plugins_markers_pass_strict_markers_in_a_users_project(tmp_path):
    project = _project(tmp_path, MARKED)
    proc = _pytest(project, "--strict-markers", "-W", "error::pytest.PytestUnknownMarkWarning")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 passed" in proc.stdout
    listed = _pytest(project, "--markers").stdout
    for name in MARKERS:
        assert f"@pytest.mark.{name}(" in listed, name


def test_an_unknown_marker_still_fails_strict_markers(tmp_path):
    """The check above can fail: strict markers do reject what nobody registered."""
    project = _project(tmp_path, MARKED.replace("hil_fault", "hil_nonesuch"))
    proc = _pytest(project, "--strict-markers")
    assert proc.returncode != 0
    assert "'hil_nonesuch' not found in `markers` configuration option" in proc.stdout


def test_every_fixture_of_the_plugin_has_a_docstring(tmp_path):
    out = _pytest(_project(tmp_path, ""), "--fixtures").stdout
    section = out.split("fixtures defined from wasmbed_hil.pytest_plugin", 1)[1]
    section = re.split(r"\n-{5,} fixtures defined from ", section)[0]
    assert "no docstring available" not in section
    for name in PLUGIN_FIXTURES:
        assert re.search(rf"^{name}( \[session scope\])? -- ", section, re.M), name


LEAKY = '''
import subprocess
from pathlib import Path

def test_leaks_a_child(tmp_path):
    child = subprocess.Popen(["sleep", "300"])
    Path({pidfile!r}).write_text(str(child.pid))
'''


@pytest.fixture
def leaky_project(tmp_path):
    """A project whose one test starts `sleep 300` and leaves it running; the pid is killed
    at teardown, whatever the test saw."""
    pidfile = tmp_path / "leaked.pid"
    project = _project(tmp_path, LEAKY.format(pidfile=str(pidfile)))
    yield project, pidfile
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_leaked_child_process_fails_the_run_and_is_named(leaky_project, workers):
    project, pidfile = leaky_project
    proc = _pytest(project, *workers)
    assert "1 passed" in proc.stdout
    assert proc.returncode == 1, proc.stdout[-2000:]
    pid = pidfile.read_text()
    assert re.search(rf"^  {pid} \(running\) sleep 300", proc.stdout, re.M), proc.stdout[-2000:]
    if workers:
        assert f"{pid} (running) sleep 300 [worker gw" in proc.stdout


def test_the_leak_check_can_be_turned_off(leaky_project):
    project, _ = leaky_project
    proc = _pytest(project, "--hil-no-leak-check")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "child processes left behind" not in proc.stdout


def test_provenance_is_the_users_project_commit(tmp_path):
    project = _project(tmp_path, "def test_ok():\n    pass\n")
    plain = _pytest(project)
    assert f"project: {project} (commit no git)" in plain.stdout
    git = ["git", "-C", str(project), "-c", "user.name=u", "-c", "user.email=u@example"]
    for step in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "mine"]):
        subprocess.run([*git, *step], check=True, capture_output=True, timeout=60)
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True, timeout=60).stdout.strip()
    proc = _pytest(project, f"--alluredir={tmp_path / 'allure'}")
    assert f"project: {project} (commit {commit})" in proc.stdout
    assert f"wasmbed-hil {resources.package_version()}" in proc.stdout
    props = dict(line.split("=", 1) for line in
                 (tmp_path / "allure" / "environment.properties").read_text().splitlines())
    assert props["commit"] == commit
    assert props["wasmbed-hil"].startswith(resources.package_version())


# ------------------------------------------------------------------------------ resources


def test_the_cache_follows_wasmbed_hil_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("WASMBED_HIL_CACHE", str(tmp_path / "mine"))
    assert resources.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("WASMBED_HIL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resources.cache_dir() == tmp_path / "xdg" / "wasmbed-hil" / resources.package_version()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resources.cache_dir() == (tmp_path / "home" / ".cache" / "wasmbed-hil"
                                     / resources.package_version())


def test_a_relative_cache_is_refused(monkeypatch):
    monkeypatch.setenv("WASMBED_HIL_CACHE", "relative/dir")
    with pytest.raises(ValueError, match="WASMBED_HIL_CACHE='relative/dir': give an absolute"):
        resources.cache_dir()


def test_a_checkout_builds_in_place_unless_the_cache_is_set(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parents[1]
    assert resources.from_checkout()
    monkeypatch.delenv("WASMBED_HIL_CACHE", raising=False)
    assert resources.firmware_dir() == root / "firmware"
    assert resources.firmware_build_dir() == root / "firmware" / "build"
    assert resources.firmware_deps_dir() == root / ".cache" / "firmware-deps"
    assert resources.renode_dir() == root / "renode"
    assert resources.crds_dir() == root / "deploy" / "crds"
    assert resources.robot_resource() == root / "robot" / "wasmbed.resource"
    monkeypatch.setenv("WASMBED_HIL_CACHE", str(tmp_path))
    assert resources.firmware_build_dir() == tmp_path / "firmware" / "build"
    assert resources.firmware_deps_dir() == tmp_path / "firmware-deps"


def test_make_is_told_the_build_and_deps_directories(monkeypatch, tmp_path):
    seen: list[list[str]] = []

    def fake_run(cmd, **_):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(build, "DEPS_DIR", tmp_path / "deps")
    monkeypatch.setattr(build.subprocess, "run", fake_run)
    build.run_make(["BOARD=mps2-an385"])
    (cmd,) = seen
    assert f"WB_BUILD_ROOT={tmp_path / 'build'}" in cmd
    assert f"WB_DEPS_DIR={tmp_path / 'deps'}" in cmd
    assert f"PYTHON={sys.executable}" in cmd
    assert (tmp_path / "build" / ".lock").is_file()  # the lock lives in the build dir


def test_fetch_deps_needs_a_cache_outside_a_checkout(tmp_path):
    """An installed copy of the firmware sources must not fetch into site-packages."""
    copy = tmp_path / "pkg" / "firmware" / "scripts"
    copy.mkdir(parents=True)
    script = resources.firmware_dir() / "scripts" / "fetch_deps.py"
    (copy / "fetch_deps.py").write_text(script.read_text())
    proc = subprocess.run([sys.executable, str(copy / "fetch_deps.py")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--cache DIR is required outside a checkout" in proc.stderr
    assert sorted((tmp_path / "pkg").rglob("*")) == [copy.parent, copy, copy / "fetch_deps.py"]


def test_version_names_the_package_and_the_checkout(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"wasmbed-hil {re.escape(resources.package_version())} "
                        r"\(checkout [0-9a-f]{7,}(\+dirty)?\)", out), out
