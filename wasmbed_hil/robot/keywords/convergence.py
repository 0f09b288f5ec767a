"""The convergence oracle (bench.convergence) as keywords: say what the fleet should look
like, then check that the devices, their gateways and what they recorded agree with it."""

from __future__ import annotations

from robot.api import logger
from robot.api.deco import keyword

from ...bench.convergence import ConvergenceOracle, DesiredState, NotConverged
from ..arguments import Timeout
from .component import LibraryComponent
from .deployment import load_module


class ConvergenceKeywords(LibraryComponent):
    def __init__(self, ctx: object) -> None:
        super().__init__(ctx)  # type: ignore[arg-type]
        self._desired = DesiredState()

    @keyword
    def device_should_hold(self, module: str, app_id: str | None = None,
                           device: str | None = None) -> None:
        """Adds to the desired state of the next `Fleet Should Converge`: the device holds
        ``module`` (a module name, ``data:SIZE[:SEED]`` or a file) as ``app_id``. A device
        named in the desired state must hold exactly the modules named for it."""
        data, default_app = load_module(module)
        self._desired.install(self.ctx.device(device).name, app_id or default_app, data)

    @keyword
    def device_should_have_results(self, app_id: str, count: int = 1,
                                   device: str | None = None) -> None:
        """Adds to the desired state of the next `Fleet Should Converge`: the gateway holds
        exactly ``count`` results of ``app_id`` from the device (none lost, none twice)."""
        self._desired.run(self.ctx.device(device).name, app_id, int(count))

    @keyword
    def fleet_should_converge(self, timeout: Timeout = None) -> float:
        """Waits (on events) until every device the library knows and its gateway agree:
        powered devices connected and heartbeating, no deployment in flight, every started
        run with exactly one result, the modules of the desired state installed (`Device
        Should Hold`, `Device Should Have Results`). Returns the seconds it took.

        On failure, names the sources that disagree and logs what each of them showed. The
        desired state is cleared either way.

        | Device Should Hold    add    app_id=adder
        | Device Should Have Results    adder    1
        | Fleet Should Converge    timeout=20s
        """
        desired, self._desired = self._desired, DesiredState()
        devices = [self.ctx.device(name).handle for name in self.ctx.device_names()]
        gateways = [self.ctx.gateway(name)[1] for name in self.ctx.gateway_names()]
        if not gateways:
            raise AssertionError("no gateway: start one with 'Start Gateway'")
        oracle = ConvergenceOracle(gateways[0].loop, gateways=gateways, devices=devices)
        try:
            done = oracle.wait(self.seconds(timeout), desired)
        except NotConverged as exc:
            for name, text in exc.evidence.items():
                logger.info(f"{name}:\n{text}")
            raise
        logger.info(f"converged in {done.elapsed_s:.3f}s: {done.devices} device(s), "
                    f"{done.results} result(s)")
        return done.elapsed_s
