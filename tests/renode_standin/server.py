"""A stand-in for the Renode that renode-test runs: its Robot keyword server, with QEMU doing
the emulation.

Not Renode. It answers the XML-RPC calls Renode's keyword server answers (renode 06854d4d,
src/Renode/RobotFrameworkEngine/XmlRpcServer.cs: ``get_keyword_names``, ``run_keyword(name,
args)`` returning a struct ``status``/``return``/``error``, a fault for an unknown keyword,
``stop_remote_server``), for the keywords our suites and robot/renode/ use: ExecuteCommand
(the monitor commands of renode/wasmbed-device.resc and the power/reset commands of
bench.machines.renode.remote, nothing else: any other command fails as Renode's "No such
command or device" does), ResetEmulation, StartEmulation, CreateTerminalTester,
WaitForLineOnUart, WriteLineToUart, SetDefaultUartTimeout, EnableLoggingToCache,
ClearCachedLog, StopRemoteServer. Named arguments arrive as ``name=value`` strings, as
Robot's Remote library sends them to Renode.

A machine runs as one qemu-system-arm (the qemu backend's command line) on ``start``: its
console UART is QEMU's stdio, fanned out to the console socket terminal, its file backend
and its terminal testers; its link UART dials a listener here that is pumped to the link
socket terminal. Differences from Renode, on purpose: a socket terminal keeps what the UART
sent before a client connected (Renode drops it); ``machine Pause`` stops the QEMU process
(SIGSTOP); ``machine Reset`` restarts QEMU with the image and blob (what the script's
reset macro loads).

    python tests/renode_standin/server.py [--port P]    (prints "port N", then serves)
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from emulation import Emulation, KeywordError, flag, terminal_result

NAMED = re.compile(r"^([a-zA-Z0-9_]+)=(.+)", re.S)


def _split(args: list[Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Renode's argument matching (Keyword.cs): positionals in order, then ``name=value``."""
    values: dict[str, Any] = {}
    position = 0
    for arg in args:
        m = NAMED.match(arg) if isinstance(arg, str) else None
        if m and m.group(1) in names:
            values[m.group(1)] = m.group(2)
            continue
        if position >= len(names):
            raise ArgumentsNotMatched()
        values[names[position]] = arg
        position += 1
    return values


class ArgumentsNotMatched(Exception):
    pass


class KeywordServer:
    def __init__(self, emulation: Emulation) -> None:
        self.emulation = emulation
        self.server: SimpleXMLRPCServer | None = None
        self.keywords = {
            "ExecuteCommand": (("command", "machine"), self._execute_command),
            "ResetEmulation": ((), lambda: self.emulation.clear()),
            "StartEmulation": ((), lambda: self.emulation.command("start")),
            "CreateTerminalTester": (("uart", "timeout", "machine"), self._create_tester),
            "WaitForLineOnUart": (("content", "timeout", "testerId", "treatAsRegex"),
                                  self._wait_for_line),
            "WriteLineToUart": (("content", "testerId", "waitForEcho"), self._write_line),
            "SetDefaultUartTimeout": (("timeout",), self._set_timeout),
            "EnableLoggingToCache": ((), lambda: None),
            "ClearCachedLog": ((), lambda: None),
            "StopRemoteServer": ((), self.stop),
        }

    def _execute_command(self, command: str, machine: str | None = None) -> str:
        return self.emulation.command(command, machine)

    def _create_tester(self, uart: str, timeout: str | None = None,
                       machine: str | None = None) -> int:
        return self.emulation.create_tester(uart, None if timeout is None else float(timeout),
                                            machine)

    def _wait_for_line(self, content: str, timeout: str | None = None,
                       testerId: str | None = None, treatAsRegex: str = "false") -> Any:
        tester = self.emulation.tester(None if testerId is None else int(testerId))
        seconds = tester.timeout if timeout is None else float(timeout)
        return tester.wait_for(content, seconds, flag(treatAsRegex))

    def _write_line(self, content: str = "", testerId: str | None = None,
                    waitForEcho: str = "false") -> Any:
        tester = self.emulation.tester(None if testerId is None else int(testerId))
        tester.write((content + "\n").encode())
        return terminal_result("", [])

    def _set_timeout(self, timeout: str) -> None:
        self.emulation.uart_timeout = float(timeout)

    # --- XML-RPC --------------------------------------------------------------------------
    def get_keyword_names(self) -> list[str]:
        return list(self.keywords)

    def run_keyword(self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        from xmlrpc.client import Fault

        if name not in self.keywords:
            raise Fault(1, f'Keyword "{name}" not found')
        names, function = self.keywords[name]
        try:
            values = _split(list(args), names)
        except ArgumentsNotMatched:
            raise Fault(2, f'Arguments types do not match any available keyword "{name}" : '
                           f"[{', '.join(map(str, args))}]") from None
        try:
            result = function(**values)
        except Exception as exc:
            kind = "KeywordException" if isinstance(exc, KeywordError) else type(exc).__name__
            return {"status": "FAIL", "error": f"{kind}: {exc}\n", "traceback": ""}
        answer: dict[str, Any] = {"status": "PASS"}
        if result is not None:
            answer["return"] = result
        return answer

    def stop_remote_server(self) -> None:
        self.stop()

    def stop(self) -> None:
        self.emulation.clear()
        if self.server is not None:
            threading.Thread(target=self.server.shutdown, daemon=True).start()


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(SimpleXMLRPCRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(port: int = 0, missing_types: tuple[str, ...] = ()) -> tuple[_Server, KeywordServer]:
    """A keyword server on 127.0.0.1:port (0: any), not yet serving."""
    keywords = KeywordServer(Emulation(missing_types))
    server = _Server(("127.0.0.1", port), requestHandler=_Quiet, allow_none=True,
                     logRequests=False)
    keywords.server = server
    server.register_function(keywords.get_keyword_names, "get_keyword_names")
    server.register_function(keywords.run_keyword, "run_keyword")
    server.register_function(keywords.stop_remote_server, "stop_remote_server")
    return server, keywords


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--missing-type", action="append", default=[],
                        help="a peripheral type LoadPlatformDescription refuses (E04), as a "
                             "Renode release without it would")
    args = parser.parse_args(argv)
    server, keywords = serve(args.port, tuple(args.missing_type))
    signal.signal(signal.SIGTERM, lambda *_: keywords.stop())
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        keywords.emulation.clear()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
