"""What the REST API's metrics cost a request, and what a control-plane scrape costs.

    .venv/bin/python benchmarks/bench_rest_metrics.py [--requests 500] [--windows 8]

Two RestApi instances on 127.0.0.1 in one loop: one as shipped, one with its metrics
middleware removed before it starts. Alternating windows of `--requests` sequential
`GET /health` round trips (the cheapest route: the middleware's share is largest there),
median per window; prints the medians of the windows, their ratio and the load average. Then
one REST registry and one controller registry are scraped (collect and text format, no HTTP).
Prints, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import timeit

import aiohttp
from prometheus_client import generate_latest

from wasmbed_hil.controlplane.metrics import ControllerMetrics
from wasmbed_hil.controlplane.rest import RestApi
from wasmbed_hil.kube.client import KubeClient, KubeConfig


async def _window(http: aiohttp.ClientSession, url: str, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with http.get(url + "/health") as response:
            await response.read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def requests(n: int, windows: int) -> None:
    # /health never reaches the API server: nothing listens at this address.
    kube = KubeClient(KubeConfig(server="https://127.0.0.1:9", namespace="bench"))
    shipped = RestApi(kube, namespace="bench", token="t")
    bare = RestApi(kube, namespace="bench", token="t")
    measure = bare.app.middlewares[0]
    assert measure.__name__ == "_measure", measure
    bare.app.middlewares.remove(measure)
    await shipped.start()
    await bare.start()
    try:
        async with aiohttp.ClientSession() as http:
            await _window(http, shipped.url, n)  # warm up both
            await _window(http, bare.url, n)
            on, off = [], []
            for _ in range(windows):
                on.append(await _window(http, shipped.url, n))
                off.append(await _window(http, bare.url, n))
    finally:
        await shipped.stop()
        await bare.stop()
        await kube.close()
    a, b = statistics.median(on), statistics.median(off)
    print(f"GET /health round trip, median of {windows} windows of {n}: with metrics "
          f"{a * 1e6:.0f} us, without {b * 1e6:.0f} us, ratio {a / b:.3f} "
          f"(+{(a - b) * 1e6:.0f} us); windows with {[round(x * 1e6) for x in on]}, without "
          f"{[round(x * 1e6) for x in off]}; load {os.getloadavg()[0]:.2f}")


def scrape_cost() -> None:
    metrics = ControllerMetrics()
    phases = ["Connected"] * 1000
    metrics.watch_objects({"Device": lambda: phases, "Application": lambda: ["Running"] * 10,
                           "Gateway": lambda: ["Running"] * 4})
    per = min(timeit.repeat(lambda: generate_latest(metrics.registry), number=50,
                            repeat=5)) / 50
    size = len(generate_latest(metrics.registry))
    print(f"controller scrape (1,000 Devices in view): {per * 1e3:.2f} ms, {size} bytes; "
          f"load {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--windows", type=int, default=8)
    args = parser.parse_args()
    if args.requests < 1 or args.windows < 1:
        parser.error("--requests and --windows must be positive")
    asyncio.run(requests(args.requests, args.windows))
    scrape_cost()


if __name__ == "__main__":
    main()
