"""A gateway with its control-plane agent as the deployed service (`wasmbed-hil gateway`), in
a process of its own, for `PlatformConfig(gateway_processes=True)`.

Its credentials come from the platform's fleet CA (`WORKDIR/tls`), its local cache is
`WORKDIR/state`, its output `WORKDIR/logs/NAME.{out,err}.log`. The device port is an
OS-chosen port of 127.0.0.1, reserved here before the service starts (a socket bound with
SO_REUSEPORT that never listens, as `gateway --processes` does), so the endpoint is known
before the service says it is ready and no other program can take the port meanwhile.

The service is configured by its command line only: of a GatewayConfig it takes
`heartbeat_interval_s`, `heartbeat_timeout_s`, `max_devices` and `pairing`; the rest are the
service's own settings (no protocol trace, a 10,000-event log).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..aio import reserve_port, reuse_port_supported
from ..gateway import GatewayConfig
from ..pki import FleetCA
from .process import ServiceProcess

#: How long the service has to say it is ready (its interpreter and imports first).
START_TIMEOUT_S = 60.0
HOST = "127.0.0.1"


class GatewayProcess:
    """`wasmbed-hil gateway` named `config.name` (module docstring)."""

    def __init__(self, ca: FleetCA, workdir: Path, kubeconfig: Path, namespace: str,
                 config: GatewayConfig) -> None:
        why = reuse_port_supported()
        if why is not None:
            raise RuntimeError(f"gateway_processes needs SO_REUSEPORT: {why}")
        self.name = config.name
        self.config = config
        self.workdir = workdir
        ca.issue_gateway(config.name, hosts=("localhost", HOST)).write(workdir / "tls")
        self._reserved = reserve_port(HOST, 0)
        self.endpoint: tuple[str, int] = (HOST, self._reserved.getsockname()[1])
        port = str(self.endpoint[1])
        argv = [sys.executable, "-m", "wasmbed_hil", "gateway", "--kubeconfig", str(kubeconfig),
                "--namespace", namespace, "--name", config.name,
                "--pki-dir", str(workdir / "tls"), "--state-dir", str(workdir / "state"),
                "--host", HOST, "--tls-port", port, "--reuse-port",
                "--endpoint", f"{HOST}:{port}", "--heartbeat", repr(config.heartbeat_interval_s),
                "--heartbeat-timeout", repr(config.heartbeat_timeout_s),
                "--max-devices", str(config.max_devices)]
        if config.pairing:
            argv.append("--pairing")
        self.process = ServiceProcess(config.name, argv, workdir / "logs", die_with_parent=True)

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self, timeout: float = START_TIMEOUT_S) -> GatewayProcess:
        self.process.start(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the agent writes the Gateway's last status), then the port's reservation;
        RuntimeError if the service had died before or needed SIGKILL."""
        try:
            self.process.stop(timeout)
        finally:
            self._reserved.close()
