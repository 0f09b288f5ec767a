"""The virtual backend: VirtualDevice instances on the harness loop."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..device import DeviceHandle
from ..loop import LoopThread
from ..virtual.device import Faults, Lifecycle, VirtualDevice, VirtualDeviceConfig
from .base import Backend, register


class VirtualDeviceHandle(DeviceHandle):
    backend = "virtual"

    def __init__(self, backend: VirtualBackend, device: VirtualDevice) -> None:
        super().__init__(device.config.name, device.credentials)
        self._loop = backend.loop
        self.device = device

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
        return self.device.faults

    def power_on(self) -> None:
        self._loop.call(self.device.power_on)

    def power_off(self) -> None:
        if self._loop.alive:
            self._loop.run(self.device.power_off())

    def set_silent(self, silent: bool) -> None:
        self._loop.call(self.device.set_silent, silent)

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
