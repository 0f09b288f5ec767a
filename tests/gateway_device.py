"""One virtual device served by a real gateway: the scenario the gateway's loop and footprint
tests share (start, enroll, heartbeats, a device-info round trip, stop)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wasmbed_hil.bench.virtual.device import Lifecycle, VirtualDevice, VirtualDeviceConfig
from wasmbed_hil.gateway import Gateway
from wasmbed_hil.pki import FleetCA


async def serve_one_device(gateway: Gateway, ca: FleetCA, flash_dir: Path, *, heartbeats: int,
                           on_start: Callable[[], None] | None = None) -> None:
    """Start `gateway`, run `on_start`, bring one device online, wait until the gateway counted
    `heartbeats` of its heartbeats and answer a device-info request; always stop both."""
    host, port = await gateway.start()
    if on_start is not None:
        on_start()
    dev = VirtualDevice(VirtualDeviceConfig(name="dev-0", flash_dir=flash_dir,
                                            gateway_host=host, gateway_port=port),
                        ca.issue_device("dev-0"))
    try:
        dev.power_on()
        await dev.events.wait_for(lambda: dev.lifecycle is Lifecycle.ONLINE, 10, "online")
        device_id = dev.device_id
        assert device_id is not None

        def counted() -> bool:
            st = gateway.status.get(device_id)
            return st is not None and st.heartbeats >= heartbeats

        await gateway.events.wait_for(counted, 10, f"{heartbeats} heartbeats")
        info = await gateway.request_device_info(device_id)
        assert info.max_module_size == dev.config.max_module_size
    finally:
        await dev.power_off()
        await gateway.stop()
