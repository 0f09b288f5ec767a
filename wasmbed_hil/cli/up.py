"""`wasmbed-hil up`: the whole platform on this machine, with N emulated devices.

Starts the emulated API server (or uses --kubeconfig), the REST API, the kopf controllers
and the gateways; creates the devices through the REST API exactly as a user would
(`POST /api/v1/devices` with emulation), shows progress while machines boot and enroll,
then a live status table until interrupted. `--exit-after-ready` stops as soon as every
device is connected (exit 0) or the timeout passes (exit 1): for scripts and CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..bench.backends.registry import DEFAULT_BACKEND, backend_names, get_backend
from ..bench.loop import LoopThread
from ..gateway import GatewayConfig
from ..pki import FleetCA, PkiError, write_file
from .args import seconds, tcp_port
from .common import EXIT_FAILED, EXIT_OK, CliError, announce, console

BATCH = 100  # the REST API creates at most this many devices per request
SIGNALS = (signal.SIGINT, signal.SIGTERM)  # each stops `up` (exit 0) and removes its secrets


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up", help="start the whole platform with N emulated devices",
        description="Start the emulated Kubernetes API server, the REST API, the controllers "
        "and the gateways on this machine, create N emulated devices through the REST API, "
        "show their progress, then a live status table until Ctrl-C.",
    )
    p.add_argument("-n", "--devices", type=int, default=3, help="emulated devices (default: 3)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=backend_names(),
                   help=f"device backend (default: {DEFAULT_BACKEND})")
    p.add_argument("--gateways", type=int, default=1, help="gateway instances (default: 1)")
    p.add_argument("--port", type=tcp_port, default=8080,
                   help="REST API port (default: 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="REST API address (default: 127.0.0.1)")
    p.add_argument("--heartbeat", type=seconds, default=2.0, metavar="SECONDS",
                   help="device heartbeat interval (default: 2; timeout is 3 intervals)")
    p.add_argument("--workdir", type=Path,
                   help="state, kubeconfig and token (default: a new temporary directory)")
    p.add_argument("--namespace", default="wasmbed", help="namespace (default: wasmbed)")
    p.add_argument("--timeout", type=seconds, default=120.0, metavar="SECONDS",
                   help="how long devices may take to connect (default: 120)")
    p.add_argument("--as-deployed", action="store_true",
                   help="run the emulated API server, the controllers and each gateway as "
                   "processes of their own, as in a cluster (faster with hundreds of devices; "
                   "about a second more to start)")
    p.add_argument("--exit-after-ready", action="store_true",
                   help="stop once every device is connected (exit 0) or at the timeout "
                   "(exit 1)")
    p.set_defaults(run=run)


def _phase(obj: dict[str, Any] | None) -> str:
    return ((obj or {}).get("status") or {}).get("phase", "Pending")


def status_tables(platform: Any) -> Table:
    """Devices, gateways and applications as one table grid."""
    grid = Table.grid(padding=(0, 2))
    devices = Table(title="Devices", title_justify="left")
    for column in ("name", "phase", "gateway", "device id", "apps"):
        devices.add_column(column)
    watcher = platform.watcher
    for name, obj in sorted(watcher.informers["devices"].objects.items()):
        st = obj.get("status") or {}
        apps = ", ".join(f"{a['appId']}:{a.get('deployment', '?')}" for a in st.get("apps", []))
        devices.add_row(name, _styled(st.get("phase", "Pending")),
                        (st.get("gateway") or {}).get("name", "-"),
                        (st.get("deviceId") or "-")[:12], apps or "-")
    gateways = Table(title="Gateways", title_justify="left")
    for column in ("name", "phase", "connected", "enrolled", "endpoint"):
        gateways.add_column(column)
    for name, obj in sorted(watcher.informers["gateways"].objects.items()):
        st = obj.get("status") or {}
        gateways.add_row(name, _styled(st.get("phase", "Pending")),
                         str(st.get("connectedDevices", 0)), str(st.get("enrolledDevices", 0)),
                         obj["spec"].get("endpoint", "-"))
    apps = Table(title="Applications", title_justify="left")
    for column in ("name", "phase", "running", "failed", "targets"):
        apps.add_column(column)
    for name, obj in sorted(watcher.informers["applications"].objects.items()):
        stats = (obj.get("status") or {}).get("statistics") or {}
        apps.add_row(name, _styled(_phase(obj)), str(stats.get("running", 0)),
                     str(stats.get("failed", 0)), str(stats.get("targets", 0)))
    grid.add_row(devices)
    grid.add_row(gateways)
    grid.add_row(apps)
    return grid


def _styled(phase: str) -> str:
    colour = {"Connected": "green", "Running": "green", "Enrolled": "cyan",
              "Disconnected": "yellow", "Unreachable": "red", "Failed": "red",
              "PartiallyRunning": "yellow", "Deploying": "cyan"}.get(phase)
    return f"[{colour}]{phase}[/]" if colour else phase


def _counts(platform: Any) -> tuple[int, int]:
    objects = platform.watcher.informers["devices"].objects.values()
    started = sum(any(c.get("type") == "Emulated" and c.get("status") == "True"
                      for c in (o.get("status") or {}).get("conditions", [])) for o in objects)
    connected = sum(_phase(o) == "Connected" for o in objects)
    return started, connected


class _Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwinds `run` wherever it is, so that its cleanup runs."""


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise _Signalled(signal.Signals(signum).name)


def _note_signal(signum: int, _frame: Any) -> None:
    """During the cleanup: a second signal does not cut it short (the secrets must go)."""
    console(stderr=True).print(f"{signal.Signals(signum).name}: already stopping")


def run(args: argparse.Namespace) -> int:
    if args.devices < 0 or args.gateways < 1:
        raise CliError("--devices must be >= 0 and --gateways >= 1", code=2)
    reason = get_backend(args.backend).unavailable_reason()
    if reason:
        raise CliError(f"backend {args.backend} unavailable here: {reason}")
    previous = {signum: signal.signal(signum, _raise_on_signal) for signum in SIGNALS}
    workdir: Workdir | None = None
    try:
        # blocked while the directory is made, so that a signal cannot come between its
        # creation and the name that removes it
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            workdir = Workdir(args.workdir)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        return _run(args, workdir)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the way to stop the platform
        return EXIT_OK
    finally:
        _stopping()
        try:
            if workdir is not None:
                workdir.remove()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _stopping() -> None:
    """From here on a signal is noted, not raised: the cleanup runs to its end."""
    for signum in SIGNALS:
        signal.signal(signum, _note_signal)


class Workdir:
    """The platform's state directory: keys, the API token, kubeconfig, platform.json.

    `remove` takes away what `up` put there: a directory it created (the temporary one by
    default) as a whole; in an existing --workdir, the entries it added and its own files."""

    OWN = ("token", "kubeconfig", "platform.json", "machine-manager.token",
           "kubeconfig-components")

    def __init__(self, path: Path | None) -> None:
        if path is None:
            self.path = Path(tempfile.mkdtemp(prefix="wasmbed-up-"))
            self.created = True
        else:
            self.created = not path.exists()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CliError(f"--workdir {path}: {exc.strerror or exc}") from None
            if not path.is_dir():
                raise CliError(f"--workdir {path} is not a directory")
            self.path = path
        self.before = set() if self.created else {p.name for p in self.path.iterdir()}

    def remove(self) -> None:
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for entry in self.path.iterdir():
            if entry.name in self.OWN or entry.name not in self.before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def write_platform_json(directory: Path, info: dict[str, Any]) -> None:
    """DIR/platform.json, whole or not at all (a temporary file renamed): the REST commands
    read it while `up` runs, and written in place a reader could find it empty or cut short
    (`--platform DIR`: cannot read platform.json), as would the next run after a full disk."""
    try:
        write_file(directory / "platform.json", (json.dumps(info, indent=2) + "\n").encode())
    except PkiError as exc:
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace, workdir: Workdir) -> int:
    from ..bench.devicemanager import DEFAULT_MAX_MACHINES
    from ..bench.platform import Platform, PlatformConfig
    from ..controlplane.rest import listen_socket

    out = console()
    try:
        rest_sock = listen_socket(args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port} for the REST API: "
                       f"{exc.strerror or exc} (--port 0 picks a free port)") from None
    token = secrets.token_urlsafe(24)
    write_file(workdir.path / "token", token.encode() + b"\n", 0o600)
    loop = LoopThread("wasmbed-up")
    try:
        platform = Platform(loop, FleetCA.create("wasmbed-hil up fleet CA"), workdir.path,
                            PlatformConfig(
            namespace=args.namespace, gateways=args.gateways, rest_socket=rest_sock,
            token=token,
            gateway_config=GatewayConfig(heartbeat_interval_s=args.heartbeat,
                                         heartbeat_timeout_s=3 * args.heartbeat,
                                         pairing=False, max_devices=max(100, args.devices)),
            agent_refresh_s=max(2.0, args.heartbeat),
            max_machines=max(DEFAULT_MAX_MACHINES, args.devices),
            apiserver_process=args.as_deployed, controllers_process=args.as_deployed,
            gateway_processes=args.as_deployed,
        ))
    except BaseException:
        rest_sock.close()
        loop.close()
        raise
    try:
        with out.status("starting the API server, controllers and gateways..."):
            platform.start()
        info = {"rest": platform.rest_url, "tokenFile": str(workdir.path / "token"),
                "kubeconfig": str(workdir.path / "kubeconfig"), "namespace": args.namespace,
                "gateways": {n: f"{h}:{p}" for n, (h, p) in platform._endpoints().items()},
                "workdir": str(workdir.path), "pid": os.getpid()}
        write_platform_json(workdir.path, info)
        announce(f"ready rest {platform.rest_url} kubeconfig={info['kubeconfig']} "
                 f"token-file={info['tokenFile']}")
        ready = _create_devices(platform, args, out)
        if args.exit_after_ready:
            out.print(status_tables(platform))
            return EXIT_OK if ready else EXIT_FAILED
        _live(platform, out)
        return EXIT_OK
    finally:
        _stopping()
        with out.status("stopping..."):
            try:
                platform.stop()
            finally:
                loop.close()


def _create_devices(platform: Any, args: argparse.Namespace, out: Any) -> bool:
    for start in range(0, args.devices, BATCH):
        count = min(BATCH, args.devices - start)
        body = {"name": f"device-b{start // BATCH}" if args.devices > BATCH else "device",
                "count": count, "labels": {"wasmbed.github.io/up": "true"},
                "emulation": {"backend": args.backend}}
        code, reply = platform.request("POST", "/api/v1/devices", body)
        if code != 201:
            raise CliError(f"creating devices failed: {code} {reply}", code=EXIT_FAILED)
    deadline = time.monotonic() + args.timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out, transient=False) as progress:
        booted = progress.add_task("machines started", total=args.devices)
        online = progress.add_task("devices connected", total=args.devices)
        while True:
            started, connected = _counts(platform)
            progress.update(booted, completed=started)
            progress.update(online, completed=connected)
            if connected >= args.devices:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.print(f"[red]{args.devices - connected} device(s) not connected after "
                          f"{args.timeout:g}s[/]")
                return False
            _wait_change(platform, min(remaining, 1.0))


def _wait_change(platform: Any, timeout: float) -> None:
    """Until any resource changes, or `timeout`."""
    watcher = platform.watcher

    async def changed() -> None:
        async with watcher.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.changed.wait(), timeout)

    platform.loop.run(changed(), timeout=timeout + 5)


def _live(platform: Any, out: Any) -> None:
    """The status table until a signal (which raises _Signalled out of here). On a terminal
    it is one live table, redrawn in place when its content changes; elsewhere it is printed
    once."""
    if not out.is_terminal:
        out.print(status_tables(platform))
        out.print("platform up; Ctrl-C (SIGINT) or SIGTERM stops it")
        signal.pause()  # for ever: the handlers raise
        return
    shown = _text(out, status_tables(platform))
    with Live(status_tables(platform), console=out, auto_refresh=False) as live:
        while True:
            _wait_change(platform, 1.0)
            tables = status_tables(platform)
            text = _text(out, tables)
            if text != shown:
                shown = text
                live.update(tables, refresh=True)


def _text(out: Any, renderable: Any) -> str:
    """What `renderable` shows at the console's width, as plain text (to redraw only when
    it changes)."""
    plain = Console(file=io.StringIO(), width=out.width, color_system=None)
    plain.print(renderable)
    return plain.file.getvalue()
