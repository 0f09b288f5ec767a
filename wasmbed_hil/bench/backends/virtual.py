"""The virtual backend: VirtualDevice instances on the harness loop.

Each device dials its gateway through its own relay (a FaultProxy, bench.link.faultproxy):
the byte pump every firmware device's bytes cross too, so `device.link.impair(...)` works
on virtual devices as on QEMU and Renode ones. The relay is on by default; ``relay=False``
(a create option) or ``WASMBED_VIRTUAL_RELAY=0`` (``--virtual-relay=0``) makes devices dial
the gateway directly, for fleets where the extra hop's cost matters (benchmarks/bench_link.py
measures it) and no impairment is wanted.
"""

from __future__ import annotations

import platform as host_platform
from contextlib import AbstractContextManager
from dataclasses import fields
from pathlib import Path
from typing import Any

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..consolelog import ConsoleLog
from ..device import DeviceHandle, Faults, Lifecycle
from ..errors import MachineError
from ..link.faultproxy import FaultProxy
from ..link.pump import Impairment
from ..linkhandle import LinkHandle
from ..loop import LoopThread
from ..points import DeviceAction
from ..virtual.device import VirtualDevice, VirtualDeviceConfig
from .base import Backend, BackendOption, register

RELAY = BackendOption(
    "--virtual-relay", "WASMBED_VIRTUAL_RELAY",
    "1 (default): each virtual device dials its gateway through a relay that carries link "
    "impairments; 0: directly",
)


def relay_default() -> bool:
    value = (RELAY.value() or "1").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{RELAY.env}={value!r}: expected 1 or 0")


class VirtualFaults(Faults):
    """Every fault: the virtual device is the reference model, with a hook for each."""

    def __init__(self, handle: VirtualDeviceHandle) -> None:
        super().__init__(handle.backend)
        self._handle = handle
        self._device = handle.device
        self._loop = handle.loop

    def silence(self, silent: bool = True) -> None:
        self._loop.call(self._device.set_silent, silent)

    def enroll_with(self, credentials: Credentials | None) -> None:
        self._device.faults.enroll_with = credentials

    def corrupt_proof(self, corrupt: bool = True) -> None:
        self._device.faults.corrupt_proof = corrupt

    def drop_link_after_chunks(self, chunks: int | None) -> None:
        self._device.faults.drop_after_chunks = chunks

    def cut_link(self) -> None:
        self._loop.call(self._device.drop_link)  # DeviceHandle.on_loop("cut_link") likewise

    def impair(self, impairment: Impairment) -> AbstractContextManager[Impairment]:
        return self._handle.link.impair(impairment)  # one path: the device's LinkHandle


class VirtualDeviceHandle(DeviceHandle):
    def __init__(self, backend: VirtualBackend, device: VirtualDevice,
                 relay: FaultProxy | None = None) -> None:
        super().__init__(device.config.name, device.credentials)
        self.backend = backend.name
        self._loop = backend.loop
        self._backend = backend
        self.device = device
        self.relay = relay
        if relay is not None:
            self._link_handle = LinkHandle(backend.loop, relay, device.config.name)
        self._faults = VirtualFaults(self)
        self._closed = False

    @property
    def device_id(self) -> str | None:
        return self.device.device_id

    @property
    def lifecycle(self) -> Lifecycle:
        return self.device.lifecycle

    @property
    def console_log(self) -> ConsoleLog:
        return self.device.console

    def console_records(self) -> list[tuple[float, str]]:
        return self.device.console.timed()

    @property
    def last_reject(self) -> tuple[ErrorCode, str] | None:
        return self.device.last_reject

    @property
    def faults(self) -> Faults:
        return self._faults

    async def on_loop(self, action: DeviceAction) -> None:
        if self._closed and action in ("power_on", "reset", "reboot"):
            # A trigger's power-on (bench.points) after the test's teardown closed the
            # device: it ran on, dialling its gateway, past the test (as QEMU and board
            # machines refuse a start once closed).
            raise MachineError(f"{self.name}: cannot {action.replace('_', ' ')}, the device "
                               "is closed")
        if action == "power_on":
            self.device.power_on()
        elif action == "power_off":
            await self.device.power_off()
        elif action in ("reset", "reboot"):  # no reset distinct from a power cycle here
            await self.device.reboot()
        elif action == "cut_link":
            self.device.drop_link()
        else:
            raise ValueError(f"unknown device action {action!r}")
    @property
    def powered(self) -> bool:
        return self.device.powered

    def power_on(self) -> None:
        self._loop.run(self.on_loop("power_on"))

    def power_off(self) -> None:
        if self._loop.alive:
            self._loop.run(self.on_loop("power_off"))

    def close(self) -> None:
        self._closed = True  # before the power-off: a power-on after it is refused
        self.power_off()
        if self.relay is not None and self._loop.alive:
            self._loop.run(self._backend.close_relay(self.name, self.relay))

    def write_line(self, line: str) -> None:
        self._loop.call(self.device.console_command, line)

    def forget_enrollment(self) -> None:
        self.device.flash.device_id = None

    @property
    def lifecycle_events(self) -> EventLog:
        return self.device.events

    @property
    def loop(self) -> LoopThread:
        return self._loop

    def extra_seen(self) -> str:
        return f", last error: {self.device.last_error}" if self.device.last_error else ""

    def installed_modules(self) -> dict[str, bytes]:
        return {a.app_id: a.digest for a in self.device.apps.values()}

    def stats(self) -> dict[str, Any]:
        rtts = sorted(self.device.heartbeat_rtts)
        return {
            "connections": self.device.connections,
            "chunks_received": self.device.chunks_received,
            "heartbeats_acked": len(rtts),
            "heartbeat_rtt_median_s": rtts[len(rtts) // 2] if rtts else None,
        }


@register
class VirtualBackend(Backend):
    name = "virtual"
    options = (RELAY,)
    # The slowest answer the gateway waited for in suites/messages and the message faults of
    # suites/faults under -n 2 at load 4-7 was 0.50 s, a fault's own 0.5 s delay; without
    # one, the 99th percentile was 0.23 s (docs/report.md, "Suite timings").
    answers_within_s = 3.0

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.relays: dict[str, FaultProxy] = {}

    @classmethod
    def provenance(cls) -> dict[str, str]:
        return {"board": f"virtual ({host_platform.machine()}, wasmtime)"}

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> VirtualDeviceHandle:
        """``relay`` (default: on, see the module docstring): dial the gateway through a
        relay that carries link impairments; other options are VirtualDeviceConfig fields."""
        relay_on = options.pop("relay", None)
        relay_on = relay_default() if relay_on is None else bool(relay_on)
        known = {f.name for f in fields(VirtualDeviceConfig)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown virtual device options: {', '.join(sorted(unknown))}")
        if name in self.relays:
            raise ValueError(f"a virtual device named {name!r} is open already")
        relay = FaultProxy(endpoint) if relay_on else None
        host, port = self.loop.run(relay.start()) if relay is not None else endpoint
        try:
            config = VirtualDeviceConfig(
                name=name,
                flash_dir=self.workdir / "devices" / name,
                gateway_host=host,
                gateway_port=port,
                **options,
            )
            device = VirtualDevice(config, credentials)
        except BaseException:
            if relay is not None:
                self.loop.run(relay.stop())
            raise
        if relay is not None:
            self.relays[name] = relay
        return VirtualDeviceHandle(self, device, relay)

    async def close_relay(self, name: str, relay: FaultProxy) -> None:
        """Stop a device's relay and free its name (a device of that name can be made again)."""
        if self.relays.get(name) is relay:
            del self.relays[name]
        await relay.stop()

    def close(self) -> None:
        if self.loop.alive:
            for name, relay in list(self.relays.items()):
                self.loop.run(self.close_relay(name, relay))
