"""Failures of the test bench itself, as opposed to failures of the product under test.

A scenario that fails because an emulator did not start, a firmware image could not be
built or a port could not be bound says nothing about the gateway or the devices. Such
errors derive from InfrastructureError; the pytest plugin files them under the
"infrastructure" category of the reports and retries them (and only them) when asked to.
"""

from __future__ import annotations


class InfrastructureError(RuntimeError):
    """The harness could not provide what the test needs (emulator, toolchain, port...)."""


class MachineError(InfrastructureError):
    """A machine (an emulator, later a board) could not be started or controlled."""
