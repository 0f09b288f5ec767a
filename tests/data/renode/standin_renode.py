"""A stand-in for ``renode --disable-xwt --port P``: just enough of Renode's monitor, written
from its sources (see README.md here), to test what the harness does before a device boots.

It serves the monitor on P (0: any free port), logs "Monitor available in telnet mode on
port N" to stdout, negotiates telnet as SocketServerProvider does, greets with the banner
and a red "(monitor) " prompt, echoes input, and knows: ``mach create "x"`` / ``mach rem
"x"``, ``machine LoadPlatformDescription @file`` (Error E04 for each type it has no model
of), ``include @file`` (the file's lines, stopping at the first error), ``start``,
``pause`` and ``quit``. Anything else is "No such command or device".

Environment: STANDIN_MODELS (comma-separated types it has; default: those of every release
since 1.15.0 that renode/mps2-an385.repl uses), STANDIN_ANNOUNCE ("bound", as infra after
39bcc9f63, or "requested", as every release up to 1.16.1).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

RELEASED = ("Memory.MappedMemory,IRQControllers.NVIC,CPU.CortexM,UART.CMSDK_APB_UART,"
            "Miscellaneous.DWT")
NEGOTIATION = bytes([255, 253, 0, 255, 253, 31, 255, 251, 1, 255, 251, 3, 255, 252, 34])
RED, DARK_YELLOW, RESET = "\x1b[91m", "\x1b[33m", "\x1b[0m"
TYPE = re.compile(r"^\w+\s*:\s*([A-Za-z][\w.]*)", re.M)  # top-level entries only


class Shell:
    def __init__(self, conn: socket.socket, models: set[str]) -> None:
        self.conn = conn
        self.models = models
        self.machine: str | None = None

    def write(self, text: str) -> None:
        self.conn.sendall(text.encode())

    def prompt(self) -> None:
        if self.machine is None:
            self.write(f"{RED}(monitor) {RESET}")
        else:
            self.write(f"{DARK_YELLOW}({self.machine}) {RESET}")

    def error(self, text: str) -> bool:
        self.write(f"{RED}{text}\r\n{RESET}")
        return False

    def run(self, line: str) -> bool:
        """One command; False after an error. Raises SystemExit on quit."""
        words = line.split()
        if not words:
            return True
        if line == "quit":
            self.write("".join(f"\x1b[92m{c}\x1b[0m" for c in "Renode is quitting") + "\r\n\r")
            raise SystemExit(0)
        if m := re.fullmatch(r'mach create "(\w+)"', line):
            self.machine = m[1]
            return True
        if m := re.fullmatch(r'mach rem "(\w+)"', line):
            self.machine = None
            return True
        if m := re.fullmatch(r"machine LoadPlatformDescription @(\S+)", line):
            text = Path(m[1]).read_text()
            for found in TYPE.finditer(text):
                if found[1] not in self.models:
                    return self.error(f"Error E04: Could not resolve type: '{found[1]}'.")
            return True
        if m := re.fullmatch(r"include @(\S+)", line):
            for sub in Path(m[1]).read_text().splitlines():
                if sub.strip() and not sub.lstrip().startswith("#") and not self.run(sub.strip()):
                    return False
            return True
        if line == "start":
            self.write("Starting emulation...\r\n\r")
            return True
        if line == "pause":
            return True
        return self.error(f"No such command or device: {words[0]}")


def serve(conn: socket.socket, models: set[str]) -> None:
    shell = Shell(conn, models)
    conn.sendall(NEGOTIATION)
    shell.write(f"{RESET}Renode, version 1.16.1.0 (stand-in)\n\r\n\r")
    shell.prompt()
    line = b""
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
        while data:
            if data[0] == 255:  # IAC verb option
                if len(data) < 3:
                    break
                data = data[3:]
                continue
            byte, data = data[:1], data[1:]
            if byte in b"\r\n":
                conn.sendall(b"\n\r")
                try:
                    shell.run(line.decode())
                except SystemExit:
                    return
                shell.prompt()
                line = b""
            else:
                conn.sendall(byte)
                line += byte


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    models = set(os.environ.get("STANDIN_MODELS", RELEASED).split(","))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    announced = server.getsockname()[1]
    if os.environ.get("STANDIN_ANNOUNCE", "bound") == "requested":
        announced = port
    print(f"12:00:00.0000 [INFO] Monitor available in telnet mode on port {announced}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            serve(conn, models)
        break  # quit ends the process


if __name__ == "__main__":
    main()
