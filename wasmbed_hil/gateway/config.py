"""Gateway settings. Defaults are upstream's production values; tests use `for_tests()`."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..protocol import MIN_FRAME_LIMIT
from .tlsbuffer import check_tls_read_buffer


@dataclass(frozen=True)
class GatewayConfig:
    name: str = "gateway-0"
    heartbeat_interval_s: float = 30.0  # told to devices in Welcome
    heartbeat_timeout_s: float = 90.0  # no heartbeat for this long: Unreachable
    pairing: bool = False  # pairing mode at start
    pairing_timeout_s: float | None = 300.0  # pairing turns itself off after this
    max_frame_size: int = 64 * 1024  # inbound frame limit (upstream: 16 MiB)
    max_module_size: int = 1024 * 1024  # upstream's max app size
    max_devices: int = 100  # upstream Gateway.spec.maxDevices
    handshake_timeout_s: float = 10.0  # TLS handshake
    hello_timeout_s: float = 10.0  # TLS up -> Hello received
    enrollment_timeout_s: float = 30.0  # challenge -> proof
    frame_timeout_s: float = 10.0  # first byte of a frame -> its last byte
    reply_timeout_s: float = 30.0  # a device's answer to a deployment step
    write_buffer_limit: int = 4 * 1024 * 1024  # a device that stops reading is dropped
    trace_limit: int = 2000  # protocol messages kept per device for reports (0: off)
    # Execution results kept per (device, application) in the local cache; beyond it the
    # oldest are dropped (0: no limit).
    max_results_per_app: int = 1000
    # Connections accepted but not yet welcomed (TLS handshake, Hello, enrollment proof). One
    # whose client has sent nothing yet costs about 15 kB (benchmarks/bench_preauth.py; OpenSSL
    # is not called before the ClientHello, tlsstream.py), one in or past its handshake about
    # 45 kB; beyond the cap a new connection is closed before its TLS handshake. 128 exceeds
    # the default max_devices (100), so a whole fleet reconnecting at once after a gateway
    # restart is admitted in one go, and bounds that memory at about 6 MiB. Welcomed devices
    # do not count.
    max_unauthenticated: int = 128
    # Prometheus metrics over HTTP (`GET /metrics`, gateway/metrics.py; needs the controlplane
    # extra): None serves none, 0 any free port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # The most plaintext one read of a device connection takes (tlsstream.py): allocated for
    # the read only, never held per connection; a frame larger than it arrives in pieces.
    # (Before the gateway had its own TLS layer this bounded asyncio's per-connection buffer,
    # gateway/tlsbuffer.py, which the fleet workers' clients still use.)
    tls_read_buffer: int = 4 * 1024
    # Events the gateway keeps (events.py: what waits and failure messages read; listeners such
    # as the control-plane agent see every event regardless). Each heartbeat is one (about
    # 350 bytes), so 1,000 devices at 1 Hz fill 100,000 in 100 s: 35 MB, 35 kB per device.
    # The harness keeps that many for its waits; the `gateway` service keeps 10,000.
    event_log_limit: int = 100_000

    def __post_init__(self) -> None:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must exceed heartbeat_interval_s")
        if self.max_frame_size < MIN_FRAME_LIMIT:
            raise ValueError(f"max_frame_size must be at least {MIN_FRAME_LIMIT}")
        if self.max_results_per_app < 0:
            raise ValueError(
                f"max_results_per_app must be 0 (no limit) or more, got {self.max_results_per_app}")
        cap = self.max_unauthenticated
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_unauthenticated must be an integer of 1 or more, got {cap!r}")
        port = self.metrics_port
        if port is not None and (
                isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise ValueError(f"metrics_port must be None (off) or 0..65535, got {port!r}")
        if not isinstance(self.metrics_host, str) or not self.metrics_host:
            raise ValueError(f"metrics_host must be a host name or address, got "
                             f"{self.metrics_host!r}")
        check_tls_read_buffer(self.tls_read_buffer)
        limit = self.event_log_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"event_log_limit must be an integer of 1 or more, got {limit!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s") and value is not None and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value}")

    @classmethod
    def for_tests(cls, **overrides: Any) -> GatewayConfig:
        """Short timings so that heartbeat scenarios take fractions of a second."""
        base = cls(
            heartbeat_interval_s=0.2,
            heartbeat_timeout_s=0.8,
            pairing=True,
            pairing_timeout_s=None,
            handshake_timeout_s=5.0,
            hello_timeout_s=5.0,
            enrollment_timeout_s=5.0,
            frame_timeout_s=2.0,
            reply_timeout_s=10.0,
            max_frame_size=16 * 1024,
            max_devices=10_000,
        )
        return replace(base, **overrides)
