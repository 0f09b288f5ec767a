"""The control plane's Prometheus metrics: the REST API's requests and the controllers'
reconcile passes, each in a registry of its own (several run in one test process; the
library's global default registry is never used), served like the gateway's
(`gateway.metrics.MetricsEndpoint`, a separate port: docs/monitoring.md says why).

REST API (`RestMetrics`, one per `RestApi`):
- `wasmbed_rest_requests_total{route,method,status}`: requests answered. `route` is the
  route's template (`/api/v1/devices/{name}`), never the path a caller sent, and `unmatched`
  for a path no route serves; `method` is one of `METHODS` or `other`: a caller cannot grow
  the series without bound. Requests aiohttp's parser refuses before any route are not
  counted (there is no route or method to count them by).
- `wasmbed_rest_request_duration_seconds{route,method}`: a histogram of the time from the
  request's headers to its answer.
- `wasmbed_rest_auth_failures_total{reason}`: requests refused 401, by `AUTH_REASONS`.

Controllers (`ControllerMetrics`, one per `Controllers`):
- `wasmbed_controller_reconciles_total{controller}`: reconcile passes (a Device handler call,
  one turn of an Application's or a Gateway's status loop, an Application's deletion);
- `wasmbed_controller_reconcile_errors_total{controller}`: passes that failed (a status not
  written, a machine not started, a handler that raised);
- `wasmbed_controller_reconcile_duration_seconds{controller}`: a histogram of their duration
  (a status loop's pause between passes is not part of a pass);
- `wasmbed_controller_objects{kind,phase}`: Devices, Applications and Gateways by phase in
  the controllers' own view (their watch of Devices, the Gateway bodies kopf hands them, and
  for Applications, whose status they write, the phase they last computed), read at scrape
  time so nothing is added to a pass; `None` for an object with no phase yet. A Gateway is
  counted while its status daemon runs, an Application until its deletion completes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

REST_PREFIX = "wasmbed_rest_"
CONTROLLER_PREFIX = "wasmbed_controller_"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Why a request was refused 401: no Authorization header, a scheme other than Bearer, a
# token that does not match.
AUTH_REASONS = ("missing", "scheme", "invalid_token")
CONTROLLERS = ("device", "application", "application_delete", "gateway")
KINDS = ("Device", "Application", "Gateway")
NO_PHASE = "None"
# Request latencies from 1 ms (a GET from the informer-less API server's cache) to 30 s (a
# module upload at the body timeout).
REST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0)
RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0)


def _registry() -> CollectorRegistry:
    """A registry of its own with the process collector (CPU, resident memory, open fds)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class RestMetrics:
    """The REST API's request counters and latency histogram."""

    def __init__(self) -> None:
        self.registry = _registry()
        self.requests = PromCounter(
            REST_PREFIX + "requests", "REST requests answered, by route template, method and "
            "status", ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram(
            REST_PREFIX + "request_duration_seconds", "REST request latency, headers to "
            "answer", ["route", "method"], buckets=REST_BUCKETS, registry=self.registry)
        self.auth_failures = PromCounter(
            REST_PREFIX + "auth_failures", "REST requests refused 401, by reason", ["reason"],
            registry=self.registry)
        for reason in AUTH_REASONS:  # exported as 0 from the start: a rate needs a baseline
            self.auth_failures.labels(reason)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method_label(method)
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def auth_failed(self, reason: str) -> None:
        if reason not in AUTH_REASONS:
            raise ValueError(f"unknown auth failure reason {reason!r}")
        self.auth_failures.labels(reason).inc()


# kind -> a function giving the phase of every object of that kind, read at scrape time.
PhaseReaders = Mapping[str, Callable[[], list[str | None]]]


class _ObjectsCollector(Collector):
    def __init__(self, readers: PhaseReaders) -> None:
        self.readers = readers

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            CONTROLLER_PREFIX + "objects", "Objects the controllers see, by kind and phase",
            labels=["kind", "phase"])
        for kind, read in self.readers.items():
            for phase, count in sorted(Counter(p or NO_PHASE for p in read()).items()):
                family.add_metric([kind, phase], count)
        yield family


class ControllerMetrics:
    """Reconcile passes, failures and durations per controller; objects by phase."""

    def __init__(self) -> None:
        self.registry = _registry()
        self.reconciles = PromCounter(
            CONTROLLER_PREFIX + "reconciles", "Reconcile passes, by controller", ["controller"],
            registry=self.registry)
        self.errors = PromCounter(
            CONTROLLER_PREFIX + "reconcile_errors", "Reconcile passes that failed, by "
            "controller", ["controller"], registry=self.registry)
        self.duration = Histogram(
            CONTROLLER_PREFIX + "reconcile_duration_seconds", "Reconcile pass duration, by "
            "controller", ["controller"], buckets=RECONCILE_BUCKETS, registry=self.registry)
        for name in CONTROLLERS:
            self.reconciles.labels(name)
            self.errors.labels(name)
            self.duration.labels(name)

    def watch_objects(self, readers: PhaseReaders) -> None:
        """Export `wasmbed_controller_objects` from these readers (once)."""
        self.registry.register(_ObjectsCollector(readers))

    @contextmanager
    def reconcile(self, controller: str) -> Iterator[Pass]:
        """Count and time one pass; it failed if it raises or calls `failed()`."""
        if controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {controller!r}")
        one = Pass()
        start = time.perf_counter()
        try:
            yield one
        except BaseException as exc:
            # A daemon stopped by kopf (cancellation) is no failure of the pass.
            if not isinstance(exc, GeneratorExit | asyncio.CancelledError):
                one.failed()
            raise
        finally:
            self.duration.labels(controller).observe(time.perf_counter() - start)
            self.reconciles.labels(controller).inc()
            if one.error:
                self.errors.labels(controller).inc()


class Pass:
    """One reconcile pass: `failed()` marks it failed without raising."""

    def __init__(self) -> None:
        self.error = False

    def failed(self) -> None:
        self.error = True

