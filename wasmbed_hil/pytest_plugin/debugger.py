"""--hil-gdb: emulated devices with a GDB server, and how the fixtures treat them.

``--hil-gdb=halted|running`` (optionally ``--hil-gdb-device NAME``, a name or a glob) is
exported to the environment (bench.machines.gdb.GdbRequest), where the backends' machines
read it, so devices made by the fixtures and by a control plane's device manager alike get
their GDB server. When a device with a GDB server powers on, the attach command is written
to the terminal (and to the log, and to the device's console as a ``[harness]`` line).

A halted device does not boot until the debugger lets it: the device fixtures then do not
wait for it to come online (they return it powered and halted); the scenario's own first
wait (``wait_online()``, or any wait of the gateway) waits for it, so give them time:
``--hil-timeout=600 --timeout=0`` (pytest-timeout) for an interactive session.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ..bench.machines.gdb import GDB_MODES, GdbRequest


def add_options(group: Any) -> None:
    group.addoption(
        "--hil-gdb", choices=GDB_MODES, default=None,
        help="start each emulated device (qemu; renode) with a GDB server on an OS-chosen "
        "port, printed with the gdb-multiarch command to attach; 'halted' stops the CPU at "
        "its reset vector on every boot until the debugger continues (the device fixtures "
        "then do not wait for it to come online)",
    )
    group.addoption(
        "--hil-gdb-device", default=None, metavar="NAME",
        help="only this device (a name or a glob, e.g. device-0 or fleet-*) gets the GDB "
        "server of --hil-gdb (default: every device)",
    )


def configure(config: pytest.Config) -> None:
    """Export --hil-gdb to the environment (checked: a bad device filter is a usage error)."""
    mode = config.getoption("--hil-gdb")
    device = config.getoption("--hil-gdb-device")
    if mode is None:
        if device:
            raise pytest.UsageError("--hil-gdb-device needs --hil-gdb=halted|running")
        return
    try:
        GdbRequest(mode, device or None).export()
    except ValueError as exc:
        raise pytest.UsageError(f"--hil-gdb-device: {exc}") from None


def announce(config: pytest.Config, device: Any) -> None:
    """Tell the user how to attach to `device`'s GDB server (nothing when it has none)."""
    hint = device.gdb_hint()
    if not hint:
        return
    try:  # (the machine logged it already; this is for the person at the terminal)
        writer = config.get_terminal_writer()
    except Exception:  # no terminal (e.g. an xdist worker): the log line is there
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:  # shown at once, not in the captured output of the test
        writer.line()
        writer.line(hint, yellow=True)
