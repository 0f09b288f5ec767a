"""The gateway's exceptions, in a module of their own so that every gateway module can raise
and catch them without importing another's implementation.

The three are deliberately unrelated: callers tell them apart (the control-plane agent catches
GatewayError around `stop_app` but lets ConnectionLost through; the deployment engine catches
ConnectionLost to resume a transfer and DeploymentFailed to give up), so a common base would
change what existing `except` clauses catch.
"""

from __future__ import annotations

from ..protocol import ErrorCode


class GatewayError(RuntimeError):
    """A request to the gateway that cannot be served (unknown device, not connected...)."""


class ConnectionLost(Exception):
    """The device's connection closed in the middle of an exchange."""


class DeploymentFailed(Exception):
    """The device refused a deployment, or the transfer was given up."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
