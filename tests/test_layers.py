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

# What only the bench, the pytest plugin and the Robot library may load.
BENCH_ONLY = ("wasmbed_hil.bench", "wasmbed_hil.pytest_plugin", "wasmbed_hil.robot",
              "wasmtime", "pytest", "_pytest", "xdist", "allure", "allure_commons", "robot")
# Third-party packages that only the bench or the tests need: not in the container image.
NOT_IN_IMAGE = ("wasmtime", "pytest", "xdist", "allure", "allure_commons", "allure_pytest",
                "robot", "kubernetes", "hypothesis")
PRODUCT = ("wasmbed_hil.gateway", "wasmbed_hil.controlplane.controllers",
           "wasmbed_hil.controlplane.rest", "wasmbed_hil.controlplane.agent",
           "wasmbed_hil.kube.crdgen")
DEPLOYED_COMMANDS = ("gateway", "controllers", "rest", "devices", "deploy")


def _python(code: str) -> object:
    """Run `code` in a fresh interpreter; it prints one JSON value last."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _newly_loaded(modules: tuple[str, ...]) -> dict[str, list[str]]:
    """For each module imported in turn: the modules its import added to sys.modules."""
    return _python(f"""
        import importlib, json, sys
        added = {{}}
        for name in {modules!r}:
            before = set(sys.modules)
            importlib.import_module(name)
            added[name] = sorted(set(sys.modules) - before)
        print(json.dumps(added))
    """)  # type: ignore[return-value]


def _bench(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in BENCH_ONLY or m.startswith(BENCH_ONLY)]


def test_product_modules_load_nothing_of_the_bench() -> None:
    added = _newly_loaded(PRODUCT)
    assert all(added[m] for m in PRODUCT[:1])  # the probe saw the first import happen
    leaks = {m: _bench(loaded)[:10] for m, loaded in added.items() if _bench(loaded)}
    assert leaks == {}, f"importing the product loads bench modules: {leaks}"


def test_the_probe_sees_bench_modules() -> None:
    """The check above can fail: the virtual backend does load wasmtime and the device."""
    added = _newly_loaded(("wasmbed_hil.bench.backends.virtual",))
    loaded = added["wasmbed_hil.bench.backends.virtual"]
    assert "wasmtime" in loaded and "wasmbed_hil.bench.virtual.device" in loaded
    assert _bench(loaded)


# The deployed services' commands as the image has them: the bench's packages absent.
_WITHOUT_BENCH = """
import contextlib, importlib.abc, io, json, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
{body}
"""


def test_deployed_commands_run_without_the_bench_packages() -> None:
    body = f"""
from wasmbed_hil.cli import main
seen = {{}}
for command in {DEPLOYED_COMMANDS!r}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([command, "--help"])
            code = 0
        except SystemExit as exc:
            code = exc.code
    seen[command] = [code, out.getvalue()[:200]]
print(json.dumps(seen))
"""
    seen = _python(_WITHOUT_BENCH.format(blocked=NOT_IN_IMAGE, body=body))
    assert isinstance(seen, dict)
    for command in DEPLOYED_COMMANDS:
        code, usage = seen[command]
        assert code == 0 and usage.startswith(f"usage: wasmbed-hil {command}"), (command, usage)


def test_bench_commands_without_the_bench_say_which_extra(tmp_path) -> None:
    argv = ["up", "-n", "1", "--exit-after-ready", "--workdir", str(tmp_path / "up")]
    body = f"""
from wasmbed_hil.cli import main
print(json.dumps(main({argv!r})))
"""
    out = subprocess.run([sys.executable, "-c", _WITHOUT_BENCH.format(blocked=NOT_IN_IMAGE,
                                                                      body=body)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == "3", out.stderr[-2000:]
    assert "wasmbed-hil up needs wasmtime, which is not installed" in out.stderr
    assert "pip install 'wasmbed-hil[bench]'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "up").exists()  # refused before anything was made


def test_plugin_without_the_bench_says_which_extra() -> None:
    code = _WITHOUT_BENCH.format(blocked=("wasmtime",), body="import wasmbed_hil.pytest_plugin")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "pip install 'wasmbed-hil[bench]'" in out.stderr
