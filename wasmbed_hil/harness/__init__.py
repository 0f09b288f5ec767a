"""Synchronous handles on gateways and devices, shared by the pytest plugin and Robot keywords."""

from .device import DeviceHandle
from .gateway import GatewayHandle, device_key
from .loop import LoopThread

__all__ = ["DeviceHandle", "GatewayHandle", "LoopThread", "device_key"]
