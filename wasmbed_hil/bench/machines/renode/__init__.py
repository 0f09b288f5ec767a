"""Renode: platform scripts (renode/), their rendering, the monitor client and the machine.

See renode/README.md for what was run against a real Renode (nothing yet) and what only
against recorded monitor exchanges.
"""

from .machine import MachineError, RenodeMachine, find_renode, pick_free_ports
from .monitor import MonitorClient, MonitorCommandError, MonitorError, MonitorReply
from .scripts import BOARDS, ScriptError, render_board_script, render_device_script

__all__ = [
    "BOARDS",
    "MachineError",
    "MonitorClient",
    "MonitorCommandError",
    "MonitorError",
    "MonitorReply",
    "RenodeMachine",
    "ScriptError",
    "find_renode",
    "pick_free_ports",
    "render_board_script",
    "render_device_script",
]
