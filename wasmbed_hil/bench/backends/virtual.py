"""The virtual backend: VirtualDevice instances on the harness loop."""

from __future__ import annotations

import platform as host_platform
from dataclasses import fields
from typing import Any

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..device import DeviceHandle, Faults, Lifecycle
from ..loop import LoopThread
from ..points import DeviceAction
from ..virtual.device import VirtualDevice, VirtualDeviceConfig
from .base import Backend, register


class VirtualFaults(Faults):
    """Every fault: the virtual device is the reference model, with a hook for each."""

    def __init__(self, backend: str, device: VirtualDevice, loop: LoopThread) -> None:
        super().__init__(backend)
        self._device = device
        self._loop = loop

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


class VirtualDeviceHandle(DeviceHandle):
    def __init__(self, backend: VirtualBackend, device: VirtualDevice) -> None:
        super().__init__(device.config.name, device.credentials)
        self.backend = backend.name
        self._loop = backend.loop
        self.device = device
        self._faults = VirtualFaults(backend.name, device, backend.loop)

    @property
    def device_id(self) -> str | None:
        return self.device.device_id

    @property
    def lifecycle(self) -> Lifecycle:
        return self.device.lifecycle

    @property
    def console(self) -> list[str]:
        return list(self.device.console)

    @property
    def last_reject(self) -> tuple[ErrorCode, str] | None:
        return self.device.last_reject

    @property
    def faults(self) -> Faults:
        return self._faults

    async def on_loop(self, action: DeviceAction) -> None:
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

    @classmethod
    def provenance(cls) -> dict[str, str]:
        return {"board": f"virtual ({host_platform.machine()}, wasmtime)"}

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> VirtualDeviceHandle:
        known = {f.name for f in fields(VirtualDeviceConfig)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown virtual device options: {', '.join(sorted(unknown))}")
        config = VirtualDeviceConfig(
            name=name,
            flash_dir=self.workdir / "devices" / name,
            gateway_host=endpoint[0],
            gateway_port=endpoint[1],
            **options,
        )
        device = VirtualDevice(config, credentials)
        return VirtualDeviceHandle(self, device)
