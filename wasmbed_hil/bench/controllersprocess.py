"""The kopf controllers as a process of their own (`wasmbed-hil controllers`), as a cluster runs
them, with the harness's device manager served to them over HTTP (bench.machineservice).

The in-process platform runs kopf in a thread of the harness's process, where it shares one
interpreter lock with the API server, the gateways, their agents and every virtual device;
`PlatformConfig(controllers_process=True)` runs it here instead: the same controllers, the
same resources, a second core.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..controlplane.controllers import ControllerSettings
from ..pki import write_file
from .loop import LoopThread
from .machineservice import MachineService
from .process import ServiceProcess

#: The ControllerSettings fields `wasmbed-hil controllers` takes as options; the others keep
#: the command's defaults, so a platform asking for another value is refused.
PROCESS_SETTINGS = frozenset({"namespace", "gateway_stale_s", "metrics_port", "metrics_host"})
#: How long the process has to say it is ready (its interpreter and kopf's imports first).
START_TIMEOUT_S = 60.0


def check_process_settings(settings: ControllerSettings | None) -> None:
    """ValueError naming the fields of `settings` that a controllers process cannot take."""
    if settings is None:
        return
    default = ControllerSettings()
    other = [f.name for f in dataclasses.fields(settings)
             if f.name not in PROCESS_SETTINGS
             and getattr(settings, f.name) != getattr(default, f.name)]
    if other:
        raise ValueError("controllers_process: the controllers command takes only "
                         f"{', '.join(sorted(PROCESS_SETTINGS))}; not {', '.join(other)}")


class ControllersProcess:
    """`wasmbed-hil controllers` on `kubeconfig`, its machines from `service` (started here,
    on the harness loop); output in `workdir/logs/controllers.{out,err}.log`."""

    def __init__(self, loop: LoopThread, kubeconfig: Path, settings: ControllerSettings,
                 service: MachineService, workdir: Path) -> None:
        self.loop = loop
        self.kubeconfig = kubeconfig
        self.settings = settings
        self.service = service
        self.workdir = workdir
        self.process: ServiceProcess | None = None
        self.metrics_address: tuple[str, int] | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> ControllersProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        token_file = self.workdir / "machine-manager.token"
        write_file(token_file, self.service.token.encode(), 0o600)
        url = self.loop.run(self.service.start())
        s = self.settings
        argv = [sys.executable, "-m", "wasmbed_hil", "controllers",
                "--kubeconfig", str(self.kubeconfig), "--namespace", s.namespace,
                "--gateway-stale", repr(s.gateway_stale_s),
                "--machine-manager", url, "--machine-manager-token-file", str(token_file)]
        if s.metrics_port is not None:
            argv += ["--metrics-port", str(s.metrics_port), "--metrics-host", s.metrics_host]
        self.process = ServiceProcess("controllers", argv, self.workdir / "logs",
                                      ready=r"^ready controllers\b.*?(?:metrics_port=(\d+))?$",
                                      die_with_parent=True)
        try:
            ready = self.process.start(timeout).ready
        except BaseException:
            self.loop.run(self.service.stop())
            raise
        if ready is not None and ready.group(1):
            self.metrics_address = (s.metrics_host, int(ready.group(1)))
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (kopf stops its handlers cleanly), SIGKILL after `timeout`; then the
        machine service. RuntimeError if the process had died before, or needed SIGKILL
        (ServiceProcess.stop)."""
        try:
            if self.process is not None:
                process, self.process = self.process, None
                process.stop(timeout)
        finally:
            self.loop.run(self.service.stop())
