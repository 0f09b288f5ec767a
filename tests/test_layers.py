"""The product stands without the test bench (docs/architecture.md).

The import contracts (.importlinter, run by `make lint`) check the source; these tests check
what really gets loaded, in fresh interpreters, and that the deployed services start with
none of the bench's third-party packages installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# What only the bench, the pytest plugin and the Robot library may load.
BENCH_ONLY = ("wasmbed_hil.bench", "wasmbed_hil.pytest_plugin", "wasmbed_hil.robot",
              "wasmtime", "pytest", "_pytest", "xdist", "allure", "allure_commons", "robot")
# Third-party packages that only the bench or the tests need: not in the container image.
NOT_IN_IMAGE = ("wasmtime", "pytest", "xdist", "allure", "allure_commons", "allure_pytest",
                "robot", "kubernetes", "hypothesis")


def _loaded_after(code: str) -> list[str]:
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", [
    "wasmbed_hil.gateway",
    "wasmbed_hil.controlplane.controllers",
    "wasmbed_hil.controlplane.rest",
    "wasmbed_hil.controlplane.agent",
    "wasmbed_hil.kube.crdgen",
])
def test_product_module_loads_nothing_of_the_bench(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert module in loaded
    leaked = [m for m in loaded if m.split(".")[0] in BENCH_ONLY or m.startswith(BENCH_ONLY)]
    assert leaked == [], f"importing {module} loads bench modules: {leaked[:10]}"


def test_the_probe_sees_bench_modules() -> None:
    """The check above can fail: the virtual backend does load the virtual device."""
    loaded = _loaded_after("import wasmbed_hil.bench.backends.virtual")
    assert "wasmtime" in loaded and "wasmbed_hil.bench.virtual.device" in loaded


# Runs the deployed services' commands as the image has them: the bench's packages absent.
_WITHOUT_BENCH = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from wasmbed_hil.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    sys.exit(exc.code)
"""


@pytest.mark.parametrize("command", ["gateway", "controllers", "rest", "devices", "deploy"])
def test_deployed_commands_run_without_the_bench_packages(command: str) -> None:
    code = _WITHOUT_BENCH.format(blocked=NOT_IN_IMAGE, argv=[command, "--help"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: wasmbed-hil " + command in out.stdout


def test_plugin_without_the_bench_says_which_extra() -> None:
    code = _WITHOUT_BENCH.replace("from wasmbed_hil.cli import main", "").replace(
        "try:\n    main({argv!r})\nexcept SystemExit as exc:\n    sys.exit(exc.code)\n",
        "import wasmbed_hil.pytest_plugin\n",
    ).format(blocked=("wasmtime",))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "pip install 'wasmbed-hil[bench]'" in out.stderr
