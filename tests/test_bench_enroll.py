"""benchmarks/bench_enroll.py, run for real at a tiny size: the enrollment figures come from the
gateway's own counters and process, and the handshake ceiling's bare TLS server completes one
mutual TLS handshake per client certificate and is gone afterwards."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import children, load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_enroll")


def test_enrollments_are_counted_by_the_gateway(bench: ModuleType, tmp_path: Path) -> None:
    before = children()
    res = bench.measure(tmp_path, devices=3, procs=1, concurrency=2)
    assert (res["enrolled"], res["online"], res["failed"]) == (3, 3, 0)
    # /proc counts CPU in ticks (10 ms): three enrollments may not reach one.
    assert res["gateway_cpu_s"] >= 0
    assert res["per_core_s"] > 0 or math.isnan(res["per_core_s"])
    # Each device heartbeats once welcomed: the window's heartbeats are counted and shown.
    assert 0 <= res["heartbeats"] <= 6  # at most two each (5 s interval, a short window)
    assert children() <= before


def test_the_handshake_ceiling_completes_one_handshake_per_client(
    bench: ModuleType, tmp_path: Path,
) -> None:
    before = children()
    res = bench.handshake_ceiling(tmp_path, handshakes=4, concurrency=2)
    assert (res["handshakes"], res["failures"]) == (4, 0)
    assert res["server_cpu_s"] >= 0
    assert res["per_core_s"] > 0 or math.isnan(res["per_core_s"])
    assert children() <= before  # the server process is stopped


def test_openssl_alone_times_complete_handshakes(bench: ModuleType, tmp_path: Path) -> None:
    res = bench.openssl_handshake_us(tmp_path, 3)
    assert res["handshakes"] == 3
    assert res["server_us"] > 0 and res["per_core_s"] > 0


def test_the_bare_tls_server_verifies_client_certificates(bench: ModuleType,
                                                          tmp_path: Path) -> None:
    """The ceiling is the gateway's handshake, client-certificate verification included: a
    client that presents none, or one from another CA, fails and is not counted."""
    import socket
    import ssl

    from wasmbed_hil.pki import FleetCA, client_ssl_context

    before = children()
    ca = FleetCA.create("ceiling CA")
    ca.save(tmp_path / "ca")
    FleetCA.create("another CA").issue_device("stranger").write(tmp_path / "stranger")
    ca.issue_device("member").write(tmp_path / "member")
    server = bench.gwb.Child("tls-server", "_tls_server.py",
                             ["--ca-dir", str(tmp_path / "ca"), "--workdir", str(tmp_path / "s")],
                             tmp_path)
    try:
        port = int(server.recv(60)["port"])
        no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        no_cert.load_verify_locations(cafile=str(tmp_path / "member" / "ca.pem"))
        stranger = client_ssl_context(tmp_path / "stranger")
        stranger.load_verify_locations(cafile=str(tmp_path / "member" / "ca.pem"))
        for context in (no_cert, stranger):
            # TLS 1.3: the client is through before the server has judged its certificate;
            # the server's alert (or its close) is what it reads instead of the byte.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as sock, \
                    pytest.raises((ssl.SSLError, ConnectionError)):
                if sock.recv(1) == b"":
                    raise ConnectionResetError("closed without the byte")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_ssl_context(tmp_path / "member").wrap_socket(
                    raw, server_hostname="localhost") as sock:
            assert sock.recv(1) == b"k"
        # Each refusal was counted in the server's step that sent its alert, before the server
        # read anything else (this command included).
        counts = server.request({"cmd": "metrics"}, 30)
        assert counts == {"handshakes": 1, "failures": 2}
    finally:
        server.close()
    assert children() <= before
