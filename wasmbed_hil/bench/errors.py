"""Failures of the test bench itself, as opposed to failures of the product under test.

A scenario that fails because an emulator did not start, a firmware image could not be
built or a port could not be bound says nothing about the gateway or the devices. Such
errors derive from InfrastructureError; the pytest plugin files them under the
"infrastructure" category of the reports and retries them (and only them) when asked to.
"""

from __future__ import annotations

import signal


class InfrastructureError(RuntimeError):
    """The harness could not provide what the test needs (emulator, toolchain, port...)."""


class MachineError(InfrastructureError):
    """A machine (an emulator, later a board) could not be started or controlled."""


class MachineDied(MachineError):
    """A machine's process ended on its own, without a power cut by the harness: an
    emulator crash (or a kill from outside), not something the product did. The message
    names the program and its exit status and shows its last console lines and stderr."""

    def __init__(self, name: str, program: str, status: int | None, console_tail: str,
                 stderr: str = "") -> None:
        self.name = name
        self.program = program
        self.status = status
        #: Whether a wait raised it to the test already (the teardown then does not).
        self.reported = False
        how = f"exited with status {status}" if status is not None else "exited"
        if status is not None and status < 0:
            try:
                how += f" (killed by {signal.Signals(-status).name})"
            except ValueError:
                how += f" (killed by signal {-status})"
        message = (f"{name}: {program} {how} without a power cut by the harness; "
                   f"last console lines:\n{console_tail}")
        if stderr:
            message += f"\n{program} stderr:\n{stderr}"
        super().__init__(message)
