"""`wasmbed-hil gateway --processes N`: N gateway processes sharing one device port.

Each process is a separate gateway instance, as if it were another replica behind a load
balancer: its own name (`NAME-p0`, `NAME-p1`...), its own Gateway resource, its own local
cache (`STATE_DIR/p0`...), its own control-plane agent. They share the device port through
SO_REUSEPORT: every process binds its own listening socket to the same address and the kernel
spreads new connections over them. Nothing is shared in memory, so a device that reconnects to
another process is known there the way it is known to another gateway: through the control
plane (the serving gateway publishes its enrollment in the Device's `status.enrollment`, the
others adopt it; deployments go through whichever gateway serves the device).

This process only supervises: it reserves the port (a bound, never listening SO_REUSEPORT
socket, so that the port stays ours while a process restarts), starts the processes, forwards
their stdout lines prefixed with `[NAME-pK] `, restarts one that dies (after a back-off; one
that dies before it ever served stops them all, as its error is a configuration error), passes
SIGHUP on when there is a --crl to reload, and on SIGINT/SIGTERM stops every process
(SIGTERM, SIGKILL after a timeout). On Linux each process also gets SIGTERM when this one
dies, even by SIGKILL (PR_SET_PDEATHSIG), so none is left orphaned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import aio
from ..aio import die_with_parent, reuse_port_supported
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, announce

log = logging.getLogger("wasmbed_hil.cli.gateway")

RESTART_MIN_S = 0.5  # first back-off after a process died
RESTART_MAX_S = 30.0  # back-off doubles up to this
STABLE_S = 60.0  # a process that served this long before dying starts again at RESTART_MIN_S
STOP_TIMEOUT_S = 30.0  # SIGTERM -> exit, then SIGKILL
MAX_PROCESSES = 64


def check_reuse_port(option: str) -> None:
    why = reuse_port_supported()
    if why is not None:
        raise CliError(f"{option} needs SO_REUSEPORT: {why}", EXIT_USAGE)


def reserve_port(host: str, port: int) -> socket.socket:
    """aio.reserve_port, its failure a CliError (exit 3)."""
    try:
        return aio.reserve_port(host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def process_name(name: str, index: int) -> str:
    return f"{name}-p{index}"


def child_argv(args: argparse.Namespace, index: int, port: int, endpoint: str) -> list[str]:
    """The command line of process `index`: every option of ours, with its own name, state
    directory and metrics port (--metrics-port P: P + index; 0 stays 0), and the shared port
    joined with --reuse-port. tests/test_gateway_processes.py checks that it parses back to
    our options, so an option added to `gateway` but not here fails a test."""
    argv = [sys.executable, "-m", "wasmbed_hil", "--log-format", args.log_format]
    if args.log_level is not None:
        argv += ["--log-level", args.log_level]
    argv += ["-v"] * args.verbose
    argv += ["gateway", "--name", process_name(args.name, index), "--namespace", args.namespace]
    if args.kubeconfig is not None:
        argv += ["--kubeconfig", str(args.kubeconfig)]
    if args.in_cluster:
        argv.append("--in-cluster")
    if args.context is not None:
        argv += ["--context", args.context]
    argv += ["--tls-port", str(port), "--reuse-port", "--host", args.host,
             "--endpoint", endpoint, "--pki-dir", str(args.pki_dir),
             "--state-dir", str(Path(args.state_dir) / f"p{index}"),
             "--heartbeat", repr(args.heartbeat), "--metrics-host", args.metrics_host,
             "--loop", args.loop, "--max-devices", str(args.max_devices)]
    if args.pairing:
        argv.append("--pairing")
    if args.heartbeat_timeout is not None:
        argv += ["--heartbeat-timeout", repr(args.heartbeat_timeout)]
    if args.coalesce is not None:
        argv += ["--coalesce", repr(args.coalesce)]
    if args.crl is not None:
        argv += ["--crl", str(args.crl)]
    for identity in args.revoke:
        argv += ["--revoke", identity]
    if args.metrics_port is not None:
        argv += ["--metrics-port", str(args.metrics_port + index if args.metrics_port else 0)]
    if args.print_events:
        argv.append("--print-events")
    return argv


@dataclass
class Process:
    """One supervised gateway process and what the supervisor knows of it."""

    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    served: asyncio.Event = field(default_factory=asyncio.Event)  # said `ready` at least once
    starts: int = 0
    ready_line: str = ""


class Supervisor:
    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self.stopping = asyncio.Event()
        self.failed: tuple[Process, int] | None = None  # died before it ever served

    async def _spawn(self, p: Process) -> asyncio.subprocess.Process:
        parent = os.getpid()
        proc = await asyncio.create_subprocess_exec(
            *p.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            preexec_fn=lambda: die_with_parent(parent),
            # Out of the terminal's process group: Ctrl-C reaches the supervisor only, which
            # stops the processes itself (a process that exits on its own is restarted).
            start_new_session=True)
        p.proc = proc
        p.starts += 1
        announce(f"process {p.name} pid={proc.pid} started")
        return proc

    async def _forward(self, p: Process, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("ready ") and not p.served.is_set():
                p.ready_line = line
                p.served.set()
            announce(f"[{p.name}] {line}")

    async def keep(self, p: Process) -> None:
        """Run `p` until the supervisor stops, restarting it whenever it dies."""
        backoff = RESTART_MIN_S
        while not self.stopping.is_set():
            try:
                proc = await self._spawn(p)
            except OSError as exc:  # the interpreter cannot be started: nothing to restart
                self.failed = (p, EXIT_FAILED)
                announce(f"process {p.name} could not start: {exc}; stopping all")
                self.stopping.set()
                return
            if self.stopping.is_set():  # stopped while it was starting: stop it too
                proc.terminate()
            began = time.monotonic()
            await self._forward(p, proc)
            code = await proc.wait()
            if self.stopping.is_set():
                return
            if not p.served.is_set():
                self.failed = (p, code)
                log.error("gateway process %s exited %s before serving", p.name, code)
                announce(f"process {p.name} pid={proc.pid} exited code={code} before serving; "
                         "stopping all")
                self.stopping.set()
                return
            if time.monotonic() - began >= STABLE_S:
                backoff = RESTART_MIN_S
            log.error("gateway process %s (pid %d) exited %s; restarting in %gs",
                      p.name, proc.pid, code, backoff)
            announce(f"process {p.name} pid={proc.pid} exited code={code}; restarting in "
                     f"{backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)  # back-off or stop
            backoff = min(RESTART_MAX_S, backoff * 2)

    def signal_all(self, signum: int) -> None:
        for p in self.processes:
            if p.proc is not None and p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signum)

    async def stop_all(self, keepers: list[asyncio.Task[None]]) -> list[int]:
        """SIGTERM to every process, SIGKILL to those still running after STOP_TIMEOUT_S;
        returns once every keeper ended (so every process was reaped), with their codes."""
        self.stopping.set()
        self.signal_all(signal.SIGTERM)
        _, pending = await asyncio.wait(keepers, timeout=STOP_TIMEOUT_S)
        if pending:
            log.error("gateway processes ignored SIGTERM for %gs: killed", STOP_TIMEOUT_S)
            self.signal_all(signal.SIGKILL)
            await asyncio.wait(pending)
        for task in keepers:
            if not task.cancelled() and task.exception() is not None:  # a supervisor bug
                log.error("supervising failed", exc_info=task.exception())
        return [p.proc.returncode if p.proc.returncode is not None else EXIT_FAILED
                for p in self.processes if p.proc is not None]


def supervise(args: argparse.Namespace, port: int, endpoint: str) -> int:
    """Run args.processes gateway processes on `port` until SIGINT/SIGTERM; the exit code."""

    async def main() -> int:
        sup = Supervisor([Process(process_name(args.name, k), child_argv(args, k, port, endpoint))
                          for k in range(args.processes)])
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sup.stopping.set)
        if args.crl is not None:  # each process reloads its --crl; without one a gateway
            # process has no SIGHUP handler and would die of it, as the supervisor does then
            loop.add_signal_handler(signal.SIGHUP, sup.signal_all, signal.SIGHUP)
        keepers = [asyncio.create_task(sup.keep(p)) for p in sup.processes]
        try:
            all_served = asyncio.gather(*(p.served.wait() for p in sup.processes))
            stopped = asyncio.ensure_future(sup.stopping.wait())
            await asyncio.wait({all_served, stopped}, return_when=asyncio.FIRST_COMPLETED)
            all_served.cancel()
            if not sup.stopping.is_set():
                announce(f"ready gateway {args.name} endpoint={endpoint} "
                         f"processes={args.processes} port={port}")
            await stopped
        finally:
            codes = await sup.stop_all(keepers)
        if sup.failed is not None:
            code = sup.failed[1]
            return code if code > 0 else EXIT_FAILED
        return EXIT_OK if all(c == 0 for c in codes) else EXIT_FAILED

    return asyncio.run(main())
