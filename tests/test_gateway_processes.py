"""`wasmbed-hil gateway --processes N`: several gateway processes on one port (SO_REUSEPORT).

The supervisor (cli/gwprocs.py) is run as deploy/ would run the gateway, against the emulated
API server with the controllers and the REST API beside it. New connections spread over the
processes; a device enrolled through one process and moved to the other (its process killed)
keeps its device id and still receives deployments; the killed process is restarted; SIGTERM
stops all; a supervisor killed with SIGKILL leaves no gateway process behind. Every wait is on
a line or a resource event, or a pidfd, never on time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_clients import RawClient
from kube_services import emulated_kube
from test_service_crashes import rest_call, wait_resource

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.virtual import VirtualBackend
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.process import ServiceProcess
from wasmbed_hil.bench.scrape import scrape
from wasmbed_hil.cli import main, parser
from wasmbed_hil.cli.gwprocs import child_argv
from wasmbed_hil.cli.services import service_config
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.kube.client import KubeClient
from wasmbed_hil.kube.resources import Application, Device, Gateway
from wasmbed_hil.pki import FleetCA

CLI = [sys.executable, "-m", "wasmbed_hil"]
WAIT = 60.0
NS = "wasmbed"
IDENTITY = "ab" * 32

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                                reason="this system has no SO_REUSEPORT")


# ============================================================ options and their validation
def gateway_parser() -> argparse.ArgumentParser:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["gateway"]


FULL = ["--log-format", "json", "--log-level", "info", "-v", "gateway",
        "--kubeconfig", "kc", "--context", "ctx", "--namespace", "ns", "--name", "gw",
        "--tls-port", "8444", "--host", "127.0.0.1", "--endpoint", "gw.example:8444",
        "--pki-dir", "pki", "--state-dir", "st", "--heartbeat", "2.5",
        "--heartbeat-timeout", "9", "--pairing",
        "--crl", "fleet.crl", "--revoke", IDENTITY, "--revoke", "cd" * 32,
        "--metrics-port", "9090", "--metrics-host", "127.0.0.2", "--print-events",
        "--processes", "3", "--reuse-port", "--loop", "uvloop", "--coalesce", "0",
        "--max-devices", "5000"]


def test_each_process_gets_every_option_and_its_own_name_cache_and_metrics_port() -> None:
    args = parser().parse_args(FULL)
    # FULL sets every option of `gateway` (but --in-cluster, exclusive with --kubeconfig): an
    # option added to the command fails here until FULL and child_argv carry it.
    for action in gateway_parser()._actions:
        if action.dest not in ("help", "in_cluster"):
            assert getattr(args, action.dest) != action.default, f"FULL lacks {action.dest}"
    argv = child_argv(args, 2, 40123, "gw.example:8444")
    assert argv[:3] == CLI
    child = parser().parse_args(argv[3:])
    own = {"name": "gw-p2", "state_dir": Path("st/p2"), "tls_port": 40123, "processes": 1,
           "metrics_port": 9092, "reuse_port": True}
    for key, value in vars(args).items():
        assert getattr(child, key) == own.get(key, value), key
    # --metrics-port 0 stays 0 (any free port, one each); none stays none
    args.metrics_port = 0
    assert parser().parse_args(child_argv(args, 1, 1, "e:1")[3:]).metrics_port == 0
    args.metrics_port = None
    assert parser().parse_args(child_argv(args, 1, 1, "e:1")[3:]).metrics_port is None


def test_the_service_keeps_no_protocol_trace() -> None:
    """350 bytes and 4 us per message nobody reads in a deployed gateway (services.py)."""
    config = service_config(parser().parse_args(FULL))
    assert config.trace_limit == 0
    assert config.event_log_limit == 10_000 < GatewayConfig().event_log_limit
    assert (config.name, config.heartbeat_interval_s, config.metrics_port) == ("gw", 2.5, 9090)
    assert config.heartbeat_timeout_s == 9.0
    assert service_config(parser().parse_args(
        ["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s", "--heartbeat", "2"]
    )).heartbeat_timeout_s == 6.0  # 3 intervals unless told
    assert config.max_devices == 5000


@pytest.mark.parametrize("count", ["0", "-1", "1000001", "many"])
def test_a_bad_device_limit_is_a_usage_error(count: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s",
                             "--max-devices", count])
    assert exit_info.value.code == 2
    assert f"{count!r} is no device count (1..1000000)" in capsys.readouterr().err


@pytest.mark.parametrize("count", ["0", "65", "two"])
def test_a_bad_process_count_is_a_usage_error(count: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s",
              "--processes", count])
    assert exit_info.value.code == 2
    assert "no process count (1..64)" in capsys.readouterr().err


@pytest.fixture
def offline(tmp_path: Path) -> list[str]:
    """Options of a gateway whose PKI is valid (its CA saved in tmp_path/ca) and whose API
    server does not answer."""
    ca = FleetCA.create("procs CA")
    ca.save(tmp_path / "ca")
    ca.issue_gateway("gw", hosts=("127.0.0.1",)).write(tmp_path / "pki")
    (tmp_path / "kc").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n")
    return ["gateway", "--kubeconfig", str(tmp_path / "kc"), "--name", "gw", "--tls-port", "0",
            "--host", "127.0.0.1", "--pki-dir", str(tmp_path / "pki"),
            "--state-dir", str(tmp_path / "st")]


@pytest.mark.parametrize("option", [["--processes", "2"], ["--reuse-port"]])
def test_without_so_reuseport_the_options_are_refused_before_binding(
        option: list[str], offline: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    assert main([*offline, *option]) == 2
    assert f"{option[0]} needs SO_REUSEPORT: this system has no SO_REUSEPORT" in \
        capsys.readouterr().err


def test_metrics_ports_past_65535_are_refused(offline: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*offline, "--processes", "3", "--metrics-port", "65534"]) == 2
    assert "3 processes need ports up to 65536" in capsys.readouterr().err


@contextlib.contextmanager
def _taken_port_before_a_free_one() -> Iterator[int]:
    """A port held here whose next one (p1's metrics port) was free a moment ago: an
    OS-chosen port's next one may be another test's (xdist), which made p1 fail first."""
    for _ in range(50):
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            if port < 65535:
                try:
                    socket.create_server(("127.0.0.1", port + 1)).close()
                except OSError:
                    continue
                yield port
                return
    raise AssertionError("no port with a free next one in 50 tries")


def test_a_process_that_cannot_start_stops_them_all_with_its_error(offline: list[str]) -> None:
    """p0's metrics port is taken: p0 exits 3 before serving, so the supervisor stops p1 and
    exits 3 too (a configuration error is not restarted forever)."""
    with _taken_port_before_a_free_one() as port:
        proc = subprocess.run([*CLI, *offline, "--processes", "2", "--metrics-port", str(port),
                               "--metrics-host", "127.0.0.1"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 3, proc
    assert re.search(r"^process gw-p0 pid=\d+ exited code=3 before serving; stopping all$",
                     proc.stdout, re.M), proc.stdout
    assert f"--metrics-port {port}" in proc.stderr  # p0's own error, on the shared stderr
    assert "ready gateway gw " not in proc.stdout


# ============================================================ the processes at work
@pytest.fixture
def kube(tmp_path: Path, hil_loop: LoopThread) -> Iterator[tuple[Path, KubeClient]]:
    yield from emulated_kube(tmp_path, hil_loop, token="procs-test")


def exited(pid: int, timeout: float) -> bool:
    """Whether process `pid` (not our child) ends within `timeout`: a wait on its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


class Supervised:
    """What the supervisor's lines say about its processes."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service

    def pid(self, name: str, since: int = 0) -> int:
        line = self.service.wait_line(rf"^process {name} pid=(\d+) started$", WAIT, since=since)
        return int(line.group(1))

    def metrics_url(self, name: str, since: int = 0) -> str:
        line = self.service.wait_line(rf"^\[{name}\] ready gateway {name} .*metrics_port=(\d+)",
                                      WAIT, since=since)
        return f"http://127.0.0.1:{line.group(1)}/metrics"


def accepted(url: str) -> int:
    return int(scrape(url, WAIT).value("wasmbed_gateway_connections_accepted_total"))


def test_processes_share_the_port_and_a_device_keeps_its_enrollment_across_them(
        kube: tuple[Path, KubeClient], tmp_path: Path, hil_loop: LoopThread) -> None:
    kubeconfig, client = kube
    ca = FleetCA.create("procs CA")
    ca.issue_gateway("gw", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    (tmp_path / "token").write_text("procs-token")
    opts = ["--kubeconfig", str(kubeconfig)]
    logs = tmp_path / "logs"
    controllers = ServiceProcess("controllers", [*CLI, "controllers", *opts], logs)
    supervisor = ServiceProcess("gateway", [
        *CLI, "gateway", *opts, "--name", "gw", "--tls-port", "0", "--host", "127.0.0.1",
        "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "state"),
        "--pairing", "--heartbeat", "1", "--processes", "2", "--metrics-port", "0",
        "--metrics-host", "127.0.0.1"], logs, ready=r"^ready gateway gw ")
    rest = ServiceProcess("rest", [*CLI, "rest", *opts, "--port", "0", "--host", "127.0.0.1",
                                   "--token-file", str(tmp_path / "token")], logs)
    names = ("gw-p0", "gw-p1")
    with controllers, supervisor, rest:
        ready = supervisor.ready
        assert ready is not None and "processes=2" in ready.string
        port = int(ready.string.rsplit("=", 1)[1])
        sup = Supervised(supervisor)
        pids = {n: sup.pid(n) for n in names}
        urls = {n: sup.metrics_url(n) for n in names}
        assert len(set(pids.values())) == 2 and len(set(urls.values())) == 2
        for name in names:  # each process a gateway of its own, with its own cache
            wait_resource(hil_loop, client, Gateway, name, lambda o: True, "exists")
            assert (tmp_path / "state" / name[-2:] / "gateway.sqlite3").exists()

        # 1. New connections spread over both processes (the kernel hashes each connection;
        # 40 all on one of two: 2 ** -39). A client's TLS handshake ends only once a process
        # accepted its connection, so the counters are read after the last one.
        ca.issue_device("probe").write(tmp_path / "probe")
        before = {n: accepted(urls[n]) for n in names}
        probes = [RawClient(("127.0.0.1", port), tmp_path / "probe") for _ in range(40)]
        for probe in probes:
            probe.close()
        counts = {n: accepted(urls[n]) - before[n] for n in names}
        assert sum(counts.values()) == 40 and all(counts.values()), counts

        # 2. A device enrolls through one process and runs an Application.
        device = VirtualBackend(hil_loop, tmp_path / "dev").create(
            "edge-1", ca.issue_device("edge-1"), ("127.0.0.1", port))
        try:
            device.power_on()
            device_id = device.wait_online(WAIT)
            url = rest.ready.string.split()[2] if rest.ready else ""
            _run_app(hil_loop, client, url, "adder", [2, 3], 5)
            dev = wait_resource(hil_loop, client, Device, "edge-1", lambda o: bool(
                (o.get("status") or {}).get("enrollment")), "with its enrollment published")
            serving = dev["status"]["gateway"]["name"]
            assert serving in names
            other = names[1 - names.index(serving)]

            # 3. Its process dies: the supervisor says so and restarts it; meanwhile the
            # device reconnects to the other process, which knows it (same device id).
            mark = len(supervisor.lines)
            os.kill(pids[serving], signal.SIGKILL)
            supervisor.wait_line(rf"^process {serving} pid={pids[serving]} exited code=-9; "
                                 r"restarting in 0\.5s$", WAIT, since=mark)
            moved = wait_resource(hil_loop, client, Device, "edge-1", lambda o: (
                (o.get("status") or {}).get("gateway") or {}).get("name") == other
                and o["status"].get("phase") == "Connected", f"served by {other}")
            assert moved["status"]["deviceId"] == device_id
            restarted = sup.pid(serving, since=mark)
            assert restarted != pids[serving]
            sup.metrics_url(serving, since=mark)  # serving again

            # 4. A deployment reaches it through the other process.
            _run_app(hil_loop, client, url, "adder2", [4, 5], 9)
            dev = wait_resource(hil_loop, client, Device, "edge-1", lambda o: True, "exists")
            assert dev["status"]["gateway"]["name"] == other
            assert dev["status"]["deviceId"] == device_id
        finally:
            device.close()

        # 5. SIGTERM stops every process cleanly; none is left, and the port is free.
        alive = [pids[other], restarted]
        assert supervisor.terminate(WAIT) == 0
        assert all(exited(pid, 0) for pid in alive)
        socket.create_server(("127.0.0.1", port)).close()


def _run_app(loop: LoopThread, client: KubeClient, url: str, name: str, args: list[int],
             value: int) -> None:
    """Create Application `name` (add) for every device and wait for its result."""
    rest_call(url, "procs-token", "POST", "/api/v1/applications", {
        "name": name, "targetDevices": {"allDevices": True}, "args": args,
        "wasmBytes": base64.b64encode(modules.build("add")).decode()})

    def done(o: dict[str, Any]) -> bool:
        rows = (o.get("status") or {}).get("deviceStatuses") or []
        return bool(rows) and rows[0].get("values") == [value]

    wait_resource(loop, client, Application, name, done, f"with the result {value}")


def test_sighup_makes_every_process_reload_its_crl(offline: list[str], tmp_path: Path) -> None:
    ca = FleetCA.load(tmp_path / "ca")
    crl = tmp_path / "fleet.crl"
    crl.write_bytes(ca.crl_pem())
    service = ServiceProcess("sup", [*CLI, *offline, "--processes", "2", "--crl", str(crl)],
                             tmp_path / "logs", ready=r"^ready gateway gw ")
    with service:
        ca.revoke(ca.issue_device("listed"))
        crl.write_bytes(ca.crl_pem())
        mark = len(service.lines)
        assert service.pid is not None
        os.kill(service.pid, signal.SIGHUP)
        for name in ("gw-p0", "gw-p1"):
            service.wait_line(rf"^\[{name}\] crl loaded serials=1$", WAIT, since=mark)
        assert service.running
        assert service.terminate(WAIT) == 0


def test_a_killed_supervisor_leaves_no_gateway_process(offline: list[str],
                                                       tmp_path: Path) -> None:
    service = ServiceProcess("sup", [*CLI, *offline, "--processes", "2"], tmp_path / "logs",
                             ready=r"^ready gateway gw ")
    with service:
        sup = Supervised(service)
        pids = [sup.pid("gw-p0"), sup.pid("gw-p1")]
        assert service.kill() == -9
        # PR_SET_PDEATHSIG: each process gets SIGTERM when the supervisor dies
        assert all(exited(pid, WAIT) for pid in pids)
