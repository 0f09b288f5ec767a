"""The Wasmbed gateway: TLS 1.3 device server, enrollment, heartbeats, deployments, results."""

from .config import GatewayConfig
from .deployment import Deployment, RunRequest
from .errors import ConnectionLost, DeploymentFailed, GatewayError
from .events import EventLog, GatewayEvent, WaitTimeout
from .registry import DeviceStatus
from .server import Gateway
from .store import EnrolledDevice, GatewayStore, StoredResult

__all__ = [
    "ConnectionLost",
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
