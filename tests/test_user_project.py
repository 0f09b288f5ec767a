"""The harness used as a user would: from its built wheel, in a virtualenv and a project of
their own outside this repository.

The module builds the wheel from a copy of this working tree, makes a venv in a temporary
folder, installs ``<wheel>[qemu]`` (pip's own cache keeps it fast), writes a small project
(its own tests: enroll, deploy its own WAT file, silence a device, a backend_specific test)
and runs it with ``pytest -n 2 --strict-markers`` on the virtual backend and on qemu (qemu
skipped with the reason where qemu or the Arm toolchain are missing). The firmware is built
by the installed ``wasmbed-hil firmware build`` into ``$WASMBED_HIL_CACHE`` (pointed into the
temporary folder), and site-packages must hold exactly the wheel's files afterwards.

Slow (a wheel, a venv, an install, and on qemu a firmware build): minutes, not seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from wasmbed_hil import resources
from wasmbed_hil.bench.backends import get_backend
from wasmbed_hil.bench.firmware import build

ROOT = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 900

pytestmark = [
    pytest.mark.timeout(3 * RUN_TIMEOUT),
    pytest.mark.skipif(not resources.from_checkout(), reason="builds the wheel from a checkout"),
]


@dataclass
class Installed:
    """A venv outside the repository with the built wheel installed in it."""

    root: Path  # the temporary folder holding everything below
    wheel: Path
    venv: Path
    cache: Path  # $WASMBED_HIL_CACHE of every command run here

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def site_packages(self) -> Path:
        out = self.run([str(self.bin / "python"), "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        return Path(out.stdout.strip())

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "WASMBED_", "VIRTUAL_ENV", "PYTHON"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["WASMBED_HIL_CACHE"] = str(self.cache)
        return env

    def run(self, cmd: list[str], cwd: Path | None = None, timeout: float = RUN_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, cwd=cwd or self.root, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc


def _copy_sources(dest: Path) -> None:
    """The working tree as git sees it (tracked and new files, nothing ignored), so the wheel
    is built from what would be committed and the build leaves nothing in the checkout."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, timeout=60, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # a file deleted in the work tree is still listed as cached
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _seed_deps(cache: Path) -> None:
    """Hand the pinned archives this checkout already fetched to the new cache (fetch_deps
    checks their SHA-256 and unpacks them there; without them it downloads, as for a user)."""
    downloads = resources.firmware_deps_dir() / "downloads"
    if not downloads.is_dir():
        return
    target = cache / "firmware-deps" / "downloads"
    target.mkdir(parents=True, exist_ok=True)
    for archive in downloads.iterdir():
        if archive.is_file():
            (target / archive.name).symlink_to(archive)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("user-project")
    assert not root.resolve().is_relative_to(ROOT), "the venv must be outside the repository"
    src, dist = root / "src", root / "dist"
    _copy_sources(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(src)], check=True, timeout=INSTALL_TIMEOUT, capture_output=True)
    (wheel,) = dist.glob("wasmbed_hil-*.whl")
    shutil.rmtree(src)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    inst = Installed(root, wheel, root / "venv", root / "cache")
    _seed_deps(inst.cache)
    inst.run([str(inst.bin / "python"), "-m", "pip", "install", "-q", f"{wheel}[qemu]"],
             timeout=INSTALL_TIMEOUT)
    _write_project(root / "project")
    return inst


DOUBLE_WAT = """\
;; the user's own module: main(x) = 2 * x
(module
  (func (export "main") (param $x i32) (result i32)
    (i32.mul (local.get $x) (i32.const 2))))
"""

USER_TESTS = '''\
"""A user's own tests, written against the installed wasmbed-hil plugin."""

from pathlib import Path

import pytest

from wasmbed_hil.protocol import DevicePhase, Outcome

MODULES = Path(__file__).parent / "modules"


def test_device_enrolls_and_connects(gateway, device):
    status = gateway.wait_phase(device, DevicePhase.CONNECTED)
    assert status.device_id == device.device_id
    assert status.history[:3] == [DevicePhase.ENROLLING, DevicePhase.ENROLLED,
                                  DevicePhase.CONNECTED]


def test_our_own_module_doubles(gateway, device, wasm):
    result = gateway.run(device, wasm.from_file(MODULES / "double.wat"), "doubler", args=(21,))
    assert result.outcome is Outcome.RETURNED
    assert result.values == (42,)


def test_a_silenced_device_is_noticed_by_the_gateway(gateway, device):
    gateway.wait_heartbeats(device, 1)
    device.faults.silence(True)
    gateway.wait_phase(device, DevicePhase.UNREACHABLE)
    assert gateway.metrics()["heartbeat_timeouts"] >= 1


@pytest.mark.backend_specific("virtual", reason="reads the virtual device's own stats")
def test_only_on_virtual(device):
    assert device.stats()["connections"] == 1
'''


def _write_project(project: Path) -> None:
    (project / "tests" / "modules").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (project / "tests" / "modules" / "double.wat").write_text(DOUBLE_WAT)
    (project / "tests" / "test_my_device.py").write_text(USER_TESTS)
    git = ["git", "-C", str(project), "-c", "user.name=user", "-c", "user.email=user@example"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "add", "."], check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "-m", "my project"], check=True, timeout=60)


def _project_commit(project: Path) -> str:
    return subprocess.run(["git", "-C", str(project), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def _run_project(inst: Installed, backend: str) -> subprocess.CompletedProcess[str]:
    project = inst.root / "project"
    return inst.run([str(inst.bin / "python"), "-m", "pytest", "-n", "2", "--strict-markers",
                     "-rs", f"--hil-backend={backend}", f"--junitxml={inst.root / backend}.xml"],
                    cwd=project)


def _only_wheel_files(inst: Installed) -> None:
    """site-packages holds the installed wheel's files and nothing more (no firmware/build,
    no fetched deps): every file under wasmbed_hil/ is in the RECORD, bytecode aside."""
    site = inst.site_packages()
    (dist_info,) = site.glob("wasmbed_hil-*.dist-info")
    with (dist_info / "RECORD").open() as fh:
        recorded = {row[0] for row in csv.reader(fh) if row}
    extra = sorted(str(p.relative_to(site)) for p in (site / "wasmbed_hil").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts
                   and str(p.relative_to(site)) not in recorded)
    assert extra == [], f"written into site-packages: {extra[:20]}"
    assert not list(site.rglob("firmware/build")), "a firmware build dir in site-packages"


def test_the_wheel_carries_what_the_plugin_needs(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for needed in ("wasmbed_hil/_data/firmware/Makefile",
                   "wasmbed_hil/_data/firmware/deps.lock",
                   "wasmbed_hil/_data/firmware/scripts/fetch_deps.py",
                   "wasmbed_hil/_data/firmware/ports/mps2-an385/board.mk",
                   "wasmbed_hil/_data/renode/mps2-an385.repl",
                   "wasmbed_hil/_data/renode/wasmbed-device.resc",
                   "wasmbed_hil/_data/crds/devices.wasmbed.github.io.yaml",
                   "wasmbed_hil/robot/wasmbed.resource",
                   "wasmbed_hil/bench/modules/add.wat",
                   "wasmbed_hil/protocol/protocol.cddl"):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if "/build/" in n or n.endswith((".o", ".elf", ".a"))]
    version = installed.run([str(installed.bin / "wasmbed-hil"), "--version"]).stdout
    assert version.strip() == f"wasmbed-hil {resources.package_version()}"


def test_a_users_project_passes_on_virtual(installed):
    proc = _run_project(installed, "virtual")
    assert "4 passed" in proc.stdout, proc.stdout[-3000:]
    commit = _project_commit(installed.root / "project")
    assert f"(commit {commit})" in proc.stdout  # provenance: the user's project, not ours
    _only_wheel_files(installed)


def test_a_users_project_passes_on_qemu(installed):
    missing = build.missing_tools()
    reason = get_backend("qemu").unavailable_reason()
    if missing or reason:
        pytest.skip(f"qemu backend unavailable here: {reason or ', '.join(missing)}")
    built = installed.run([str(installed.bin / "wasmbed-hil"), "firmware", "build",
                           "-o", "json"])
    elf = Path(json.loads(built.stdout)["elf"])
    assert elf.is_file()
    assert elf.is_relative_to(installed.cache / "firmware" / "build"), elf
    proc = _run_project(installed, "qemu")
    assert "3 passed, 1 skipped" in proc.stdout, proc.stdout[-3000:]
    assert "only on virtual: reads the virtual device's own stats" in proc.stdout
    up = installed.run([str(installed.bin / "wasmbed-hil"), "up", "--backend", "qemu", "-n", "1",
                        "--port", "0", "--timeout", "120", "--exit-after-ready",
                        "--workdir", str(installed.root / "up")], check=False)
    assert up.returncode == 0, f"wasmbed-hil up exited {up.returncode}:\n{up.stdout[-3000:]}"
    _only_wheel_files(installed)
