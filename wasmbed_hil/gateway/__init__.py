"""The Wasmbed gateway: TLS 1.3 device server, enrollment, heartbeats, deployments, results."""

from .config import GatewayConfig
from .deployment import Deployment, DeploymentFailed, RunRequest
from .events import EventLog, GatewayEvent, WaitTimeout
from .server import DeviceStatus, Gateway, GatewayError
from .store import EnrolledDevice, GatewayStore, StoredResult

__all__ = [
    "Deployment",
    "DeploymentFailed",
    "DeviceStatus",
    "EnrolledDevice",
    "EventLog",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "GatewayEvent",
    "GatewayStore",
    "RunRequest",
    "StoredResult",
    "WaitTimeout",
]
