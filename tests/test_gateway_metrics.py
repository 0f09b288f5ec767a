"""The gateway's Prometheus metrics (gateway/metrics.py): every counter the gateway keeps is
exported under a Prometheus name, each gateway has a registry of its own, and `/metrics`
serves them over HTTP only when a metrics port is configured."""

from __future__ import annotations

import ast
import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from gateway_clients import RawClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from wasmbed_hil.bench.scrape import gateway_counters, parse, scrape
from wasmbed_hil.gateway import GatewayConfig
from wasmbed_hil.gateway import metrics as gwmetrics
from wasmbed_hil.protocol import DevicePhase

GATEWAY_SOURCES = Path(gwmetrics.__file__).parent


def _written_keys() -> tuple[set[str], set[str]]:
    """The keys the gateway's code writes into its Counter: literal ones, and the constant
    prefixes of computed ones (f"phase_{...}", "deployments_" + state)."""
    literal: set[str] = set()
    prefixes: set[str] = set()
    for path in GATEWAY_SOURCES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Load)
                    and isinstance(node.value, ast.Name | ast.Attribute)):
                continue
            owner = node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id
            if owner not in ("metrics", "_metrics"):
                continue
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                literal.add(key.value)
            elif isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
                prefixes.add(key.values[0].value)
            elif isinstance(key, ast.BinOp) and isinstance(key.left, ast.Constant):
                prefixes.add(key.left.value)
            else:
                raise AssertionError(f"{path.name}:{node.lineno}: a key this test cannot read")
    return literal, prefixes


def test_every_counter_the_gateway_writes_is_exported_or_derived():
    literal, prefixes = _written_keys()
    assert {"heartbeats", "handshakes", "bytes_out", "deployments_submitted"} <= literal
    unmapped = {k for k in literal
                if k not in gwmetrics.COUNTERS and k not in gwmetrics.DERIVED}
    assert not unmapped, f"counters written but not exported: {sorted(unmapped)}"
    assert prefixes == set(gwmetrics.PREFIXED)
    with pytest.raises(KeyError):
        gwmetrics.series_of("phase_nonsense")
    assert gwmetrics.series_of("phase_unreachable") == gwmetrics.Series(
        "phase_transitions", (("phase", "Unreachable"),))


@pytest.mark.parametrize("port", [-1, 65536, True, "9090", 80.0])
def test_the_metrics_port_is_validated(port):
    with pytest.raises(ValueError, match="metrics_port"):
        GatewayConfig(metrics_port=port)
    with pytest.raises(ValueError, match="metrics_host"):
        GatewayConfig(metrics_port=0, metrics_host="")


def test_no_endpoint_unless_asked(gateway):
    assert gateway.config.metrics_port is None
    assert gateway.gateway.metrics_address is None
    with pytest.raises(Exception, match="serves no metrics"):
        _ = gateway.metrics_url


@pytest.mark.hil_gateway(metrics_port=0)
def test_the_endpoint_serves_both_formats_and_closes_with_the_gateway(gateway, device):
    url = gateway.metrics_url
    text = scrape(url)
    assert text.value("wasmbed_gateway_devices", phase="Connected") == 1
    assert text.value("wasmbed_gateway_enrollments_total", result="enrolled") == 1
    request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(response.read().decode())}
    assert families["wasmbed_gateway_heartbeats"].type == "counter"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
    err.value.close()  # an HTTPError is the response too
    assert err.value.code == 404
    host, port = gateway.gateway.metrics_address
    gateway.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), 5):
        pass


def test_each_gateway_has_its_own_registry(hil_loop, fleet_ca, tmp_path):
    from wasmbed_hil.bench.gateway import GatewayHandle

    handles = []
    with contextlib.ExitStack() as stack:
        for name in ("gw-a", "gw-b"):
            config = GatewayConfig.for_tests(name=name, metrics_port=0)
            handle = GatewayHandle(hil_loop, fleet_ca, tmp_path / name, config).start()
            stack.callback(handle.close)
            handles.append(handle)
        a, b = (scrape(h.metrics_url) for h in handles)
        assert {v for (_, ls) in a.samples for k, v in ls if k == "gateway"} == {"gw-a"}
        assert {v for (_, ls) in b.samples for k, v in ls if k == "gateway"} == {"gw-b"}
        assert handles[0].gateway.metrics_registry is not handles[1].gateway.metrics_registry
    # prometheus_client's process-wide default registry holds none of ours
    assert not [m for m in prometheus_client.REGISTRY.collect()
                if m.name.startswith("wasmbed_")]


@pytest.mark.hil_gateway(max_unauthenticated=2, handshake_timeout_s=60, hello_timeout_s=0.5)
def test_connection_gauges_and_refusals_follow_the_connections(gateway, fleet_ca, tmp_path):
    registry = gateway.gateway.metrics_registry  # no endpoint: the registry itself

    def read():
        return parse(gateway._call(lambda: prometheus_client.generate_latest(registry)).decode())

    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(gateway.endpoint, timeout=10))
                for _ in range(2)]
        creds = tmp_path / "raw"
        fleet_ca.issue_device("raw").write(creds)
        refused = socket.create_connection(gateway.endpoint, timeout=10)
        stack.callback(refused.close)
        assert refused.recv(1) == b""  # closed at once: the cap is reached
        now = read()
        assert now.value("wasmbed_gateway_connections_unauthenticated") == 2
        assert now.value("wasmbed_gateway_connections_unauthenticated_limit") == 2
        assert now.value("wasmbed_gateway_connections_refused_total",
                         reason="unauthenticated_cap") == 1
        assert now.value("wasmbed_gateway_connections_accepted_total") == 3
        idle[0].sendall(b"not a TLS ClientHello\r\n\r\n")
        gateway.wait_event("handshake_failed")
        assert read().value("wasmbed_gateway_tls_handshake_failures_total") == 1
        raw = RawClient(gateway.endpoint, creds)  # TLS up, never says Hello
        stack.callback(raw.close)
        # Its Hello timeout can only run out after the gateway's side of the handshake ended.
        assert gateway.wait_event("violation").data["code"] == "TIMEOUT"
        now = read()
        assert now.value("wasmbed_gateway_tls_handshake_failures_total") == 1
        assert now.value("wasmbed_gateway_tls_handshakes_total") == 1
        assert now.value("wasmbed_gateway_protocol_errors_total") == 1
        assert now.value("wasmbed_gateway_connections_unauthenticated") == 1  # idle[1]
        assert now.value("wasmbed_gateway_connections_authenticated") == 0
        assert now.value("wasmbed_gateway_devices", phase=DevicePhase.CONNECTED.value) == 0


def test_the_counters_read_back_from_a_scrape_are_the_gateways(gateway, device, wasm):
    """What the benchmarks read from /metrics (bench.scrape.gateway_counters) is the gateway's
    own Counter, key for key, and the process's resource usage is there too."""
    gateway.run(device, wasm("add"), "adder", args=(1, 2))
    registry = gateway.gateway.metrics_registry
    text, counters = gateway._call(lambda: (
        prometheus_client.generate_latest(registry).decode(), dict(gateway.gateway.metrics)))
    read = gateway_counters(parse(text), gateway.config.name)
    assert read == {k: counters.get(k, 0) for k in read}
    assert read["outcome_returned"] == 1 and read["deployments_installed"] == 1
    assert read["bytes_out"] > len(wasm("add"))
    assert parse(text).value("process_resident_memory_bytes") > 0


def test_the_gateway_as_a_library_loads_no_metrics_stack():
    """Metrics are the controlplane extra's: a gateway with none asked loads neither
    prometheus_client nor aiohttp (the base install has cbor2 and cryptography only)."""
    code = textwrap.dedent("""
        import json, sys
        from wasmbed_hil.gateway import GatewayConfig
        from wasmbed_hil.gateway import server
        GatewayConfig()
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] in ("prometheus_client", "aiohttp"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_a_taken_metrics_port_fails_the_start_and_leaves_nothing_open(hil_loop, fleet_ca,
                                                                      tmp_path):
    from wasmbed_hil.bench.gateway import GatewayHandle

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        handle = GatewayHandle(hil_loop, fleet_ca, tmp_path,
                               GatewayConfig.for_tests(metrics_port=port))
        try:
            with pytest.raises(OSError, match=str(port)):
                handle.start()
            assert not handle.running  # stopped again: its local cache is closed
        finally:
            handle.close()
