"""`wasmbed-hil`: help, exit codes, and the services started as deploy/ starts them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.cli import main, parser

CLI = [sys.executable, "-m", "wasmbed_hil"]
WAIT = 60


@pytest.mark.parametrize("command", ["up", "apiserver", "controllers", "gateway", "rest",
                                     "devices", "apps", "deploy", "report"])
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"wasmbed-hil {command}" in out
    assert len(out.splitlines()) > 5


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unreachable_kubeconfig_is_an_environment_error(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    code = main(["rest", "--kubeconfig", str(tmp_path / "missing"), "--token-file", str(token)])
    assert code == 3
    assert "cannot reach the API server" in capsys.readouterr().err


def test_empty_token_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n")
    (tmp_path / "token").write_text("\n")
    code = main(["rest", "--kubeconfig", str(kubeconfig), "--token-file",
                 str(tmp_path / "token"), "--port", "0"])
    assert code == 3
    assert "is empty" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "what"), [
    (b"first-secret\nsecond-secret\n", "character 13 is a line break"),
    ("s\u20acret-token".encode(), "character 2 is the character U+20AC"),
    ("s\u00f8ret-token".encode(), "character 2 is the character U+00F8"),
])
def test_a_token_that_cannot_travel_in_a_header_is_refused_unquoted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, what: str) -> None:
    (tmp_path / "token").write_bytes(content)
    with socket.socket() as closed:  # bound, never listening: nothing is reached
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        code = main(["devices", "--api", url, "--token-file", str(tmp_path / "token")])
        err = capsys.readouterr().err
        assert code == 3, err
        assert f"token file {tmp_path / 'token'}: the token must be one line of printable " \
               f"ASCII characters; {what}" in " ".join(err.split())
        assert "secret" not in err.replace(str(tmp_path), "")
        # the REST API's own token file: refused before anything is started
        code = main(["rest", "--kubeconfig", str(tmp_path / "missing"), "--token-file",
                     str(tmp_path / "token"), "--port", "0"])
        err = capsys.readouterr().err
        assert code == 3, err
        assert f"--token-file {tmp_path / 'token'}: the token must be" in " ".join(err.split())
        assert "secret" not in err.replace(str(tmp_path), "")


@pytest.mark.parametrize(("url", "problem"), [
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://[zz]:8080", "does not appear to be an IPv4 or IPv6 address"),
])
def test_an_api_url_with_a_broken_ipv6_host_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, problem: str) -> None:
    (tmp_path / "token").write_text("t0ken\n")
    code = main(["devices", "--api", url, "--token-file", str(tmp_path / "token")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert f"--api: {url!r} is not an http(s) URL" in err and problem in err


def test_a_rest_token_file_that_is_not_utf8_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_bytes(b"tok\xffen")
    code = main(["rest", "--kubeconfig", str(tmp_path / "missing"), "--token-file",
                 str(tmp_path / "token"), "--port", "0"])
    assert code == 3
    assert "not UTF-8 text (byte 3)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_gateway_stale_time_that_is_no_duration_is_a_usage_error(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """0 or less made the Gateway daemons' pause zero (each looped without waiting, and every
    gateway was Failed at once); NaN marked every gateway Failed."""
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["controllers", "--gateway-stale", value])
    assert info.value.code == 2
    assert "argument --gateway-stale: must be > 0" in capsys.readouterr().err
    assert parser().parse_args(["controllers", "--gateway-stale", "0.5"]).gateway_stale == 0.5


_GATEWAY = ["gateway", "--name", "gw", "--pki-dir", "pki", "--state-dir", "state"]


@pytest.mark.parametrize(("argv", "message"), [
    ([*_GATEWAY, "--tls-port", "70000"], "argument --tls-port: '70000' is no TCP port"),
    ([*_GATEWAY, "--tls-port", "-1"], "argument --tls-port: '-1' is no TCP port"),
    (["rest", "--token-file", "t", "--port", "65536"], "argument --port: '65536' is no TCP"),
    (["apiserver", "--port", "99999"], "argument --port: '99999' is no TCP port"),
    (["up", "--port", "70000"], "argument --port: '70000' is no TCP port"),
    ([*_GATEWAY, "--endpoint", "gw.example:70000"], "the port must be 1..65535"),
    ([*_GATEWAY, "--endpoint", "gw.example:\u00b2"], "the port must be 1..65535"),
    ([*_GATEWAY, "--endpoint", "gw.example:"], "the port must be 1..65535"),
    ([*_GATEWAY, "--endpoint", ":8443"], "is no host:port"),
    ([*_GATEWAY, "--endpoint", "g" * 600 + ":8443"], "at most 512 characters"),
    ([*_GATEWAY, "--heartbeat", "nan"], "argument --heartbeat: must be > 0, got nan"),
    ([*_GATEWAY, "--heartbeat", "0"], "argument --heartbeat: must be > 0, got 0"),
    (["up", "--heartbeat", "-2"], "argument --heartbeat: must be > 0, got -2"),
    (["up", "--timeout", "nan"], "argument --timeout: must be > 0, got nan"),
    (["up", "--timeout", "-1"], "argument --timeout: must be > 0, got -1"),
])
def test_service_options_out_of_range_are_usage_errors(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused as they are parsed: a port past 65535 made bind() raise OverflowError (a
    traceback); an endpoint or heartbeat the Gateway resource cannot hold (port 70000,
    NaN) made the gateway's agent fail every pass, never registering the gateway."""
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    good = [a.replace("70000", "8443") for a in argv]
    if "--endpoint" in argv and "70000" in argv[-1]:
        assert parser().parse_args(good).endpoint == "gw.example:8443"


class Service:
    """A CLI service in a subprocess; `ready` is its `ready ...` line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # blocks until the service speaks or exits
            self.lines.append(line.rstrip())
            if line.startswith("ready "):
                self.ready = line.split()
                return
        self.proc.wait(WAIT)
        raise AssertionError(f"{args[0]} exited {self.proc.returncode} before ready: "
                             f"{self.lines} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT)
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[Path]:
    loop = LoopThread("cli-test-apiserver")
    server = ApiServer(token="cli-test")
    loop.run(server.start())
    try:
        from wasmbed_hil.kube.client import KubeClient, KubeConfig, install_crds

        path = server.write_kubeconfig(tmp_path / "kubeconfig", "wasmbed")

        async def prepare() -> None:
            async with KubeClient(KubeConfig.from_kubeconfig(path)) as kube:
                await install_crds(kube)
                await kube.ensure_namespace("wasmbed")

        loop.run(prepare())
        yield path
    finally:
        loop.run(server.stop())
        loop.close()


def test_rest_service_serves_and_stops_on_sigterm(apiserver: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    service = Service("rest", "--kubeconfig", str(apiserver), "--port", "0", "--host",
                      "127.0.0.1", "--token-file", str(tmp_path / "token"))
    try:
        url = service.ready[2]
        with urllib.request.urlopen(f"{url}/health", timeout=WAIT) as response:
            assert json.load(response) == {"status": "ok"}
        request = urllib.request.Request(f"{url}/api/v1/devices",
                                         headers={"Authorization": "Bearer secret-token"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            assert json.load(response) == {"items": []}
    finally:
        assert service.stop() == 0


def test_gateway_service_registers_its_gateway(apiserver: Path, tmp_path: Path) -> None:
    from wasmbed_hil.pki import FleetCA

    ca = FleetCA.create("cli test CA")
    ca.issue_gateway("gw-cli", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    service = Service("gateway", "--kubeconfig", str(apiserver), "--name", "gw-cli",
                      "--tls-port", "0", "--host", "127.0.0.1", "--endpoint", "gw.example:8443",
                      "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "st"),
                      "--metrics-port", "0", "--metrics-host", "127.0.0.1")
    try:
        from wasmbed_hil.bench.scrape import scrape

        (metrics_port,) = [w.split("=")[1] for w in service.ready if w.startswith("metrics_port=")]
        metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.value("wasmbed_gateway_connections_open", gateway="gw-cli") == 0
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(apiserver),
                                    client_configuration=configuration)
        with k8s.ApiClient(configuration) as api:
            from kubernetes import watch

            custom = k8s.CustomObjectsApi(api)
            phase = None
            for event in watch.Watch().stream(
                custom.list_namespaced_custom_object, "wasmbed.github.io", "v1", "wasmbed",
                "gateways", timeout_seconds=WAIT,
            ):
                obj = event["object"]
                phase = (obj.get("status") or {}).get("phase")
                if phase == "Running":
                    break
            assert phase == "Running"
            assert obj["spec"]["endpoint"] == "gw.example:8443"
    finally:
        assert service.stop() == 0
    assert (tmp_path / "st" / "gateway.sqlite3").exists()


def test_gateway_service_loads_a_crl_and_revokes_identities_at_start(apiserver: Path,
                                                                     tmp_path: Path) -> None:
    from wasmbed_hil.gateway import GatewayStore
    from wasmbed_hil.pki import FleetCA

    ca = FleetCA.create("cli crl CA")
    ca.issue_gateway("gw-crl", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    listed, banned = ca.issue_device("listed"), ca.issue_device("banned")
    ca.revoke(listed)
    (tmp_path / "fleet.crl").write_bytes(ca.crl_pem())
    service = Service("gateway", "--kubeconfig", str(apiserver), "--name", "gw-crl",
                      "--tls-port", "0", "--host", "127.0.0.1",
                      "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "st"),
                      "--crl", str(tmp_path / "fleet.crl"), "--revoke", banned.identity)
    assert service.stop() == 0
    store = GatewayStore(tmp_path / "st" / "gateway.sqlite3")
    try:
        assert store.crl_serials == {listed.serial}
        assert store.revoked == {banned.identity}
    finally:
        store.close()


def test_gateway_service_reloads_its_crl_on_sighup_and_never_an_older_one(
        apiserver: Path, tmp_path: Path) -> None:
    from wasmbed_hil.gateway import GatewayStore
    from wasmbed_hil.pki import FleetCA

    ca = FleetCA.create("cli sighup CA")
    ca.issue_gateway("gw-hup", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    crl_file = tmp_path / "fleet.crl"
    empty = ca.crl_pem()
    crl_file.write_bytes(empty)
    service = Service("gateway", "--kubeconfig", str(apiserver), "--name", "gw-hup",
                      "--tls-port", "0", "--host", "127.0.0.1",
                      "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "st"),
                      "--crl", str(crl_file))
    listed = ca.issue_device("listed")
    try:
        assert service.proc.stdout is not None
        ca.revoke(listed)
        crl_file.write_bytes(ca.crl_pem())
        service.proc.send_signal(signal.SIGHUP)
        assert service.proc.stdout.readline().strip() == "crl loaded serials=1"
        crl_file.write_bytes(empty)  # a replay of the older CRL
        service.proc.send_signal(signal.SIGHUP)
        line = service.proc.stdout.readline().strip()
        assert line.startswith("crl refused") and "older than the loaded CRL" in line
        crl_file.write_bytes(b"garbage")
        service.proc.send_signal(signal.SIGHUP)
        assert "not a PEM or DER CRL" in service.proc.stdout.readline()
        # the fleet CA's certificate damaged since the start: refused, not a traceback in
        # the signal handler with no line for whoever waits for one
        crl_file.write_bytes(ca.crl_pem())
        ca_pem = (tmp_path / "pki" / "ca.pem").read_bytes()
        (tmp_path / "pki" / "ca.pem").write_bytes(b"not a certificate")
        service.proc.send_signal(signal.SIGHUP)
        line = service.proc.stdout.readline().strip()
        assert line.startswith("crl refused") and "ca.pem" in line, line
        (tmp_path / "pki" / "ca.pem").write_bytes(ca_pem)
        assert service.proc.poll() is None  # still serving
    finally:
        assert service.stop() == 0
    store = GatewayStore(tmp_path / "st" / "gateway.sqlite3")
    try:
        assert store.crl_serials == {listed.serial}
    finally:
        store.close()


@pytest.mark.parametrize(("crl", "code", "says"), [
    ("garbage", 2, "not a PEM or DER CRL"),
    ("another CA's", 2, "not signed by"),
    ("missing", 3, "No such file"),
])
def test_gateway_service_refuses_a_bad_crl_before_serving(apiserver: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           crl: str, code: int, says: str
                                                           ) -> None:
    from wasmbed_hil.pki import FleetCA

    FleetCA.create("cli bad crl CA").issue_gateway("gw-bad", hosts=("127.0.0.1",)).write(
        tmp_path / "pki")
    if crl == "garbage":
        (tmp_path / "fleet.crl").write_bytes(b"not a CRL")
    elif crl == "another CA's":
        (tmp_path / "fleet.crl").write_bytes(FleetCA.create("another CA").crl_pem())
    assert main(["gateway", "--kubeconfig", str(apiserver), "--name", "gw-bad",
                 "--tls-port", "0", "--host", "127.0.0.1", "--pki-dir", str(tmp_path / "pki"),
                 "--state-dir", str(tmp_path / "st"), "--crl", str(tmp_path / "fleet.crl")]
                ) == code
    err = capsys.readouterr().err
    assert "--crl" in err and says in err
    assert not (tmp_path / "st").exists()  # refused before the local cache was touched


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_gateway_service_refuses_a_bad_metrics_port(port: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s",
              "--metrics-port", port])
    assert exit_info.value.code == 2
    assert "no TCP port" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["2", "1.5"])
def test_gateway_service_refuses_a_heartbeat_timeout_not_longer_than_the_interval(
        timeout: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--name", "g", "--pki-dir", str(tmp_path / "p"),
                 "--state-dir", str(tmp_path / "s"), "--heartbeat", "2",
                 "--heartbeat-timeout", timeout]) == 2
    err = capsys.readouterr().err
    assert f"--heartbeat-timeout {float(timeout):g} must be longer than --heartbeat 2" in err
    assert not (tmp_path / "s").exists()  # refused before anything was touched


def test_gateway_service_refuses_a_malformed_identity(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s",
              "--revoke", "not-an-identity"])
    assert exit_info.value.code == 2
    assert "64 lowercase hex digits" in capsys.readouterr().err


def test_services_as_separate_processes_run_an_application(apiserver: Path, tmp_path: Path,
                                                           hil_loop: LoopThread) -> None:
    """The deploy/ topology, one process per service: controllers, a gateway and the REST
    API against one API server; a device joins the gateway and runs an Application."""
    import base64

    from wasmbed_hil.bench import modules
    from wasmbed_hil.bench.backends.virtual import VirtualBackend
    from wasmbed_hil.pki import FleetCA

    ca = FleetCA.create("cli topology CA")
    ca.issue_gateway("gw-0", hosts=("localhost", "127.0.0.1")).write(tmp_path / "pki")
    (tmp_path / "token").write_text("topology-token")
    kube = ["--kubeconfig", str(apiserver)]
    services = [Service("controllers", *kube)]
    try:
        services.append(Service("gateway", *kube, "--name", "gw-0", "--tls-port", "0",
                                "--host", "127.0.0.1", "--pki-dir", str(tmp_path / "pki"),
                                "--state-dir", str(tmp_path / "state"), "--pairing",
                                "--heartbeat", "1"))
        port = int(services[-1].ready[-1].split("=")[1])
        services.append(Service("rest", *kube, "--port", "0", "--host", "127.0.0.1",
                                "--token-file", str(tmp_path / "token")))
        rest = services[-1].ready[2]
        device = VirtualBackend(hil_loop, tmp_path / "dev").create(
            "edge-1", ca.issue_device("edge-1"), ("127.0.0.1", port))
        try:
            device.power_on()
            device.wait_online(WAIT)

            def call(method: str, path: str, body: object = None) -> object:
                data = json.dumps(body).encode() if body is not None else None
                request = urllib.request.Request(
                    rest + path, data=data, method=method,
                    headers={"Authorization": "Bearer topology-token",
                             "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=WAIT) as response:
                    return json.load(response)

            call("POST", "/api/v1/applications", {
                "name": "adder", "targetDevices": {"allDevices": True}, "args": [2, 3],
                "wasmBytes": base64.b64encode(modules.build("add")).decode()})
            from kubernetes import client as k8s
            from kubernetes import config as k8s_config
            from kubernetes import watch

            configuration = k8s.Configuration()
            k8s_config.load_kube_config(config_file=str(apiserver),
                                        client_configuration=configuration)
            with k8s.ApiClient(configuration) as api:
                custom = k8s.CustomObjectsApi(api)
                seen = None
                for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object, "wasmbed.github.io", "v1",
                    "wasmbed", "applications", timeout_seconds=WAIT,
                ):
                    seen = event["object"].get("status") or {}
                    rows = seen.get("deviceStatuses") or []
                    if seen.get("phase") == "Running" and rows and "values" in rows[0]:
                        break
            assert seen is not None and seen.get("phase") == "Running", seen
            assert seen["deviceStatuses"][0]["values"] == [5]
            assert seen["deviceStatuses"][0]["device"] == "edge-1"  # registered by the gateway
            assert call("GET", "/api/v1/devices/edge-1")["phase"] == "Connected"
        finally:
            device.close()
    finally:
        codes = [s.stop() for s in reversed(services)]
    assert codes == [0] * len(services)


def test_gateway_with_an_empty_pki_dir_says_so(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\n")
    (tmp_path / "pki").mkdir()
    code = main(["gateway", "--kubeconfig", str(kubeconfig), "--name", "g", "--tls-port", "0",
                 "--pki-dir", str(tmp_path / "pki"), "--state-dir", str(tmp_path / "s")])
    assert code == 3
    assert "--pki-dir" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "answer"), [
    (["devices"], b"{}"),
    (["devices"], b'{"items": [{}]}'),
    (["devices"], b'{"items": [{"name": 1, "phase": "Connected"}]}'),
    (["devices", "show", "d"], b"[]"),
    (["apps"], b'{"items": "none"}'),
    (["apps", "show", "a"], b'{"name": "a"}'),
])
def test_an_answer_of_another_shape_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str],
        answer: bytes) -> None:
    """--api pointing at a server that is not this REST API (it answers 200 with JSON of
    another shape): exit 3 and one line, not a KeyError or TypeError traceback."""
    import http.server
    import threading

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "token").write_text("t0ken\n")
        code = main([*command, "--api", f"http://127.0.0.1:{server.server_port}",
                     "--token-file", str(tmp_path / "token")])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 3, err
    assert "the REST API's answer is not of the shape this command reads" in err
    assert "Traceback" not in err
