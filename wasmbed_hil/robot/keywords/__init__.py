"""The library's keywords, one component per concern (SeleniumLibrary's `keywords/` split).

Each component is a LibraryComponent over the library instance (`self.ctx`), which names
gateways and devices, keeps the current ones and owns the scopes; the keywords themselves
call GatewayHandle and DeviceHandle, the bench's synchronous API.
"""

from .console import ConsoleKeywords
from .convergence import ConvergenceKeywords
from .deployment import DeploymentKeywords
from .devices import DeviceKeywords
from .gateways import GatewayKeywords
from .link import LinkKeywords
from .message_faults import MessageFaultKeywords
from .renode import RenodeKeywords
from .waits import WaitKeywords

__all__ = [
    "ConsoleKeywords",
    "ConvergenceKeywords",
    "DeploymentKeywords",
    "DeviceKeywords",
    "GatewayKeywords",
    "LinkKeywords",
    "MessageFaultKeywords",
    "RenodeKeywords",
    "WaitKeywords",
]
