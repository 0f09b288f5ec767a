"""``python -m wasmbed_hil.bench.apiserver``: serve until interrupted, print the kubeconfig path."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .server import ApiServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wasmbed_hil.bench.apiserver",
        description="Serve an emulated Kubernetes API server (custom resources, discovery, "
        "watch) until interrupted.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: the OS chooses)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--token", help="bearer token clients must send (default: random)")
    parser.add_argument("--kubeconfig", type=Path, help="where to write the kubeconfig")
    parser.add_argument("--insecure-http", action="store_true", help="plain HTTP, no TLS")
    return parser


async def serve(args: argparse.Namespace) -> None:
    server = ApiServer(token=args.token, tls=not args.insecure_http)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    await server.start(sock)
    try:
        path = args.kubeconfig or Path(tempfile.mkdtemp(prefix="wasmbed-kube-")) / "kubeconfig"
        print(server.write_kubeconfig(path), flush=True)
        print(f"serving {server.url}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0
