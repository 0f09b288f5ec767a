"""The platform's long-running services, one per subcommand, as deploy/ runs them:
`controllers`, `gateway`, `rest`; and `apiserver`, the emulated Kubernetes API.

Each prints one `ready ...` line on stdout once it serves, and stops cleanly on SIGINT or
SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from ..gateway import Gateway, GatewayConfig
from ..gateway.eventloop import (
    DEFAULT_COALESCE_S,
    DEFAULT_LOOP,
    LOOPS,
    LoopUnavailable,
    coalescing,
    loop_runner,
)
from ..kube.client import KubeClient, KubeError
from ..pki import PkiError, read_crl, server_ssl_context
from .args import coalesce_seconds, endpoint, seconds, tcp_port
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_kube_options,
    announce,
    kube_config,
    read_token_file,
    until_signal,
)
from .gwprocs import MAX_PROCESSES, check_reuse_port, reserve_port, supervise

log = logging.getLogger("wasmbed_hil.cli")

#: The most devices `gateway --max-devices` takes: a process's descriptors end long before.
MAX_DEVICES = 1_000_000


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("controllers", help="run the kopf controllers for Device, Application "
                       "and Gateway resources",
                       description="Run the kopf controllers of one namespace until "
                       "interrupted. Without a device manager (as in a cluster), Devices that "
                       "ask for emulation get an Emulated=False condition.")
    add_kube_options(p)
    p.add_argument("--gateway-stale", type=seconds, default=30.0, metavar="SECONDS",
                   help="a Gateway silent this long is marked Failed (default: 30)")
    p.add_argument("--machine-manager", metavar="URL",
                   help="a device manager serving emulated machines at http://HOST:PORT (the "
                   "test bench's, docs/architecture.md): Devices that ask for emulation get "
                   "their machine from it; needs --machine-manager-token-file")
    p.add_argument("--machine-manager-token-file", type=Path, metavar="PATH",
                   help="file holding the device manager's bearer token")
    _add_metrics_options(p)
    p.set_defaults(run=run_controllers)

    p = sub.add_parser("gateway", help="run one gateway with its control-plane agent",
                       description="Serve devices over mutual TLS 1.3 and keep the Device, "
                       "Application and Gateway resources in step with this gateway.")
    add_kube_options(p)
    p.add_argument("--name", required=True, help="Gateway resource name (e.g. the pod name)")
    p.add_argument("--tls-port", type=tcp_port, default=8443, help="device port (default: 8443; "
                   "0: any free port)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--endpoint", type=endpoint, help="address devices use, host:port (default: "
                   "<hostname>:<tls-port>)")
    p.add_argument("--pki-dir", type=Path, required=True,
                   help="directory with cert.pem, key.pem (the gateway's) and ca.pem (fleet)")
    p.add_argument("--state-dir", type=Path, required=True,
                   help="directory of the gateway's local cache (SQLite)")
    p.add_argument("--heartbeat", type=seconds, default=30.0, metavar="SECONDS",
                   help="heartbeat interval told to devices (default: 30)")
    p.add_argument("--heartbeat-timeout", type=seconds, metavar="SECONDS",
                   help="no heartbeat for this long: the device is Unreachable (default: 3 "
                   "heartbeat intervals; longer than --heartbeat)")
    p.add_argument("--pairing", action="store_true", help="start in pairing mode")
    p.add_argument("--max-devices", type=_max_devices, default=GatewayConfig.max_devices,
                   metavar="N", help="devices served at once; one more is refused (default: "
                   f"{GatewayConfig.max_devices})")
    p.add_argument("--crl", type=Path, metavar="PATH",
                   help="a CRL (PEM or DER) signed by the fleet CA (--pki-dir's ca.pem), loaded "
                   "at start and again on SIGHUP: certificates whose serial it lists are "
                   "refused; it replaces the CRL loaded before (never by an older one: a lower "
                   "CRL number, or an earlier issue date) and is kept in the local cache")
    p.add_argument("--revoke", action="append", default=[], type=_identity, metavar="IDENTITY",
                   help="refuse this device identity (SHA-256 of its certificate's public key) "
                   "from now on, kept in the local cache; repeatable. A running gateway revokes "
                   "through the control plane (Device spec.revoked)")
    _add_metrics_options(p)
    p.add_argument("--print-events", action="store_true",
                   help="print every gateway event (enrollments, connections, deployment "
                   "steps, results) on stdout, one `event ...` line each")
    p.add_argument("--processes", type=_processes, default=1, metavar="N",
                   help="run N gateway processes sharing the device port through SO_REUSEPORT "
                   "(default: 1), one per core: each a gateway of its own named NAME-p0, "
                   "NAME-p1... with its cache in STATE_DIR/p0..., its metrics on --metrics-port "
                   "+ 0, + 1...; this process supervises them (restarts one that dies, stops "
                   "all on SIGINT/SIGTERM). docs/cli.md")
    p.add_argument("--reuse-port", action="store_true",
                   help="bind the device port with SO_REUSEPORT, so that several gateway "
                   "processes started by someone else (systemd, a script) share it")
    p.add_argument("--loop", choices=LOOPS, default=DEFAULT_LOOP,
                   help="the event loop (default: asyncio); uvloop needs the fast extra "
                   "(pip install 'wasmbed-hil[fast]'). docs/cli.md")
    p.add_argument("--coalesce", type=coalesce_seconds, metavar="SECONDS",
                   help="least time between two polls of the event loop once one found work "
                   f"(default {DEFAULT_COALESCE_S:g} on asyncio's loop; 0: poll at once; "
                   "uvloop: 0 only): a busy gateway takes many devices' messages per "
                   "wake-up, each waiting at most that much longer. docs/cli.md")
    p.set_defaults(run=run_gateway)

    p = sub.add_parser("rest", help="serve the REST API (port 8080)",
                       description="Serve the control plane's REST API over the resources.")
    add_kube_options(p)
    p.add_argument("--port", type=tcp_port, default=8080, help="port (default: 8080; 0: any)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--token-file", type=Path, required=True,
                   help="file holding the bearer token callers must present")
    _add_metrics_options(p)
    p.set_defaults(run=run_rest)

    p = sub.add_parser("apiserver", help="serve an emulated Kubernetes API server",
                       description="Serve the emulated kube-apiserver (custom resources, "
                       "discovery, watch) until interrupted; prints the kubeconfig path.")
    p.add_argument("--port", type=tcp_port, default=0, help="TCP port (default: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--kubeconfig", type=Path, help="where to write the kubeconfig")
    p.add_argument("--insecure-http", action="store_true", help="plain HTTP, no TLS")
    p.add_argument("--san", action="append", default=[], metavar="HOST",
                   help="another name or IP address for the serving certificate (repeatable; "
                   "it always names localhost, 127.0.0.1, ::1 and the --host address)")
    p.add_argument("--advertise", metavar="HOST",
                   help="the host clients dial, written into the kubeconfig (default: the "
                   "--host address; 127.0.0.1 for 0.0.0.0); added to the certificate")
    p.add_argument("--crds", action="store_true",
                   help="install the Device, Application and Gateway CRDs at start")
    p.add_argument("--namespace", default="default",
                   help="the kubeconfig context's namespace (default: default)")
    p.set_defaults(run=run_apiserver)


def _add_metrics_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=tcp_port, metavar="PORT",
                   help="serve Prometheus metrics on http://<metrics-host>:PORT/metrics, "
                   "without authentication (docs/monitoring.md; default: none; 0: any free "
                   "port)")
    p.add_argument("--metrics-host", default="0.0.0.0",
                   help="address of the metrics endpoint (default: 0.0.0.0)")


def _count(what: str, ceiling: int) -> Callable[[str], int]:
    """An argparse type: an integer in 1..ceiling, else "'x' is no WHAT count (1..N)"."""
    def parse(value: str) -> int:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if not 1 <= count <= ceiling:
            raise argparse.ArgumentTypeError(f"{value!r} is no {what} count (1..{ceiling})")
        return count

    return parse


_max_devices = _count("device", MAX_DEVICES)
_processes = _count("process", MAX_PROCESSES)


def _identity(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is no device identity (64 lowercase hex digits)")
    return value


def _read_crl(path: Path, pki_dir: Path) -> tuple[bytes, x509.Certificate]:
    """The CRL's bytes and the fleet CA certificate, the CRL checked against it."""
    try:
        crl = path.read_bytes()
        ca_data = (pki_dir / "ca.pem").read_bytes()
    except OSError as exc:
        raise CliError(f"--crl {path}: {exc}") from None
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_data)
    except ValueError:  # also on a SIGHUP's reload, where no traceback may escape
        raise CliError(f"--crl {path}: {pki_dir / 'ca.pem'} is not a PEM certificate",
                       EXIT_USAGE) from None
    try:
        read_crl(crl, ca_cert)
    except PkiError as exc:
        raise CliError(f"--crl {path}: {exc}", EXIT_USAGE) from None
    return crl, ca_cert


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=1024, reuse_port=reuse_port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_controllers(args: argparse.Namespace) -> int:
    from ..controlplane.controllers import Controllers, ControllerSettings

    manager = None
    if (args.machine_manager is None) != (args.machine_manager_token_file is None):
        raise CliError("--machine-manager and --machine-manager-token-file go together",
                       EXIT_USAGE)
    if args.machine_manager is not None:
        from ..controlplane.machineclient import RemoteMachineManager

        token = read_token_file(args.machine_manager_token_file,
                                "--machine-manager-token-file")
        try:
            manager = RemoteMachineManager(args.machine_manager, token)
        except ValueError as exc:
            raise CliError(f"--machine-manager: {exc}", EXIT_USAGE) from None
    config = kube_config(args)
    controllers = Controllers(config, ControllerSettings(
        namespace=args.namespace, gateway_stale_s=args.gateway_stale,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host), manager)

    def announce_ready() -> None:
        if controllers.ready.wait(120):
            metrics = controllers.metrics_address
            shown = f" metrics_port={metrics[1]}" if metrics is not None else ""
            announce(f"ready controllers namespace={args.namespace}{shown}")

    threading.Thread(target=announce_ready, daemon=True).start()
    # kopf, in the main thread, stops gracefully on SIGINT/SIGTERM by itself.
    asyncio.run(controllers.run())
    return EXIT_OK


SERVICE_EVENT_LOG_LIMIT = 10_000  # events the `gateway` service keeps (service_config)


def service_config(args: argparse.Namespace) -> GatewayConfig:
    """The gateway's settings as the `gateway` service runs it. No protocol trace: it is
    evidence for the test harness's reports, which nothing reads in a deployed gateway, and it
    costs about 350 bytes and 4 us of CPU per message, so at GatewayConfig's 2,000 messages per
    device about 680 KiB per device once full (half an hour of heartbeats at 1 Hz), ten times
    what the rest of a connection costs. A shorter event log (SERVICE_EVENT_LOG_LIMIT): the
    harness's 100,000 events hold its waits' history, but one heartbeat is one event of about
    350 bytes, 35 kB per device at 1,000 devices once full; the service's listeners (the
    agent, --print-events) see every event anyway."""
    timeout = args.heartbeat * 3 if args.heartbeat_timeout is None else args.heartbeat_timeout
    return GatewayConfig(name=args.name, heartbeat_interval_s=args.heartbeat,
                         heartbeat_timeout_s=timeout, pairing=args.pairing,
                         max_devices=args.max_devices,
                         metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                         trace_limit=0, event_log_limit=SERVICE_EVENT_LOG_LIMIT)


def run_gateway(args: argparse.Namespace) -> int:
    from ..controlplane.agent import GatewayAgent

    if args.heartbeat_timeout is not None and args.heartbeat_timeout <= args.heartbeat:
        raise CliError(f"--heartbeat-timeout {args.heartbeat_timeout:g} must be longer than "
                       f"--heartbeat {args.heartbeat:g}", EXIT_USAGE)
    coalesce = coalescing(args.loop, args.coalesce)
    try:
        run_loop = loop_runner(args.loop, coalesce)
    except LoopUnavailable as exc:
        raise CliError(f"--loop {args.loop}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"--coalesce {coalesce:g} with --loop {args.loop}: {exc}",
                       EXIT_USAGE) from None
    config = kube_config(args)
    try:
        tls = server_ssl_context(args.pki_dir)
    except (OSError, ssl.SSLError, ValueError, PkiError) as exc:
        raise CliError(f"--pki-dir {args.pki_dir}: {exc}") from None
    crl = _read_crl(args.crl, args.pki_dir) if args.crl else None
    if args.processes > 1:
        return _run_gateway_processes(args)
    if args.reuse_port:
        check_reuse_port("--reuse-port")
    sock = _bind(args.host, args.tls_port, args.reuse_port)
    port = sock.getsockname()[1]
    endpoint = args.endpoint or f"{socket.gethostname()}:{port}"
    gw_config = service_config(args)

    async def main() -> None:
        gateway = Gateway(gw_config, tls, args.state_dir)
        if args.print_events:
            gateway.events.add_listener(lambda e: announce(f"event {e.describe()}"))
        try:
            if crl is not None:
                gateway.load_crl(*crl)
        except PkiError as exc:
            gateway.store.close()
            raise CliError(f"--crl {args.crl}: {exc}", EXIT_USAGE) from None
        for identity in args.revoke:
            gateway.revoke(identity)
        try:
            await gateway.start(sock)
        except OSError as exc:  # the metrics port: the device port is bound already
            gateway.store.close()
            raise CliError(f"--metrics-port {args.metrics_port}: {exc.strerror or exc}") from None
        if args.crl is not None:
            _reload_crl_on_sighup(gateway, args.crl, args.pki_dir)
        kube = KubeClient(config)
        agent = GatewayAgent(gateway, kube, namespace=args.namespace, endpoint=endpoint,
                             name=args.name)
        try:
            await agent.start()

            async def started() -> None:
                metrics = gateway.metrics_address
                shown = f" metrics_port={metrics[1]}" if metrics is not None else ""
                announce(f"ready gateway {args.name} endpoint={endpoint} port={port}{shown}")

            await until_signal(started)
        finally:
            await agent.stop()
            await gateway.stop()
            await kube.close()

    try:
        run_loop(main())
    finally:
        sock.close()
    return EXIT_OK


def _run_gateway_processes(args: argparse.Namespace) -> int:
    """--processes N: reserve the port, then supervise N gateway processes on it
    (cli/gwprocs.py)."""
    check_reuse_port("--processes")
    if args.metrics_port and args.metrics_port + args.processes - 1 > 65535:
        raise CliError(f"--metrics-port {args.metrics_port}: {args.processes} processes need "
                       f"ports up to {args.metrics_port + args.processes - 1}", EXIT_USAGE)
    reserved = reserve_port(args.host, args.tls_port)
    try:
        port = reserved.getsockname()[1]
        endpoint = args.endpoint or f"{socket.gethostname()}:{port}"
        return supervise(args, port, endpoint)
    finally:
        reserved.close()


def _reload_crl_on_sighup(gateway: Gateway, path: Path, pki_dir: Path) -> None:
    """SIGHUP reloads --crl's file; a bad, older or unreadable one is reported and the CRL
    in force stays. Each outcome is one line on stdout (`crl loaded ...` / `crl refused ...`)."""

    def reload() -> None:
        try:
            serials = gateway.load_crl(*_read_crl(path, pki_dir))
        except (CliError, PkiError) as exc:
            log.error("SIGHUP: CRL not reloaded: %s", exc)
            announce(f"crl refused {exc}")
            return
        announce(f"crl loaded serials={len(serials)}")

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def run_rest(args: argparse.Namespace) -> int:
    from ..controlplane.rest import RestApi

    token = read_token_file(args.token_file, "--token-file")
    config = kube_config(args)
    sock = _bind(args.host, args.port)

    async def main() -> None:
        kube = KubeClient(config)
        api = RestApi(kube, namespace=config.namespace, token=token)
        await api.start(sock)
        try:
            shown = ""
            if args.metrics_port is not None:
                try:
                    metrics = await api.serve_metrics(args.metrics_host, args.metrics_port)
                except OSError as exc:
                    raise CliError(f"--metrics-port {args.metrics_port}: "
                                   f"{exc.strerror or exc}") from None
                shown = f" metrics_port={metrics[1]}"

            async def started() -> None:
                announce(f"ready rest {api.url}{shown}")

            await until_signal(started)
        finally:
            await api.stop()
            await kube.close()

    asyncio.run(main())
    return EXIT_OK


def run_apiserver(args: argparse.Namespace) -> int:
    import tempfile

    from ..bench.apiserver import ApiServer
    from ..kube.client import KubeConfig, install_crds

    sock = _bind(args.host, args.port)

    async def main() -> None:
        server = ApiServer(tls=not args.insecure_http, hosts=args.san,
                           advertise=args.advertise)
        await server.start(sock)
        try:
            path = args.kubeconfig or Path(tempfile.mkdtemp(prefix="wasmbed-kube-")) / "kc"
            server.write_kubeconfig(path, args.namespace)
            if args.crds:
                async with KubeClient(KubeConfig.from_kubeconfig(path)) as kube:
                    try:
                        await install_crds(kube)
                    except KubeError as exc:
                        raise CliError(f"installing the CRDs failed: {exc}") from None

            async def started() -> None:
                announce(str(path))
                announce(f"ready apiserver {server.url}")

            await until_signal(started)
        finally:
            await server.stop()

    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        asyncio.run(main())
    finally:
        sock.close()
    return EXIT_OK
