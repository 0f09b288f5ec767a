"""A real TLS 1.3 handshake from the emulated Cortex-M3 (QEMU mps2-an385, the firmware's
SELFTEST=tls image) to a Python ``ssl`` server with certificates from wasmbed_hil.pki, through
a relay that behaves like the lead's bridge (QEMU's UART1 dials the relay; the relay opens
the upstream TCP connection when the device first sends bytes). A server the device must not
trust is rejected by the device."""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import ssl
import statistics
import threading

import pytest
from qemu_console import Console

from wasmbed_hil.bench.firmware import build_blob, ensure_image
from wasmbed_hil.bench.firmware.build import missing_tools
from wasmbed_hil.bench.machines.qemu import QEMU, qemu_command
from wasmbed_hil.pki import FleetCA, server_ssl_context

MISSING = missing_tools() + ([QEMU] if shutil.which(QEMU) is None else [])
pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"firmware tests need {', '.join(MISSING)} (qemu-system-arm, "
    "arm-none-eabi-gcc/size, make) on PATH",
)

SERVER_NAME = "gateway.test"


class TlsServer:
    """Accepts one TLS 1.3 connection, reads one line, answers "welcome <line>"."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.peer: dict | None = None
        self.received = b""
        self.error: BaseException | None = None
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(30)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.peer = tls.getpeercert()
                while not self.received.endswith(b"\n"):
                    chunk = tls.recv(256)
                    if not chunk:
                        break
                    self.received += chunk
                tls.sendall(b"welcome " + self.received)
                with contextlib.suppress(OSError, ssl.SSLError):
                    tls.recv(256)  # until the device's close_notify / EOF
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def close(self) -> None:
        self.listener.close()


class Relay:
    """The bridge's link model: QEMU's UART1 connects here; an upstream connection to the
    server is opened when bytes arrive from the device while none is open; when the server
    closes, the upstream side is closed (the device is not told)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop_r, self._stop_w = socket.socketpair()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        device = upstream = None
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stop":
                        return
                    if key.data == "accept":
                        device, _ = self.listener.accept()
                        device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        sel.register(device, selectors.EVENT_READ, "device")
                    elif key.data == "device":
                        try:
                            data = device.recv(65536)
                        except OSError:  # QEMU killed
                            data = b""
                        if not data:
                            return
                        if upstream is None:
                            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                            sel.register(upstream, selectors.EVENT_READ, "upstream")
                        upstream.sendall(data)
                    elif key.data == "upstream":
                        try:
                            data = upstream.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            sel.unregister(upstream)
                            upstream.close()
                            upstream = None
                        else:
                            device.sendall(data)
        finally:
            for sock in (device, upstream):
                if sock is not None:
                    sock.close()
            sel.close()

    def close(self) -> None:
        self._stop_w.send(b"x")
        self.thread.join(timeout=10)
        for sock in (self.listener, self._stop_r, self._stop_w):
            sock.close()


@pytest.fixture(scope="module")
def selftest_elf():
    return ensure_image(selftest="tls")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    ca = FleetCA.create()
    device = ca.issue_device("m3-dev-1")
    ca.issue_gateway("gateway", hosts=(SERVER_NAME,)).write(base / "gateway")
    rogue = FleetCA.create("rogue CA")
    rogue_gw = rogue.issue_gateway("gateway", hosts=(SERVER_NAME,))
    # the rogue server trusts the fleet CA for the client: only the device's check can fail
    rogue_gw.write(base / "rogue")
    (base / "rogue" / "ca.pem").write_bytes(ca.cert_pem)
    ca.issue_gateway("gateway", hosts=("other.test",)).write(base / "wrong-name")
    blob = base / "blob.bin"
    blob.write_bytes(build_blob(device, "m3-dev-1", SERVER_NAME))
    return {"base": base, "device": device, "blob": blob}


@contextlib.contextmanager
def run_selftest(elf, blob, creds_dir):
    server = TlsServer(server_ssl_context(creds_dir))
    relay = Relay(server.port)
    console = None
    try:
        console = Console(qemu_command(elf, blob, relay.port))
        yield console, server
    finally:
        if console is not None:
            console.close()
        relay.close()
        server.close()


def test_tls13_handshake_from_the_emulated_device(selftest_elf, fleet, record_property):
    up_times, handshake_ms = [], []
    for _ in range(3):
        with run_selftest(selftest_elf, fleet["blob"], fleet["base"] / "gateway") as (con, srv):
            up_at, line = con.wait_for("tls: up in", "selftest failed", timeout=60)
            assert "tls: up in" in line, "\n".join(con.output)
            assert "TLSv1.3" in line
            _, ok = con.wait_for("selftest ok", "selftest failed", timeout=30)
            assert ok.startswith("selftest ok"), "\n".join(con.output)
            assert srv.done.wait(30)
            assert srv.error is None, srv.error
            assert srv.received == b"hello from m3-dev-1\n"
            subject = dict(item for rdn in srv.peer["subject"] for item in rdn)
            assert subject["commonName"] == "m3-dev-1"
            assert any('reply "welcome hello from m3-dev-1"' in x for x in con.output)
            up_times.append(up_at)
            handshake_ms.append(int(ok.split("handshake_ms=")[1]))
    median = statistics.median(up_times)
    record_property("qemu_start_to_tls_up_s", median)
    record_property("device_handshake_ms", statistics.median(handshake_ms))
    print(
        f"QEMU start to TLS up: median {median * 1000:.0f} ms of {len(up_times)} "
        f"({', '.join(f'{t * 1000:.0f}' for t in up_times)}); device-side handshake "
        f"median {statistics.median(handshake_ms)} ms"
    )


@pytest.mark.parametrize(
    ("creds", "reason"),
    [("rogue", "not correctly signed by the trusted CA"), ("wrong-name", "Common Name (CN)")],
)
def test_device_rejects_an_untrusted_server(selftest_elf, fleet, creds, reason):
    with run_selftest(selftest_elf, fleet["blob"], fleet["base"] / creds) as (con, srv):
        _, line = con.wait_for("selftest ok", "selftest failed", timeout=60)
        assert line.startswith("selftest failed"), "\n".join(con.output)
        assert "-0x2700" in line  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED
        assert any(reason in x for x in con.output), "\n".join(con.output)
        assert srv.done.wait(30)
        assert isinstance(srv.error, ssl.SSLError | ConnectionError), srv.error
        assert srv.received == b""
