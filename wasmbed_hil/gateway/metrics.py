"""The gateway's figures as Prometheus metrics, and the HTTP endpoint that serves them.

The gateway counts what happens in a plain Counter (`Gateway.metrics`: one dict increment on
the hot path, nothing more). `GatewayCollector` is a custom collector in prometheus_client's
sense: at each scrape it turns that Counter, the registry's phases and the connection counts
into metric families, so a heartbeat costs nothing extra with metrics on. Each gateway has
its own CollectorRegistry (several gateways run in one test process; the library's global
default registry is never used), and every series carries a `gateway` label (its name).

`COUNTERS` and `PREFIXED` say where each key of the Counter goes; a key in neither is not
exported (tests/test_gateway_metrics.py checks that every key the gateway writes is mapped).

Needs the controlplane extra (prometheus_client, aiohttp): server.py imports this module only
when metrics are asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ..protocol import DevicePhase, Outcome

PREFIX = "wasmbed_gateway_"


@dataclass(frozen=True)
class Series:
    """Where a Counter key goes: the counter family (without `_total`) and its labels."""

    family: str
    labels: tuple[tuple[str, str], ...] = ()


# Counter families: name (without _total) -> help text.
FAMILIES: dict[str, str] = {
    "heartbeats": "Heartbeats received",
    "heartbeat_timeouts": "Deadlines a connected device missed (it became Unreachable)",
    "tls_handshakes": "TLS handshakes completed (a client certificate verified)",
    "tls_handshake_failures": "TLS handshakes that failed or timed out",
    "tls_errors": "Established connections ended by a TLS error (a corrupt or forged record)",
    "connections_accepted": "TCP connections accepted",
    "connections_refused": "Connections refused before a session, by reason",
    "enrollments": "Enrollment attempts that ended, by result",
    "adoptions": "Devices enrolled at another gateway and adopted here",
    "phase_transitions": "Device phase changes, by the phase entered",
    "deployments_submitted": "Deployments queued",
    "deployments": "Deployments that ended, by state (refused: before being queued)",
    "deployment_chunks_acked": "Module chunks a device acknowledged",
    "results": "Execution results recorded, by outcome",
    "results_ignored": "Execution results not recorded, by reason",
    "unlisted_results": "Results recorded of runs another gateway started within its reserved "
    "run ids, unlisted",
    "results_dropped": "Stored results dropped beyond max_results_per_app",
    "received_bytes": "Bytes received from devices (TLS payload)",
    "sent_bytes": "Bytes sent to devices (TLS payload)",
    "protocol_errors": "Protocol violations and timeouts that ended a session",
    "late_replies": "Replies that came after their request was given up",
    "unsolicited_replies": "Replies to nothing asked",
    "handler_errors": "Connection handlers that failed with an unexpected error (a bug)",
    "message_faults": "Message faults a test installed and applied",
    "crl_refused": "CRLs refused (older than the one in force)",
    "crl_stale_loads": "CRLs loaded past their nextUpdate",
}

# Counter key -> series, for the keys written literally.
COUNTERS: dict[str, Series] = {
    "heartbeats": Series("heartbeats"),
    "heartbeat_timeouts": Series("heartbeat_timeouts"),
    "handshakes": Series("tls_handshakes"),
    "handshake_failures": Series("tls_handshake_failures"),
    "tls_errors": Series("tls_errors"),
    "connections_accepted": Series("connections_accepted"),
    "refused_unauthenticated": Series("connections_refused", (("reason", "unauthenticated_cap"),)),
    "refused_revoked": Series("connections_refused", (("reason", "revoked"),)),
    "refused_certificate": Series("connections_refused", (("reason", "bad_certificate"),)),
    "enrollments": Series("enrollments", (("result", "enrolled"),)),
    "enrollments_rejected": Series("enrollments", (("result", "rejected"),)),
    "enrollments_adopted": Series("adoptions"),
    "deployments_submitted": Series("deployments_submitted"),
    "deployments_refused": Series("deployments", (("state", "refused"),)),
    "chunks_acked": Series("deployment_chunks_acked"),
    "duplicate_results": Series("results_ignored", (("reason", "duplicate"),)),
    "forgotten_run_results": Series("results_ignored", (("reason", "forgotten_run"),)),
    "unstarted_results": Series("results_ignored", (("reason", "unstarted_run"),)),
    "unlisted_results": Series("unlisted_results"),
    "unlisted_results_dropped": Series("results_ignored", (("reason", "unwanted_unlisted_run"),)),
    "results_dropped": Series("results_dropped"),
    "bytes_in": Series("received_bytes"),
    "bytes_out": Series("sent_bytes"),
    "protocol_errors": Series("protocol_errors"),
    "late_replies": Series("late_replies"),
    "unsolicited_replies": Series("unsolicited_replies"),
    "handler_errors": Series("handler_errors"),
    "message_faults": Series("message_faults"),
    "crl_refused": Series("crl_refused"),
    "crl_stale": Series("crl_stale_loads"),
}

# Keys that are sums of exported series, so not exported themselves.
DERIVED = frozenset({
    "results",  # = the sum of results_total over outcomes
    "result_acks",  # one per recorded or duplicate result
})

# Keys written with a variable part: prefix -> (family, label, {key suffix: label value}).
PREFIXED: dict[str, tuple[str, str, dict[str, str]]] = {
    "phase_": ("phase_transitions", "phase", {p.value.lower(): p.value for p in DevicePhase}),
    "outcome_": ("results", "outcome", {o.name.lower(): o.name.lower() for o in Outcome}),
    "deployments_": ("deployments", "state", {"installed": "installed", "failed": "failed"}),
}


def series_of(key: str) -> Series | None:
    """Where a Counter key is exported; None for a derived key. KeyError for an unknown one."""
    if key in COUNTERS:
        return COUNTERS[key]
    if key in DERIVED:
        return None
    for prefix, (family, label, values) in PREFIXED.items():
        if key.startswith(prefix) and key[len(prefix):] in values:
            return Series(family, ((label, values[key[len(prefix):]]),))
    raise KeyError(key)


def every_series() -> list[tuple[str, Series]]:
    """(key, series) for every key the gateway may write: all are exported, 0 until counted."""
    keys = list(COUNTERS)
    for prefix, (_family, _label, values) in PREFIXED.items():
        keys.extend(prefix + suffix for suffix in values)
    out = []
    for key in keys:
        series = series_of(key)
        if series is not None:
            out.append((key, series))
    return out


@dataclass(frozen=True)
class GatewayReadings:
    """What the collector reads from its gateway at each scrape."""

    name: str
    counters: Counter[str]
    phases: Callable[[], Iterator[DevicePhase]]  # the phase of every enrolled device
    open_connections: Callable[[], int]  # accepted and not yet closed
    authenticated_connections: Callable[[], int]  # welcomed devices
    unauthenticated_connections: Callable[[], int]
    max_unauthenticated: int


class GatewayCollector(Collector):
    """Turns one gateway's readings into metric families at each scrape."""

    def __init__(self, readings: GatewayReadings) -> None:
        self.readings = readings
        self._series = every_series()

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        gw = r.name
        families: dict[str, CounterMetricFamily] = {}
        for key, series in self._series:
            family = families.get(series.family)
            if family is None:
                names = ["gateway", *(label for label, _ in series.labels)]
                family = CounterMetricFamily(
                    PREFIX + series.family, FAMILIES[series.family], labels=names)
                families[series.family] = family
            family.add_metric([gw, *(value for _, value in series.labels)], r.counters[key])
        yield from families.values()

        by_phase = Counter(r.phases())
        devices = GaugeMetricFamily(
            PREFIX + "devices", "Enrolled devices, by phase", labels=["gateway", "phase"])
        for phase in DevicePhase:
            devices.add_metric([gw, phase.value], by_phase[phase])
        yield devices
        in_progress = r.counters["deployments_submitted"] - (
            r.counters["deployments_installed"] + r.counters["deployments_failed"])
        yield _gauge("deployments_in_progress", "Deployments queued or transferring", gw,
                     in_progress)
        yield _gauge("connections_open", "Connections accepted and not yet closed", gw,
                     r.open_connections())
        yield _gauge("connections_authenticated", "Connections of welcomed devices", gw,
                     r.authenticated_connections())
        yield _gauge("connections_unauthenticated",
                     "Connections accepted and not yet welcomed (TLS, Hello, enrollment)", gw,
                     r.unauthenticated_connections())
        yield _gauge("connections_unauthenticated_limit",
                     "The cap on connections not yet welcomed (max_unauthenticated)", gw,
                     r.max_unauthenticated)


def _gauge(name: str, doc: str, gateway: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=["gateway"])
    family.add_metric([gateway], value)
    return family


def gateway_registry(readings: GatewayReadings) -> CollectorRegistry:
    """A registry of its own (never the global default) holding the gateway's collector and
    the library's process collector (process_cpu_seconds_total, process_resident_memory_bytes,
    process_open_fds...: the process's resource usage, read from /proc at each scrape)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(readings))
    ProcessCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """`GET /metrics` over HTTP on aiohttp (the project's one web stack), in the gateway's
    own event loop: a scrape reads the gateway's state between two of its callbacks, never
    from another thread. The Prometheus text format, or OpenMetrics when the scraper's Accept
    header asks for it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})
