"""Deployments: WebAssembly modules to devices, their runs under limits, the results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword
from robot.utils import is_truthy

from ...bench import modules
from ...bench.scope import slug
from ...gateway import RunRequest, StoredResult
from ...protocol import Limits
from .. import arguments
from ..arguments import Deadline, Timeout
from .component import LibraryComponent

Values = list[int | float] | int | float | None


def load_module(module: str | bytes) -> tuple[bytes, str]:
    """Module bytes and a default app id from a module name, ``data:SIZE[:SEED]`` or a
    .wasm/.wat path."""
    if isinstance(module, bytes):
        return module, "app"
    if module in modules.names():
        return modules.build(module), module
    if m := re.fullmatch(r"data:(\d+)(?::(\d+))?", module):
        size, seed = int(m.group(1)), int(m.group(2) or 0)
        return modules.data_module(size, seed), "data"
    path = Path(module)
    if path.suffix in (".wasm", ".wat"):
        if not path.is_file():
            raise AssertionError(f"module file {path} not found")
        data = path.read_bytes()
        if path.suffix == ".wat":
            data = modules.from_wat(data.decode("utf-8"))
        return data, slug(path.stem)
    raise AssertionError(
        f"unknown module {module!r}: a name from wasmbed_hil/bench/modules "
        f"({', '.join(modules.names())}), data:SIZE[:SEED] or a path to a .wasm or .wat file"
    )


def limits(fuel: int | None, memory: int | None, time_limit: float | None) -> Limits | None:
    given: dict[str, int] = {}
    if fuel is not None:
        given["fuel"] = int(fuel)
    if memory is not None:
        given["memory_bytes"] = int(memory)
    if time_limit is not None:
        given["timeout_ms"] = round(time_limit * 1000)
    return Limits(**given) if given else None


def check_result(
    name: str, result: StoredResult, outcome: str | None, values: Values, detail: str | None
) -> tuple[str, list[int | float]]:
    got = list(result.values)
    summary = (
        f"{result.app_id} on {name} (run {result.run_id}): {result.outcome.name} {got}, "
        f"fuel {result.fuel_used}, {result.duration_us} us"
        + (f", detail: {result.detail}" if result.detail else "")
    )
    logger.info(summary)
    if outcome is not None and result.outcome is not arguments.outcome(outcome):
        raise AssertionError(f"expected {arguments.outcome(outcome).name}; {summary}")
    if values is not None:
        want = list(values) if isinstance(values, list | tuple) else [values]
        if got != want:
            raise AssertionError(f"expected values {want}; {summary}")
    if detail is not None and str(detail).lower() not in result.detail.lower():
        raise AssertionError(f"expected a detail containing {detail!r}; {summary}")
    return result.outcome.name, got


class DeploymentKeywords(LibraryComponent):
    @keyword
    def deploy_module(
        self,
        module: str,
        *args: int | float,
        app_id: str | None = None,
        device: str | None = None,
        entry: str | None = None,
        fuel: int | None = None,
        memory: int | None = None,
        time_limit: Timeout = None,
        wait: bool = True,
        expected_error: str | None = None,
        timeout: Timeout = None,
    ) -> str:
        """Deploys a WebAssembly module to a device and, with ``entry`` (or ``args``, then
        entry ``main``), starts one run once it is installed.

        ``module``: a name from wasmbed_hil/bench/modules (``add``, ``trap``, ``spin``, ``fib``...)
        or a path to a .wasm or .wat file, or ``data:SIZE[:SEED]``: a module carrying SIZE
        bytes whose ``checksum`` entry returns their sum (`Get Data Checksum`).
        ``args``: the entry's arguments. ``app_id`` defaults to the module's name.
        Limits: ``fuel`` (instructions, 0 = unmetered), ``memory`` (bytes), ``time_limit``
        (wall clock of a run).

        Waits until the deployment ends (``wait=False``: returns at once, e.g. for a device
        that is offline) and fails when it failed, unless ``expected_error`` names the error
        code it must fail with (``MODULE_TOO_LARGE``...). Returns the deployment's state.

        | Deploy Module    add    40    2    app_id=adder
        | Deploy Module    ${CURDIR}/blink.wat    entry=run    fuel=1000000
        """
        dev = self.ctx.device(device)
        name, handle, gw = dev.name, dev.handle, dev.gateway
        data, default_app = load_module(module)
        app_id = app_id or default_app
        if entry is None and args:
            entry = "main"
        run = RunRequest(entry, tuple(args)) if entry else None
        run_time = None if time_limit is None else self.seconds(time_limit)
        run_limits = limits(fuel, memory, run_time)
        seconds = self.seconds(timeout)
        with self.ctx.evidence(handle):
            dep = gw.deploy(handle, data, app_id, wait=False, limits=run_limits, run=run)
            dev.deployments[app_id] = dep
            dev.last_app = app_id
            dev.results.pop(app_id, None)
            if not is_truthy(wait):
                if expected_error is not None:
                    raise AssertionError("expected_error needs wait=True")
                return dep.state
            gw.wait_deployment(dep, seconds)
        logger.info(
            f"deployment of {app_id} ({len(data)} bytes) to {name}: {dep.state}, "
            f"{dep.bytes_sent} bytes in {dep.chunks_sent} chunks"
            + (f", {dep.error_code.name}: {dep.error}" if dep.error_code else "")
        )
        if expected_error is not None:
            want = arguments.error_code(expected_error)
            if dep.state != "failed" or dep.error_code is not want:
                got = dep.error_code.name if dep.error_code else dep.state
                raise AssertionError(
                    f"deployment of {app_id} to {name} should have failed with {want.name}, "
                    f"got {got} {dep.error}".rstrip()
                )
        elif dep.state != "installed":
            code = dep.error_code.name if dep.error_code else "?"
            raise AssertionError(f"deployment of {app_id} to {name} failed: {code}: {dep.error}")
        return dep.state

    @keyword
    def get_data_checksum(self, size: int, seed: int = 0) -> int:
        """What the ``checksum`` entry of module ``data:SIZE[:SEED]`` returns when its data
        arrived intact.

        | ${sum}=    Get Data Checksum    40000
        | Run Module    data:40000    entry=checksum    values=${sum}
        """
        value = modules.data_checksum(int(size), int(seed))
        return value - (1 << 32) if value >= 1 << 31 else value  # the module's i32 is signed

    @keyword
    def wait_for_execution_result(
        self,
        app_id: str | None = None,
        device: str | None = None,
        outcome: str | None = None,
        values: Values = None,
        detail: str | None = None,
        timeout: Timeout = None,
    ) -> tuple[str, list[int | float]]:
        """Waits for the result of the run that the last `Deploy Module` of ``app_id`` (default:
        the app deployed last to the device) started; returns its outcome and values.

        Outcomes: RETURNED, TRAPPED, OUT_OF_FUEL, OUT_OF_MEMORY, TIMED_OUT, STOPPED,
        LOAD_FAILED. Given ``outcome``, ``values`` (a list such as ``[42]``, or one number)
        or ``detail`` (text the result's detail must contain, case-insensitively), it fails
        when the result differs, saying what it was.

        | ${outcome}    ${values}=    Wait For Execution Result    adder
        | Wait For Execution Result    adder    outcome=RETURNED    values=[42]
        """
        dev = self.ctx.device(device)
        name, handle, gw = dev.name, dev.handle, dev.gateway
        app_id = app_id or dev.last_app
        if app_id is None:
            raise AssertionError(f"nothing was deployed to {name}: use 'Deploy Module' first")
        deadline = Deadline(self.seconds(timeout))
        dep = dev.deployments.get(app_id)
        run_id: int | None = None
        with self.ctx.evidence(handle):
            if dep is not None:
                if dep.run is None:
                    raise AssertionError(
                        f"the deployment of {app_id} to {name} starts no run: give 'Deploy "
                        "Module' an entry or arguments, or use 'Run Module'"
                    )
                gw.wait_deployment(dep, deadline.left())
                if dep.state != "installed":
                    code = dep.error_code.name if dep.error_code else "?"
                    raise AssertionError(
                        f"deployment of {app_id} to {name} failed: {code}: {dep.error}"
                    )
                run_id = gw.wait_run_started(dep, deadline.left(), label=name)
            result = gw.wait_result(handle, app_id, run_id, deadline.left())
        dev.results[app_id] = result
        return check_result(name, result, outcome, values, detail)

    @keyword
    def run_module(
        self,
        module: str,
        *args: int | float,
        app_id: str | None = None,
        device: str | None = None,
        entry: str = "main",
        fuel: int | None = None,
        memory: int | None = None,
        time_limit: Timeout = None,
        outcome: str | None = None,
        values: Values = None,
        detail: str | None = None,
        timeout: Timeout = None,
    ) -> tuple[str, list[int | float]]:
        """`Deploy Module` and `Wait For Execution Result` in one, within one ``timeout``:
        deploys, runs ``entry`` (default ``main``) with ``args`` and returns the outcome and
        the values, checked against ``outcome``, ``values`` and ``detail`` when given.

        | Run Module    add    40    2    outcome=RETURNED    values=[42]
        | Run Module    spin    fuel=200000    time_limit=10s    outcome=OUT_OF_FUEL
        """
        deadline = Deadline(self.seconds(timeout))
        name = self.ctx.device(device).name
        _, default_app = load_module(module)
        app_id = app_id or default_app
        self.deploy_module(
            module, *args, app_id=app_id, device=name, entry=entry, fuel=fuel, memory=memory,
            time_limit=time_limit, timeout=deadline.left(),
        )
        return self.wait_for_execution_result(
            app_id, name, outcome=outcome, values=values, detail=detail, timeout=deadline.left()
        )

    @keyword
    def get_execution_result(
        self, app_id: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        """The last result that `Wait For Execution Result` or `Run Module` got for ``app_id``
        on the device, as a dictionary: outcome, values, detail, log (text), fuel_used,
        duration_us, run_id."""
        dev = self.ctx.device(device)
        app_id = app_id or dev.last_app
        result = dev.results.get(app_id or "")
        if result is None:
            raise AssertionError(f"no execution result of {app_id} on {dev.name} yet")
        return {
            "outcome": result.outcome.name,
            "values": list(result.values),
            "detail": result.detail,
            "log": result.log.decode("utf-8", "replace"),
            "fuel_used": result.fuel_used,
            "duration_us": result.duration_us,
            "run_id": result.run_id,
        }
