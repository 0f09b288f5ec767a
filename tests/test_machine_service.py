"""The device manager as a service (bench.machineservice) and its client in the product
(controlplane.machineclient): what crosses between a controllers process and the harness's
device manager, and every way it can go wrong."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.controllersprocess import check_process_settings
from wasmbed_hil.bench.devicemanager import DeviceManagerError
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.machineservice import MachineService
from wasmbed_hil.bench.platform import PlatformConfig
from wasmbed_hil.controlplane.controllers import ControllerSettings
from wasmbed_hil.controlplane.emulation import DeviceManagerUnreachable, EmulationError
from wasmbed_hil.controlplane.machineclient import (
    MAX_ANSWER,
    RemoteMachineManager,
    parse_manager_url,
)
from wasmbed_hil.gateway import GatewayConfig


class FakeManager:
    """Records calls; start/stop answer as `outcome` says."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.outcome: BaseException | None = None

    def start(self, *args: Any) -> Any:
        self.calls.append(("start", args))
        if self.outcome is not None:
            raise self.outcome
        return type("M", (), {"backend": args[2], "gateway": "gateway-0"})()

    def stop(self, name: str) -> bool:
        self.calls.append(("stop", (name,)))
        if self.outcome is not None:
            raise self.outcome
        return name == "running"


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("machine-service-test")
    yield thread
    thread.close()


@pytest.fixture
def served(loop: LoopThread) -> Iterator[tuple[MachineService, FakeManager]]:
    manager = FakeManager()
    service = MachineService(manager)  # type: ignore[arg-type]
    loop.run(service.start())
    yield service, manager
    loop.run(service.stop())


def client(service: MachineService, token: str | None = None) -> RemoteMachineManager:
    assert service.url is not None
    return RemoteMachineManager(service.url, token or service.token, timeout_s=10)


def raw(service: MachineService, method: str, path: str, body: bytes | None = None,
        token: str | None = None) -> tuple[int, Any]:
    assert service.url is not None
    host, port, _ = parse_manager_url(service.url)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Authorization": f"Bearer {token or service.token}"}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_start_and_stop_reach_the_manager_with_every_field(served) -> None:
    service, manager = served
    remote = client(service)
    machine = remote.start("dev-a", "id-1", "virtual", "mps2-an385", "gateway-1",
                           {"max_module_size": 4096})
    assert (machine.backend, machine.gateway) == ("virtual", "gateway-0")
    assert remote.stop("running") is True
    assert remote.stop("dev-a") is False
    assert manager.calls == [
        ("start", ("dev-a", "id-1", "virtual", "mps2-an385", "gateway-1",
                   {"max_module_size": 4096})),
        ("stop", ("running",)), ("stop", ("dev-a",))]


def test_starts_do_not_wait_behind_the_loops_default_executor(served, loop) -> None:
    """A machine start waits on the harness loop; run in the loop's default executor, it
    would queue behind whatever else the loop put there (here: every worker busy)."""
    service, _ = served
    release = threading.Event()

    async def occupy() -> None:
        running = asyncio.get_running_loop()
        for _ in range(64):  # more than the default executor's workers
            running.run_in_executor(None, release.wait, 30)

    loop.run(occupy())
    try:
        machine = RemoteMachineManager(service.url, service.token, timeout_s=5).start(
            "dev-a", "id-1", "virtual")
        assert machine.gateway == "gateway-0"
    finally:
        release.set()


def test_a_machine_that_cannot_start_is_the_managers_own_message(served) -> None:
    service, manager = served
    manager.outcome = DeviceManagerError("no backend called 'renode' is available here")
    with pytest.raises(EmulationError) as caught:
        client(service).start("dev-a", "id-1", "renode")
    assert str(caught.value) == "no backend called 'renode' is available here"
    assert not isinstance(caught.value, DeviceManagerUnreachable)


def test_a_failing_manager_is_a_500_the_client_names(served) -> None:
    service, manager = served
    manager.outcome = RuntimeError("disk full")
    with pytest.raises(EmulationError, match=r"answered 500: .*RuntimeError: disk full"):
        client(service).start("dev-a", "id-1", "virtual")
    with pytest.raises(EmulationError, match="answered 500"):
        client(service).stop("dev-a")


def test_a_wrong_token_is_refused_and_never_shown(served) -> None:
    service, manager = served
    with pytest.raises(EmulationError, match=r"token was refused \(401\)") as caught:
        client(service, token="not-the-token").start("dev-a", "id-1", "virtual")
    assert "not-the-token" not in str(caught.value)
    assert service.token not in str(caught.value)
    assert manager.calls == []
    assert service.token not in repr(service) and service.token not in repr(client(service))


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("PUT", "/v1/machines/dev-a", b"{not json", "must be a JSON object"),
    ("PUT", "/v1/machines/dev-a", b"\xff\xfe", "must be a JSON object"),
    ("PUT", "/v1/machines/dev-a", b"[1]", "must be a JSON object"),
    ("PUT", "/v1/machines/dev-a", b'{"backend": "virtual"}', "'identity' must be"),
    ("PUT", "/v1/machines/dev-a", b'{"identity": "i", "backend": ""}', "'backend' must be"),
    ("PUT", "/v1/machines/dev-a", b'{"identity": "i", "backend": "v", "board": 3}',
     "'board' must be a string or null"),
    ("PUT", "/v1/machines/dev-a", b'{"identity": "i", "backend": "v", "options": []}',
     "'options' must be a JSON object"),
    ("PUT", "/v1/machines/Not_A_Name", b'{"identity": "i", "backend": "v"}',
     "is not a Device name"),
    ("DELETE", "/v1/machines/..", None, "is not a Device name"),
])
def test_bad_requests_are_400_and_reach_no_machine(served, method, path, body,
                                                  message) -> None:
    service, manager = served
    code, answer = raw(service, method, path, body)
    assert code == 400 and message in answer["error"]
    assert manager.calls == []


def test_unknown_routes_methods_and_huge_bodies_answer_json(served) -> None:
    service, _ = served
    assert raw(service, "GET", "/v1/machines/dev-a")[0] == 405
    assert raw(service, "PUT", "/v1/other")[0] == 404
    code, answer = raw(service, "PUT", "/v1/machines/dev-a", b"x" * (1024 * 1024))
    assert code == 413 and answer["error"]
    code, answer = raw(service, "PUT", "/v1/machines/dev-a", b"{}", token="wrong")
    assert code == 401 and "Bearer" in answer["error"]


def test_no_manager_there_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        remote = RemoteMachineManager(f"http://127.0.0.1:{port}", "t", timeout_s=5)
        with pytest.raises(DeviceManagerUnreachable, match=f"127.0.0.1:{port} did not answer"):
            remote.start("dev-a", "id-1", "virtual")
        with pytest.raises(DeviceManagerUnreachable):
            remote.stop("dev-a")


class _Canned(BaseHTTPRequestHandler):
    status = 200
    body = b""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_PUT = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[type[_Canned], str]]:
    handler = type("Handler", (_Canned,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.mark.parametrize(("status", "body", "message"), [
    (200, b"not json", "answered 200: not json"),
    (200, b'{"backend": 1, "gateway": "g"}', "has no backend and gateway names"),
    (200, b"[]", "answered 200: []"),
    (422, b'{"no": "error"}', 'answered 422: {"no": "error"}'),
    (503, b"", "answered 503: no body"),
    (200, b" " * (MAX_ANSWER + 1), f"answer longer than {MAX_ANSWER} bytes"),
])
def test_a_manager_answering_another_shape_is_a_clear_error(canned, status, body,
                                                            message) -> None:
    handler, url = canned
    handler.status, handler.body = status, body
    with pytest.raises(EmulationError) as caught:
        RemoteMachineManager(url, "t", timeout_s=10).start("dev-a", "id-1", "virtual")
    assert message in str(caught.value)
    assert not isinstance(caught.value, DeviceManagerUnreachable)


def test_a_stop_answer_without_a_boolean_is_refused(canned) -> None:
    handler, url = canned
    handler.body = b'{"stopped": "yes"}'
    with pytest.raises(EmulationError, match="no 'stopped' true or false"):
        RemoteMachineManager(url, "t", timeout_s=10).stop("dev-a")


@pytest.mark.parametrize(("url", "message"), [
    ("https://127.0.0.1:1", "must be http://HOST:PORT"),
    ("127.0.0.1:1", "must be http://HOST:PORT"),
    ("http://127.0.0.1", "needs a port"),
    ("http://127.0.0.1:99999", "out of range"),
    ("http://u:p@127.0.0.1:1", "no user, query or fragment"),
    ("http://127.0.0.1:1/?a=b", "no user, query or fragment"),
])
def test_bad_manager_urls_are_refused(url, message) -> None:
    with pytest.raises(ValueError, match=message):
        RemoteMachineManager(url, "t")


@pytest.mark.parametrize("token", ["", "a\nb"])
def test_a_token_of_no_use_is_refused(token) -> None:
    with pytest.raises(ValueError, match="one non-empty line"):
        RemoteMachineManager("http://127.0.0.1:1", token)


def test_a_controllers_process_takes_only_what_its_command_does() -> None:
    check_process_settings(ControllerSettings(gateway_stale_s=5.0, metrics_port=0))
    with pytest.raises(ValueError, match="not resync_s, batch_window_s"):
        check_process_settings(ControllerSettings(resync_s=1.0, batch_window_s=0.5))
    with pytest.raises(ValueError, match="not resync_s"):
        PlatformConfig(controllers_process=True,
                       controller_settings=ControllerSettings(resync_s=1.0))
    with pytest.raises(ValueError, match="not with a kubeconfig"):
        PlatformConfig(apiserver_process=True, kubeconfig=Path("kc"))


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--machine-manager", "http://127.0.0.1:1"], 2,
     "--machine-manager and --machine-manager-token-file go together"),
    (["--machine-manager-token-file", "TOKEN"], 2,
     "--machine-manager and --machine-manager-token-file go together"),
    (["--machine-manager", "https://127.0.0.1:1", "--machine-manager-token-file", "TOKEN"], 2,
     "--machine-manager: device manager URL 'https://127.0.0.1:1': must be http://HOST:PORT"),
    (["--machine-manager", "http://127.0.0.1:1", "--machine-manager-token-file", "EMPTY"], 3,
     "--machine-manager-token-file EMPTY is empty"),
    (["--machine-manager", "http://127.0.0.1:1", "--machine-manager-token-file", "TWO"], 3,
     "--machine-manager-token-file TWO: the token must be one line"),
    (["--machine-manager", "http://127.0.0.1:1", "--machine-manager-token-file", "NONE"], 3,
     "--machine-manager-token-file: [Errno 2]"),
])
def test_the_controllers_command_checks_its_device_manager_options(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], code: int,
        message: str) -> None:
    from wasmbed_hil.cli import main

    files = {"TOKEN": "s3cret\n", "EMPTY": "\n", "TWO": "s3cret\nsecond\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    extra = [str(tmp_path / a) if a in (*files, "NONE") else a for a in extra]
    message = message.replace("EMPTY", str(tmp_path / "EMPTY")).replace(
        "TWO", str(tmp_path / "TWO"))
    # the kubeconfig is missing: each problem above is found before it is read
    assert main(["controllers", "--kubeconfig", str(tmp_path / "missing"), *extra]) == code
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "s3cret" not in err


def test_a_platform_process_that_died_is_reported_at_stop(tmp_path: Path,
                                                          loop: LoopThread) -> None:
    """A controllers or API server process that crashed during a test must not pass
    unnoticed: the platform's stop says which, with its status and its log."""
    import os
    import signal

    from wasmbed_hil.bench.platform import Platform
    from wasmbed_hil.pki import FleetCA

    platform = Platform(loop, FleetCA.create("t"), tmp_path / "p", PlatformConfig(
        rest=False, apiserver_process=True, controllers_process=True))
    try:
        platform.start()
        with pytest.raises(RuntimeError, match="outages need the emulated API server in this "
                           "process"):
            platform.cut_api()  # no fault proxy before an API server in its own process
        process = platform.controllers.process  # type: ignore[union-attr]
        assert process is not None and process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
    except BaseException:
        platform.stop()
        raise
    with pytest.raises(RuntimeError) as caught:
        platform.stop()
    log = tmp_path / "p" / "logs" / "controllers.err.log"
    assert f"controllers ended with status -9 (its output: {log})" in str(caught.value)
    assert platform.apiserver_process is not None and not platform.apiserver_process.running


def test_gateways_as_processes_serve_and_refuse_what_needs_them_in_process(
        tmp_path: Path, loop: LoopThread) -> None:
    from wasmbed_hil.bench.platform import Platform
    from wasmbed_hil.pki import FleetCA

    with pytest.raises(ValueError, match="the balancer needs in-process gateways"):
        PlatformConfig(gateway_processes=True, balancer=True)
    heartbeat = GatewayConfig.for_tests(heartbeat_interval_s=1.0, heartbeat_timeout_s=7.0)
    platform = Platform(loop, FleetCA.create("t"), tmp_path / "p",
                        PlatformConfig(rest=False, gateway_processes=True,
                                       gateway_config=heartbeat))
    try:
        platform.start()
        process = platform.gateway_processes["gateway-0"]
        assert platform.gateways == {}
        assert platform._endpoints() == {"gateway-0": process.endpoint}
        gw = platform.wait("gateways", "gateway-0",
                           lambda o: (o.get("status") or {}).get("phase") == "Running",
                           "to run", 30)
        assert gw["spec"]["endpoint"] == f"127.0.0.1:{process.endpoint[1]}"
        # the service runs with the heartbeat settings given, as its Gateway resource says
        assert gw["spec"]["config"]["heartbeatIntervalSeconds"] == 1
        assert gw["spec"]["config"]["heartbeatTimeoutSeconds"] == 7
        for call in (platform.kill_gateway, platform.stop_gateway, platform.restart_gateway):
            with pytest.raises(RuntimeError, match="gateway gateway-0 runs as a process"):
                call("gateway-0")
        assert process.running
    finally:
        platform.stop()
    assert not process.running
