"""Our devices as machines of renode-test's own Renode, driven through its keyword server.

``renode-test`` runs one Renode with a Robot Framework keyword server (XML-RPC, renode
06854d4d src/Renode/RobotFrameworkEngine/XmlRpcServer.cs) on ``${PORT_NUMBER}``; Renode's
own keywords (``Execute Command``, ``Create Terminal Tester``, ``Wait For Line On Uart``)
reach it through Robot's Remote library at ``http://127.0.0.1:${PORT_NUMBER}/``. This module
talks to the same server, so a device of ours is a machine Renode's keywords can act on:

- ``run_keyword(name, args)`` is the server's one call: ``name`` is the C# method name
  (``ExecuteCommand``: KeywordManager registers ``attr.Name ?? method.Name``), ``args`` a list
  of strings; a named argument is a string ``name=value`` (Keyword.cs parses
  ``^([a-zA-Z0-9_]+)=(.+)``), which is also what Robot's Remote library sends, since the
  server has no ``get_keyword_arguments``. The answer is a struct: ``status`` PASS or FAIL,
  ``return``, ``error``; an unknown keyword or unmatched arguments is an XML-RPC fault.
- ``ExecuteCommand(command, machine=)`` runs one monitor command with the machine
  ``machine`` selected (RenodeKeywords.cs:59, SetMonitorMachine) and fails with Renode's
  error text; its return value is the command's output, colours stripped.

RemoteMonitor is a MonitorTransport over it (one call at a time, in a worker thread).
RemoteControl is RenodeMachine's control for ``control="remote"``: boot N of a device is
machine ``<name>_b<N>`` made by sending the rendered device script command by command
(bench.machines.renode.scripts.script_commands), so an error names its command, where an
``include`` would hide it; a power cut is ``machine Pause`` and ``mach rem``; a reset is
``machine Reset``. The machine's socket terminals stay in the emulation after ``mach rem``
(Renode has no hook removing externals with a machine), hence a new name per boot.

Renode's ``Reset Emulation`` (renode-keywords.robot's test setup and ``Test Teardown``)
removes every machine, ours included: a device of this mode lives at most one test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...errors import MachineError
from .monitor import ERROR_LINE, MonitorCommandError, MonitorError, MonitorReply
from .scripts import check_name, script_commands

if TYPE_CHECKING:
    from .machine import RenodeMachine

__all__ = ["RemoteControl", "RemoteMonitor", "check_url"]

_MULTILINE = '"""'


def check_url(url: object) -> str:
    """An http URL of a keyword server on this machine (renode-test listens on 127.0.0.1)."""
    if not isinstance(url, str):
        raise ValueError(f"Renode keyword server URL {url!r} refused: not a string")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme != "http" or not parts.hostname or port is None or parts.query
            or parts.fragment or parts.username or parts.password
            or any(c.isspace() for c in url)):
        raise ValueError(
            f"Renode keyword server URL {url!r} refused: like http://127.0.0.1:9999/ "
            "(http, a host and a port, nothing else)"
        )
    return url


class _Transport(xmlrpc.client.Transport):
    """XML-RPC over HTTP with a socket timeout (the standard transport has none)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


def _check_command(command: str) -> str:
    """One monitor command: one line, or a line and a triple-quoted block (a macro)."""
    if not command.strip() or "\x00" in command or "\r" in command:
        raise ValueError(f"one non-empty monitor command needed: {command!r}")
    if "\n" in command.rstrip("\n") and _MULTILINE not in command:
        raise ValueError(f"a line break outside a triple-quoted block: {command!r}")
    return command


class RemoteMonitor:
    """A MonitorTransport over renode-test's keyword server (``ExecuteCommand``).

    ``proxy`` stands in for ``xmlrpc.client.ServerProxy(url)`` in tests. Calls block, so they
    run in a worker thread, one at a time; a call that overruns its timeout is abandoned
    there (XML-RPC cannot cancel it) and reported as a MonitorError.
    """

    def __init__(self, url: str, proxy: Any | None = None, socket_timeout: float = 120.0
                 ) -> None:
        self.url = check_url(url)
        self._proxy = proxy
        self.socket_timeout = socket_timeout
        self._lock = asyncio.Lock()
        self.history: list[str] = []
        self.prompt = "monitor"

    def _server(self) -> Any:
        # A new proxy (and HTTP connection) per call: a call abandoned after its timeout may
        # still be in flight in its thread, and the socket timeout ends it in the end.
        if self._proxy is not None:
            return self._proxy
        return xmlrpc.client.ServerProxy(self.url, allow_none=True,
                                         transport=_Transport(self.socket_timeout))

    def run_keyword_sync(self, name: str, args: list[str]) -> Any:
        """One keyword, blocking; its return value, or MonitorCommandError/MonitorError."""
        try:
            answer = self._server().run_keyword(name, args)
        except xmlrpc.client.Fault as exc:
            raise MonitorError(f"Renode keyword server {self.url}: {name} {args!r}: "
                               f"{exc.faultString}") from exc
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise MonitorError(f"Renode keyword server {self.url} unreachable: {exc}") from exc
        if not isinstance(answer, dict) or answer.get("status") not in ("PASS", "FAIL"):
            raise MonitorError(f"Renode keyword server {self.url}: not a keyword result: "
                               f"{answer!r}")
        if answer["status"] == "FAIL":
            error = str(answer.get("error") or "(no error text)").strip()
            raise MonitorCommandError(MonitorReply(" ".join([name, *args]), "", (error,), ""))
        return answer.get("return")

    async def execute(
        self, command: str, timeout: float = 30.0, check: bool = True,
        machine: str | None = None,
    ) -> MonitorReply:
        """``Execute Command    command    machine=machine``; Renode's error text becomes
        MonitorCommandError (``check``: else a reply with the error)."""
        _check_command(command)
        args = [command] if machine is None else [command, f"machine={check_name(machine)}"]
        async with self._lock:
            self.history.append(command)
            try:
                output = await asyncio.wait_for(
                    asyncio.to_thread(self.run_keyword_sync, "ExecuteCommand", args), timeout
                )
            except TimeoutError:
                raise MonitorError(
                    f"Renode keyword server: {command!r} did not return in {timeout:g}s"
                ) from None
            except MonitorCommandError as exc:
                reply = MonitorReply(command, "", exc.reply.errors, "")
                if check:
                    raise MonitorCommandError(reply) from None
                return reply
        text = str(output or "").replace("\r", "")
        errors = tuple(ln.strip() for ln in text.split("\n") if ERROR_LINE.match(ln.strip()))
        reply = MonitorReply(command, text.strip("\n"), errors, "")
        if check and not reply.ok:
            raise MonitorCommandError(reply)
        return reply

    async def quit(self, timeout: float = 10.0) -> str:
        return ""  # renode-test owns that Renode: it is never ours to quit

    def close(self) -> None:
        pass


class RemoteControl:
    """RenodeMachine's control for ``control="remote"``: a machine per boot in renode-test's
    Renode (see the module doc)."""

    kind = "remote"

    def __init__(self, machine: RenodeMachine, monitor: RemoteMonitor) -> None:
        self.m = machine
        self.monitor = monitor
        self.current: str | None = None

    @property
    def running(self) -> bool:
        return self.current is not None

    has_state = running

    async def boot(self, name: str, prepare: Callable[[], Path], monitor_port: int) -> None:
        """The device script, command by command (``monitor_port`` is unused: renode-test's
        Renode has its own). RenodeMachine.run turns Renode's errors into MachineError."""
        commands = script_commands(prepare().read_text())
        self.current = name
        bound = _Bound(self.monitor, name)
        created = False
        for command in commands:
            # After `mach create` the machine is named in every call, so a Renode keyword
            # run meanwhile that selects another machine cannot redirect ours.
            await self.m.run(bound if created else self.monitor, command,
                             self.m.include_timeout)
            created = created or re.match(r"mach\s+create\b", command) is not None

    async def reset(self) -> None:
        if self.current is None:
            raise MachineError(f"{self.m.name}: not running")
        await self.m.run(_Bound(self.monitor, self.current), "machine Reset", 30)

    async def power_cut(self) -> None:
        current, self.current = self.current, None
        if current is None:
            return
        for command, machine in (("machine Pause", current), (f'mach rem "{current}"', None)):
            self.m.history.append(command)
            with contextlib.suppress(MonitorError):
                await self.monitor.execute(command, timeout=10, check=False, machine=machine)

    def report(self) -> str:
        return self.m.last_report

    @property
    def pid(self) -> int | None:
        return None  # the machine lives in renode-test's process


class _Bound:
    """A RemoteMonitor with the machine fixed, for RenodeMachine.run's error handling."""

    def __init__(self, monitor: RemoteMonitor, machine: str) -> None:
        self.monitor = monitor
        self.machine = machine
        self.history = monitor.history

    async def execute(self, command: str, timeout: float = 30.0,
                      check: bool = True) -> MonitorReply:
        return await self.monitor.execute(command, timeout, check, machine=self.machine)

    async def quit(self, timeout: float = 10.0) -> str:
        return ""

    def close(self) -> None:
        pass
