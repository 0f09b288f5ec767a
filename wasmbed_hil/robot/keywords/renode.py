"""Beside Renode's own keywords under ``renode-test``: its keyword file, its keyword server,
and the Renode machine of one of our devices.

``renode-test`` sets ``${RENODEKEYWORDS}`` (its renode-keywords.robot) and ``${PORT_NUMBER}``
(the port of its Renode's keyword server, which Renode's ``Setup`` imports as the Remote
library). `Import Renode Keywords` imports that file and points the ``renode-test``
backend at that server, so `Create Device    backend=renode-test` makes a machine of that
Renode, which `Get Renode Machine` names for Renode's keywords (``machine=``).
"""

from __future__ import annotations

import os

from robot.api import logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn
from robot.running.context import EXECUTION_CONTEXTS

from ...bench.backends import get_backend
from .component import LibraryComponent

RENODE_TEST_BACKEND = "renode-test"


def _remote_env() -> str:
    """The environment variable holding the renode-test backend's server URL."""
    option = next(o for o in get_backend(RENODE_TEST_BACKEND).options
                  if o.flag == "--renode-remote")
    return option.env


def renode_test_url(port: object) -> str:
    """http://127.0.0.1:PORT/, what renode-keywords.robot's Setup imports on Linux."""
    text = str(port).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"PORT_NUMBER {port!r} refused: a port number is needed")
    return f"http://127.0.0.1:{int(text)}/"


class RenodeKeywords(LibraryComponent):
    @keyword
    def import_renode_keywords(self, path: str | None = None, port: str | None = None) -> str:
        """Imports Renode's keyword file (``path``, default ``${RENODEKEYWORDS}``) and sets the
        ``renode-test`` backend's keyword server to ``http://127.0.0.1:port/`` (``port``,
        default ``${PORT_NUMBER}``; left as it is when neither is given). Returns the
        server's URL ("" when none). `Wasmbed Suite Setup` calls it under renode-test;
        Renode's ``Setup`` still has to run (it imports the Remote library).

        | Import Renode Keywords
        | Setup
        """
        builtin = BuiltIn()
        path = path or builtin.get_variable_value("${RENODEKEYWORDS}", None)
        if not path:
            raise AssertionError("no Renode keyword file: pass path= or run under renode-test "
                                 "(which sets ${RENODEKEYWORDS})")
        # Not BuiltIn's Import Resource: it lets the file's variable section overwrite
        # variables already set, and renode-keywords.robot sets PORT_NUMBER 9999 and
        # SKIP_RUNNING_SERVER False (so its Teardown would stop renode-test's Renode).
        EXECUTION_CONTEXTS.current.namespace.import_resource(str(path), overwrite=False)
        port = port or builtin.get_variable_value("${PORT_NUMBER}", None)
        if port is None:
            return ""
        url = renode_test_url(port)
        os.environ[_remote_env()] = url
        logger.info(f"backend {RENODE_TEST_BACKEND}: Renode's keyword server {url}")
        return url

    @keyword
    def get_renode_machine(self, device: str | None = None) -> str:
        """The Renode machine that runs the device now (boot N of device D on
        ``renode-test``: ``D_bN``), for Renode's keywords' ``machine=``; fails when the
        device is not a powered Renode machine. A new boot is a new machine: ask again
        after `Reboot Device` or `Power On`.

        | ${machine}=    Get Renode Machine
        | Create Terminal Tester    sysbus.uart0    machine=${machine}
        | Wait For Line On Uart     online as
        """
        dev = self.ctx.device(device)
        machine = getattr(dev.handle, "machine", None)
        name = getattr(machine, "current_machine", None)
        if not isinstance(name, str):
            state = "powered off" if machine is not None and hasattr(
                machine, "current_machine") else "not on a Renode backend"
            raise AssertionError(f"{dev.name} has no Renode machine: {state}")
        return name
