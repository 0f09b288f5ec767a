"""``python -m wasmbed_hil.bench.lab``: run a stand-in lab, or switch a stand-in's power.

    up --boards N --dir DIR [--coordinator] [--qemu PATH]
        N QEMU stand-in boards with their labgrid environment file (and with --coordinator
        a labgrid coordinator and exporter on loopback) until SIGTERM/SIGINT
    power URL on|off|cycle|get
        switch a board through its simplerest URL (``.../power/{index}/{value}`` with the
        index filled in): what the environment file's ExternalPowerDriver runs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path


def power(url: str, action: str, timeout: float = 30.0) -> str:
    """Switch (or read) a stand-in board's power through its simplerest URL."""
    if "{value}" not in url or not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r}: an http URL with a {{value}} placeholder is needed")
    values = {"on": ["1"], "off": ["0"], "cycle": ["0", "1"], "get": [""]}
    if action not in values:
        raise ValueError(f"power action {action!r}: one of {', '.join(values)}")
    answer = ""
    for value in values[action]:
        target = url.replace("{value}", value).rstrip("/")
        try:
            with urllib.request.urlopen(target, timeout=timeout) as reply:
                answer = reply.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{target}: {exc.code} {exc.read().decode().strip()}") from exc
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmbed_hil.bench.lab",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a stand-in lab until SIGTERM/SIGINT")
    up.add_argument("--boards", type=int, default=2)
    up.add_argument("--dir", type=Path, required=True)
    up.add_argument("--coordinator", action="store_true",
                    help="also a labgrid coordinator and exporter sharing the boards")
    up.add_argument("--qemu", default="qemu-system-arm")
    pw = sub.add_parser("power", help="switch a stand-in board's power")
    pw.add_argument("url")
    pw.add_argument("action", choices=["on", "off", "cycle", "get"])
    args = parser.parse_args(argv)
    try:
        if args.command == "power":
            print(power(args.url, args.action))
            return 0
        from .lab import run

        asyncio.run(run(args.dir, args.boards, args.coordinator, args.qemu))
    except (ValueError, RuntimeError, OSError, TimeoutError) as exc:
        print(f"wasmbed-hil lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
