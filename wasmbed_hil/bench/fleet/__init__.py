"""Large fleets of virtual devices in worker processes (`fleet(n, processes=K)`).

    worker.py    the worker process: VirtualDevices on its own loop, JSON lines on stdio
    protocol.py  the commands, their validation, DeviceState
    client.py    FleetWorker: one worker process, on the harness loop (the async core)
    handle.py    FleetHandle: the synchronous fleet-level handle the fixture returns
"""

from .client import FleetCommandError, FleetError, FleetWorkerDied
from .handle import MAX_PROCESSES, FleetHandle, FleetWaitTimeout, check_link, check_processes
from .protocol import DeviceState

__all__ = ["MAX_PROCESSES", "DeviceState", "FleetCommandError", "FleetError", "FleetHandle",
           "FleetWaitTimeout", "FleetWorkerDied", "check_link", "check_processes"]
