"""The gateway's per-device cost: its TLS reads bounded (GatewayConfig.tls_read_buffer, the
most one read of gateway/tlsstream.py takes), asyncio's TLS read buffer bound for other
connections (gateway/tlsbuffer.py, the fleet workers' clients), and one lazily moved liveness
timer per connection (handler.py).

The figures behind them (bench_gateway.py, 1,000 devices at 1 Hz) are in the README's
benchmark table; these tests hold the behaviour: the bound is validated, a gateway reads in
pieces of at most that size and leaves asyncio's process-wide knob alone, and a real device's
session (frames larger than the read size included) works under it; asyncio's bound is only
ever lowered; a heartbeat moves the liveness deadline without a new timer, and the timer still
fires at the deadline in force.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
from pathlib import Path

import pytest
from gateway_device import serve_one_device
from test_gateway_handler import _dispatch, _handler

from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.gateway.events import EventLog
from wasmbed_hil.gateway.tlsbuffer import limit_tls_read_buffer
from wasmbed_hil.pki import FleetCA, server_ssl_context
from wasmbed_hil.protocol import Heartbeat
from wasmbed_hil.protocol.types import DevicePhase


@pytest.fixture
def stock_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's own 256 KiB, restored after the test (the bound is process-wide)."""
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", 256 * 1024)


@pytest.mark.parametrize("size", [0, 1023, 256 * 1024 + 1, True, 4096.0, "4096"])
def test_the_tls_read_buffer_must_be_an_integer_in_range(size):
    with pytest.raises(ValueError, match="tls_read_buffer"):
        GatewayConfig(tls_read_buffer=size)


@pytest.mark.usefixtures("stock_buffer")
def test_the_default_bounds_the_buffer_well_below_asyncios():
    assert GatewayConfig().tls_read_buffer <= 16 * 1024 < sslproto.SSLProtocol.max_size


@pytest.mark.usefixtures("stock_buffer")
def test_the_bound_is_only_ever_lowered():
    assert limit_tls_read_buffer(8192) == 8192
    assert limit_tls_read_buffer(65536) == 8192  # a second gateway cannot raise it
    assert limit_tls_read_buffer(2048) == 2048
    assert sslproto.SSLProtocol.max_size == 2048


@pytest.mark.usefixtures("stock_buffer")
def test_a_started_gateway_serves_a_device_through_the_bounded_buffer(tmp_path: Path):
    """Enrollment, heartbeats and a DeviceInfoReport through 1 KiB reads: the frames are
    larger and pass in pieces. asyncio's TLS layer is not the gateway's: its knob stays."""
    ca = FleetCA.create("footprint CA")
    ca.issue_gateway("gateway-0", hosts=("localhost", "127.0.0.1")).write(tmp_path / "tls")
    gateway = Gateway(GatewayConfig.for_tests(tls_read_buffer=1024),
                      server_ssl_context(tmp_path / "tls"), tmp_path / "state")

    def bounded() -> None:
        assert gateway.tls_read_buffer == 1024
        assert sslproto.SSLProtocol.max_size == 256 * 1024

    asyncio.run(serve_one_device(gateway, ca, tmp_path / "flash", heartbeats=3,
                                 on_start=bounded))


def test_a_heartbeat_moves_the_deadline_without_a_new_timer():
    async def scenario() -> None:
        handler, _conn, services = _handler(heartbeat_interval_s=10, heartbeat_timeout_s=30)
        loop = asyncio.get_running_loop()
        assert _dispatch(handler, Heartbeat(1, 1, ()), 1)
        timer, first = handler._liveness, handler._live_until
        resolution = services.deadlines.resolution
        assert timer is not None and first <= timer.when() < first + resolution
        assert _dispatch(handler, Heartbeat(2, 1, ()), 2)
        assert handler._liveness is timer  # the same timer, the deadline moved
        assert handler._live_until >= first
        # The timer firing before the deadline in force re-arms for that deadline.
        handler._live_until = loop.time() + 25
        handler._liveness_due()
        st = handler._status
        assert st is not None and st.phase is DevicePhase.CONNECTED
        assert handler._liveness is not timer
        due = handler._liveness.when()
        assert handler._live_until <= due < handler._live_until + resolution
        assert services.metrics["heartbeat_timeouts"] == 0
        timer.cancel()
        # Firing at (or after) the deadline: Unreachable, counted once.
        handler._live_until = loop.time() - 0.001
        handler._liveness_due()
        assert st.phase is DevicePhase.UNREACHABLE
        assert services.metrics["heartbeat_timeouts"] == 1
        assert handler._liveness is None
        # The next heartbeat arms a timer again and brings the device back.
        assert _dispatch(handler, Heartbeat(3, 1, ()), 3)
        assert handler._liveness is not None and st.phase is DevicePhase.CONNECTED
        handler._disarm_liveness()

    asyncio.run(scenario())


@pytest.mark.parametrize("limit", [0, -1, True, 10.0, "10"])
def test_the_event_log_limit_must_be_a_positive_integer(limit):
    with pytest.raises(ValueError, match="event_log_limit"):
        GatewayConfig(event_log_limit=limit)
    with pytest.raises(ValueError, match="at least 1 event"):
        EventLog(limit)


def test_a_gateway_keeps_at_most_its_event_log_limit(tmp_path: Path):
    """One heartbeat is one event: the log, not the connections, bounds what they cost."""
    ca = FleetCA.create("events CA")
    ca.issue_gateway("gateway-0", hosts=("localhost",)).write(tmp_path / "tls")
    gateway = Gateway(GatewayConfig.for_tests(event_log_limit=5),
                      server_ssl_context(tmp_path / "tls"), tmp_path / "state")
    try:
        seen = []
        gateway.events.add_listener(seen.append)
        for n in range(12):
            gateway.events.emit("heartbeat", "d" * 32, count=n)
        assert [e.data["count"] for e in gateway.events.events("heartbeat")] == [7, 8, 9, 10, 11]
        assert len(seen) == 12  # listeners still see every one
    finally:
        gateway.store.close()
