"""Benchmark the emulated kube-apiserver: Device writes, reads and watch events per second.

The server (wasmbed_hil.bench.apiserver.ApiServer, TLS on as the platform runs it, the
generated CRDs installed) runs in its own thread and event loop; the clients run in the main
thread. Both share this process, hence one GIL: the figures are for the in-process set-up the
tests and the platform use, not for a server on its own core. Per run, on a fresh namespace:
  - KubeClient (wasmbed_hil.kube.client, asyncio) at concurrency 1 and 16: creates/s,
    merge-patches of /status per second (one per object) and gets/s;
  - the official `kubernetes` client (sync, one thread): creates/s;
  - watch delivery: ADDED events per second received by one KubeClient watcher while
    KubeClient writes creates at concurrency 16 (the rate over the time from the first write
    to the last event), next to the write rate in the same window.
Medians over --repeats runs (min and max beside them), after one warm-up run that is dropped.
Figures only, no assertions. All traffic stays on 127.0.0.1.

Run from the repository root: python -m benchmarks.bench_kube [--repeats N] [--count N]
[--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.kube.client import Kind, KubeClient, KubeConfig, install_crds
from wasmbed_hil.kube.resources import API_VERSION, GROUP, VERSION, Device

DEVICES = Kind.of(Device)
CONCURRENCY = (1, 16)


def device(index: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Device",
            "metadata": {"name": f"dev-{index}"}, "spec": {"identity": f"{index:064x}"}}


def heartbeat(index: int) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"status": {"phase": "Connected", "uptimeMs": index, "lastHeartbeat": now}}


async def concurrently(count: int, concurrency: int,
                       op: Callable[[int], Awaitable[object]]) -> float:
    """op(0..count-1) by `concurrency` workers; returns operations per second."""
    indices = iter(range(count))

    async def worker() -> None:
        for index in indices:  # shared: each index is taken by one worker
            await op(index)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def kubeclient_run(kube: KubeClient, namespace: str, count: int,
                         concurrency: int) -> dict[str, float]:
    await kube.ensure_namespace(namespace)
    creates = await concurrently(
        count, concurrency, lambda i: kube.create(DEVICES, device(i), namespace))
    patches = await concurrently(
        count, concurrency,
        lambda i: kube.patch(DEVICES, f"dev-{i}", heartbeat(i), namespace, status=True))
    gets = await concurrently(
        count, concurrency, lambda i: kube.get(DEVICES, f"dev-{i}", namespace))
    return {"creates": creates, "status_patches": patches, "gets": gets}


async def watch_run(kube: KubeClient, namespace: str, count: int) -> dict[str, float]:
    """Events/s delivered to one watcher while creating `count` Devices at concurrency 16."""
    await kube.ensure_namespace(namespace)
    listed = await kube.list(DEVICES, namespace)
    received = 0
    all_received = asyncio.Event()

    async def watcher() -> None:
        nonlocal received
        async for kind, _obj in kube.watch(
            DEVICES, namespace, resource_version=listed["metadata"]["resourceVersion"],
            timeout_s=600,
        ):
            if kind == "ADDED":
                received += 1
                if received == count:
                    all_received.set()

    task = asyncio.create_task(watcher())
    try:
        await asyncio.sleep(0.2)  # let the watch request reach the server before writing
        start = time.perf_counter()
        writes = await concurrently(
            count, 16, lambda i: kube.create(DEVICES, device(i), namespace))
        await asyncio.wait_for(all_received.wait(), timeout=120)
        events = count / (time.perf_counter() - start)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return {"watch_events": events, "watch_writes": writes}


def official_creates(kubeconfig: Path, namespace: str, count: int) -> float:
    """Creates/s through the official client (sync, one thread, one keep-alive connection)."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    with k8s.ApiClient(configuration) as api:
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        custom = k8s.CustomObjectsApi(api)
        start = time.perf_counter()
        for index in range(count):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, Device.PLURAL,
                                                   device(index))
        return count / (time.perf_counter() - start)


async def one_run(kube: KubeClient, kubeconfig: Path, run: int,
                  count: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for concurrency in CONCURRENCY:
        rates = await kubeclient_run(kube, f"bench-{run}-c{concurrency}", count, concurrency)
        figures.update({f"{name}_c{concurrency}": rate for name, rate in rates.items()})
    figures["official_creates"] = await asyncio.to_thread(
        official_creates, kubeconfig, f"bench-{run}-official", count)
    figures.update(await watch_run(kube, f"bench-{run}-watch", count))
    return figures


async def bench(kubeconfig: Path, args: argparse.Namespace,
                profile: Callable[[bool], None]) -> list[dict[str, float]]:
    async with KubeClient(KubeConfig.from_kubeconfig(kubeconfig)) as kube:
        await install_crds(kube)
        await one_run(kube, kubeconfig, 0, max(args.count // 5, 20))  # warm-up, dropped
        runs = []
        profile(True)
        for run in range(1, args.repeats + 1):
            runs.append(await one_run(kube, kubeconfig, run, args.count))
        profile(False)
        return runs


LABELS = [
    ("creates_c1", "KubeClient creates        c=1 "),
    ("creates_c16", "KubeClient creates        c=16"),
    ("status_patches_c1", "KubeClient /status merges c=1 "),
    ("status_patches_c16", "KubeClient /status merges c=16"),
    ("gets_c1", "KubeClient gets           c=1 "),
    ("gets_c16", "KubeClient gets           c=16"),
    ("official_creates", "kubernetes client creates c=1 "),
    ("watch_events", "watch events delivered        "),
    ("watch_writes", "  (creates c=16 meanwhile)    "),
]


def report(runs: list[dict[str, float]]) -> None:
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    for key, label in LABELS:
        values = [run[key] for run in runs]
        print(f"{label} median {medians[key]:8.0f}/s  (min {min(values):.0f}, "
              f"max {max(values):.0f})")
    for name in ("creates", "status_patches", "gets"):
        print(f"ratio c16/c1 {name:15s} {medians[f'{name}_c16'] / medians[f'{name}_c1']:5.2f}")
    print(f"ratio KubeClient/kubernetes creates c=1 "
          f"{medians['creates_c1'] / medians['official_creates']:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (a few seconds)")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 5, quick 3)")
    parser.add_argument("--count", type=int,
                        help="objects per figure and run (default 1000, quick 200)")
    parser.add_argument("--profile", action="store_true",
                        help="also print the server thread's hottest functions (cProfile)")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.count = args.count or (200 if args.quick else 1000)
    if args.repeats < 1 or args.count < 1:
        parser.error("--repeats and --count must be positive")

    loop = LoopThread("bench-kube-apiserver")
    server = ApiServer()  # TLS with a fresh CA, a random token
    profiler = cProfile.Profile()

    def profile(on: bool) -> None:  # cProfile hooks only the thread that enables it
        if args.profile:
            loop.call(profiler.enable if on else profiler.disable)

    try:
        loop.run(server.start())
        with tempfile.TemporaryDirectory(prefix="bench-kube-") as directory:
            kubeconfig = server.write_kubeconfig(Path(directory) / "kubeconfig")
            print(f"emulated kube-apiserver over TLS at {server.url}, in-process (own thread "
                  f"and loop), {os.cpu_count()} CPUs; {args.repeats} runs of {args.count} "
                  f"objects per figure, median (min, max)")
            runs = asyncio.run(bench(kubeconfig, args, profile))
    finally:
        loop.run(server.stop())
        loop.close()
    report(runs)
    if args.profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print("\nserver thread, by own time:\n" + out.getvalue())


if __name__ == "__main__":
    main()
