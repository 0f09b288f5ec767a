"""One default backend everywhere: bench.backends DEFAULT_BACKEND is the default of pytest,
Robot, `wasmbed-hil up` and the platform; `make hil` names it first, then the firmware's;
the README says it once."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

from wasmbed_hil.bench.backends import DEFAULT_BACKEND, backend_names
from wasmbed_hil.bench.platform import Platform
from wasmbed_hil.cli import parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_backend_is_virtual() -> None:
    assert DEFAULT_BACKEND == "virtual" and DEFAULT_BACKEND in backend_names()


def test_pytest_defaults_to_it(tmp_path: Path) -> None:
    (tmp_path / "test_which.py").write_text(
        "def test_which(request):\n"
        "    print('BACKEND=' + request.config.getoption('--hil-backend'))\n")
    env = {k: v for k, v in os.environ.items() if k != "WASMBED_HIL_BACKEND"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly",
                           "-p", "no:cacheprovider", str(tmp_path / "test_which.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"BACKEND={DEFAULT_BACKEND}" in done.stdout


def test_up_and_the_platform_default_to_it() -> None:
    assert parser().parse_args(["up"]).backend == DEFAULT_BACKEND
    default = inspect.signature(Platform.create_device).parameters["backend"].default
    assert default == DEFAULT_BACKEND


def test_robot_defaults_to_it() -> None:
    resource = (ROOT / "robot" / "wasmbed.resource").read_text()
    (value,) = re.findall(r"^\$\{BACKEND\}\s+(\S+)\s*$", resource, re.MULTILINE)
    assert value == DEFAULT_BACKEND


def test_make_hil_names_the_default_then_the_firmware_backend() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (value,) = re.findall(r"^BACKENDS \?= \$\(if \$\(BACKEND\),\$\(BACKEND\),([^)]*)\)$",
                          makefile, re.MULTILINE)
    assert value.split() == [DEFAULT_BACKEND, "qemu"]
    assert "--hil-backend=$$backend" in makefile


def test_the_readme_states_it_once() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count("The default backend is\n`virtual`") == 1
    assert not re.search(r"default of `(make hil|pytest --hil-backend)`", readme)
