"""`FleetHandle`: thousands of virtual devices in worker processes, one synchronous handle.

The `fleet(n, processes=K)` fixture's handle (and the gateway benchmark's): the devices are
spread over K worker processes (`worker.py`, one asyncio loop each, devices named round
robin: device i lives in worker i % K), so one test can hold more devices than one event
loop can keep heartbeating, against a gateway of the test's own process or of another.

It is a fleet-level handle, not a list of DeviceHandles (a device in another process has no
loop-owned state this process could read): names, per-device state (`states()`, `state()`:
lifecycle, device id, identity, connections, heartbeats acknowledged, last error, apps),
lifecycle counts, power on and off by name, waits, and heartbeat round trips. What the
gateway saw (phases, deployments, results) is read on the gateway as usual: its waits and
`GatewayHandle.deploy(name, ...)` take a device name.

`link` ("lean", the default, or "stream") is how the workers' devices connect
(bench/virtual/lean.py, docs/fleets.md); the devices behave the same on both.

Every call runs on the harness loop through the LoopThread, so a wait ended by its timeout,
pytest-timeout or Ctrl-C cancels its work there. `close()` stops every worker (killing what
does not stop) and raises the first worker's death it recorded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ...pki import FleetCA
from .. import waits
from ..loop import LoopThread
from ..seams import Lifecycle
from .client import FleetError, FleetWorker
from .protocol import LINKS, DeviceState

#: Largest number of worker processes (each is a Python process of about 60 MB).
MAX_PROCESSES = 64
#: Seconds allowed per device for commands that touch every device (issuing, powering off).
PER_DEVICE_S = 0.02


class FleetWaitTimeout(FleetError, AssertionError):
    """A fleet wait ended without its condition; the message lists the laggards."""


def check_link(value: object) -> str:
    if value not in LINKS:
        raise ValueError(f"link={value!r}: one of {', '.join(sorted(LINKS))}")
    return str(value)


def check_processes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise ValueError(f"processes={value!r}: must be an integer in 1..{MAX_PROCESSES}")
    return value


class FleetHandle:
    def __init__(self, loop: LoopThread, ca: FleetCA, workdir: Path,
                 endpoint: tuple[str, int], processes: int, *, tls_read_buffer: int = 0,
                 link: str = "lean") -> None:
        self.loop = loop
        self.workdir = workdir
        self.endpoint = endpoint
        self.processes = check_processes(processes)
        self.tls_read_buffer = tls_read_buffer
        self.link = check_link(link)
        self._ca = ca
        self.workers: list[FleetWorker] = []
        self._where: dict[str, FleetWorker] = {}
        self._names: list[str] = []
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> FleetHandle:
        """Start the worker processes (the fleet CA is saved for them in the workdir)."""
        ca_dir = self.workdir / "ca"
        self._ca.save(ca_dir)
        self.workers = [FleetWorker(k, ca_dir, self.workdir / f"worker-{k}", self.endpoint,
                                    tls_read_buffer=self.tls_read_buffer, link=self.link)
                        for k in range(self.processes)]
        self.loop.run(self._all(lambda w: w.start(timeout)), timeout + 10)
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Power every device off and stop every worker; raises a worker's recorded death
        (FleetWorkerDied) or the first failure, after all were stopped. Safe twice."""
        if self.closed:
            return
        self.closed = True
        results = self.loop.run(self._gather([w.close(timeout) for w in self.workers]),
                                timeout + 15)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- the devices -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def add(self, names: Sequence[str], *, key_type: str = "p256",
            **options: Any) -> list[str]:
        """Make devices (powered off) with fresh credentials from the fleet CA, spread round
        robin over the workers; `options` are VirtualDeviceConfig fields."""
        names = list(names)
        if len(set(names)) != len(names) or any(n in self._where for n in names):
            raise ValueError("fleet device names must be new and distinct")
        share: dict[FleetWorker, list[str]] = {w: [] for w in self.workers}
        for i, name in enumerate(names):
            share[self.workers[(len(self._names) + i) % len(self.workers)]].append(name)
        timeout = 30 + PER_DEVICE_S * 4 * len(names)
        self._request_each({w: {"names": n, "options": options, "key_type": key_type}
                            for w, n in share.items() if n}, "add", timeout)
        for worker, assigned in share.items():
            for name in assigned:
                self._where[name] = worker
        self._names += names
        return names

    def power_on(self, names: Iterable[str] | None = None, *, rate: float = 0.0,
                 concurrency: int = 0, online_timeout: float = 60.0) -> dict[str, Any]:
        """Power devices on (None: all), at most `rate` per second in all (0: at once).
        With `concurrency` > 0 (per worker), at most that many joins are in flight and the
        call returns once each joined or `online_timeout` passed: {"failed",
        "failed_examples", "join_s", "online_p50_ms", "online_p99_ms"} (the percentiles
        are the workers' largest)."""
        share = self._share(names)
        per_worker = rate / len(share) if rate > 0 and share else 0.0
        count = sum(len(n) if n is not None else len(self._names) for n in share.values())
        timeout = 30 + (count / rate if rate > 0 else 0) + (online_timeout if concurrency else 0)
        replies = list(self._request_each(
            {w: {"names": n, "rate": per_worker, "concurrency": concurrency,
                 "online_timeout": online_timeout} for w, n in share.items()},
            "power_on", timeout).values())
        return {"failed": sum(r["failed"] for r in replies),
                "failed_examples": [e for r in replies for e in r["failed_examples"]][:3],
                "join_s": max((r["join_s"] for r in replies), default=0.0),
                "online_p50_ms": max((r["online_p50_ms"] or 0 for r in replies), default=0),
                "online_p99_ms": max((r["online_p99_ms"] or 0 for r in replies), default=0)}

    def power_off(self, names: Iterable[str] | None = None) -> None:
        share = self._share(names)
        self._request_each({w: {"names": n} for w, n in share.items()}, "power_off",
                           30 + PER_DEVICE_S * len(self._names))

    def wait(self, lifecycle: Lifecycle, names: Iterable[str] | None = None,
             timeout: float | None = None) -> None:
        """Until every named device (None: all) is in `lifecycle`; FleetWaitTimeout lists
        the laggards."""
        timeout = waits.resolve(timeout)
        share = self._share(names)
        replies = self._request_each(
            {w: {"names": n, "lifecycle": lifecycle.value, "timeout": timeout}
             for w, n in share.items()}, "wait", timeout + 30)
        late = sum(int(r["late_count"]) for r in replies.values())
        if late:
            examples = [DeviceState.from_wire(s) for r in replies.values() for s in r["late"]]
            raise FleetWaitTimeout(
                f"timed out after {timeout:g}s waiting for {late} of "
                f"{sum(len(n) if n else 0 for n in share.values()) or len(self._names)} "
                f"device(s) to be {lifecycle.value}; now {dict(self.counts())}; e.g. "
                + "; ".join(str(s) for s in examples[:10]))

    def wait_online(self, timeout: float | None = None,
                    names: Iterable[str] | None = None) -> None:
        self.wait(Lifecycle.ONLINE, names, timeout)

    def states(self, names: Iterable[str] | None = None) -> dict[str, DeviceState]:
        """Each device's state as its worker sees it now, by name."""
        replies = self._request_each({w: {"names": n} for w, n in self._share(names).items()},
                                     "states", 30 + PER_DEVICE_S * len(self._names))
        found = {s.name: s for r in replies.values()
                 for s in map(DeviceState.from_wire, r["devices"])}
        return {n: found[n] for n in self._names if n in found}

    def state(self, name: str) -> DeviceState:
        return self.states([name])[name]

    def counts(self) -> Counter[str]:
        """How many devices are in each lifecycle (by its value: "online", "backoff"...)."""
        total: Counter[str] = Counter()
        for reply in self._request_each({w: {} for w in self.workers}, "counts", 30).values():
            total.update(reply["lifecycles"])
        return total

    def mark(self) -> None:
        """Start a window of heartbeat round trips (see `collect`)."""
        self._request_each({w: {} for w in self.workers}, "mark", 30)

    def collect(self) -> dict[str, Any]:
        """Since `mark()`: the round trips (seconds, sorted), the window, acknowledgements
        per device (min, max), heartbeats unanswered for over a second now (how many, from
        how many devices, up to ten of their names), lifecycle counts, connections made, lean
        links open (None on stream links), the workers' RSS (kB), CPU time (s) and largest
        event-loop lateness (ms)."""
        replies = list(self._request_each({w: {} for w in self.workers}, "collect", 60).values())
        return {"rtts": sorted(us / 1e6 for r in replies for us in r["rtts_us"]),
                "window_s": max(r["window_s"] for r in replies),
                "acks_min": min(r["acks_min"] for r in replies),
                "acks_max": max(r["acks_max"] for r in replies),
                "rss_kb": sum(r["rss_kb"] for r in replies),
                "cpu_s": sum(r["cpu_s"] for r in replies),
                "lag_max_ms": max(r["lag_max_ms"] for r in replies),
                "gc_max_ms": max(r["gc_max_ms"] for r in replies),
                "unacked_over_1s": sum(r["unacked_over_1s"] for r in replies),
                "unacked_devices": sum(r["unacked_devices"] for r in replies),
                "unacked_examples": sorted(n for r in replies for n in r["unacked_examples"])[:10],
                "open_links": (None if any(r["open_links"] is None for r in replies)
                               else sum(r["open_links"] for r in replies)),
                "lifecycles": dict(sum((Counter(r["lifecycles"]) for r in replies), Counter())),
                "connections": sum(r["connections"] for r in replies)}

    # -- plumbing ----------------------------------------------------------------------------
    def _share(self, names: Iterable[str] | None) -> dict[FleetWorker, list[str] | None]:
        """The named devices by worker (None: every device of every worker)."""
        if names is None:
            return dict.fromkeys(self.workers)
        share: dict[FleetWorker, list[str] | None] = {}
        for name in names:
            worker = self._where.get(name)
            if worker is None:
                raise KeyError(f"no fleet device named {name!r}")
            share.setdefault(worker, []).append(name)  # type: ignore[union-attr]
        return share

    def _request_each(self, commands: dict[FleetWorker, dict[str, Any]], cmd: str,
                      timeout: float) -> dict[FleetWorker, dict[str, Any]]:
        if self.closed:
            raise FleetError("the fleet is closed")
        workers = list(commands)
        results = self.loop.run(self._gather(
            [w.request(cmd, timeout, **{k: v for k, v in commands[w].items() if v is not None
                                        or k != "names"}) for w in workers]), timeout + 10)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return dict(zip(workers, results, strict=True))

    async def _all(self, fn: Any) -> None:
        results = await self._gather([fn(w) for w in self.workers])
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @staticmethod
    async def _gather(coros: list[Any]) -> list[Any]:
        return list(await asyncio.gather(*coros, return_exceptions=True))

    def __repr__(self) -> str:
        return (f"<FleetHandle {len(self._names)} devices in {len(self.workers)} processes"
                f"{' closed' if self.closed else ''}>")
