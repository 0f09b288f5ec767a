"""Benchmark the firmware on emulated MPS2-AN385 boards (qemu-system-arm) against a real gateway.

Run from the repository root:
    .venv/bin/python benchmarks/bench_qemu.py            # full run, under about 8 minutes
    .venv/bin/python benchmarks/bench_qemu.py --quick    # under 2 minutes
    .venv/bin/python benchmarks/bench_qemu.py --only enroll deploy footprint \
        --firmware before.elf firmware/build/mps2-an385/wasmbed.elf    # an A/B of two images

It prints medians (p90 where useful), never asserts:
  1. QEMU process start (power_on) -> ONLINE for a new device (challenge-response enrollment)
     and for an enrolled one booting again, with the firmware's own "tls: up in N ms";
  2. deploy -> result of a module of about 64 KiB (data_module, entry "checksum") with
     max_frame_size 8192 and 4096, and the transfer rate over the emulated UART;
  3. fib(25) under wasm3 on the emulated Cortex-M3 versus wasmtime on the host;
  4. the image's flash and static RAM (arm-none-eabi-size);
  (--firmware A.elf B.elf: sections 1, 2 and 4 for each image, 1 and 2 interleaved, with the
   ratios A/B of the medians: a before/after comparison in one run and one load; --links
   uart ethernet: the link of each, e.g. main's image on the UART against ours on Ethernet);
  5. a ramp of concurrent QEMU devices on one gateway (heartbeat 1 s, timeout 3 s): the
     largest N whose heartbeats are on time, and how far it holds beyond (no heartbeat
     timeouts), with load average, qemu RSS and CPU, and how fast the devices' clocks ran.
Device-side figures (duration_us, "tls: up in N ms", heartbeat timing) come from the
firmware's SysTick tick counter, which loses ticks when the host starves the emulator:
on a loaded machine they under-report; section 5's "dev clock" column shows by how much.
Every emulator it starts is killed (also on Ctrl-C or SIGTERM); the last line says whether
any qemu-system-arm process is left. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.backends.firmware import FirmwareDeviceHandle
from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.firmware.build import ensure_image, footprint
from wasmbed_hil.bench.gateway import GatewayHandle
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.virtual.device import Lifecycle
from wasmbed_hil.bench.virtual.runtime import RunLimits, WasmRuntime
from wasmbed_hil.gateway import GatewayConfig, RunRequest, WaitTimeout
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import DevicePhase, Limits

TLS_UP = re.compile(r"tls: up in (\d+) ms")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODULE_TARGET = 64 * 1024
HEARTBEAT = {"heartbeat_interval_s": 1.0, "heartbeat_timeout_s": 3.0}
RAMP_WINDOW_S = 5.0
RAMP_MIN_HEARTBEATS = 4
ONLINE_TIMEOUT_S = 30.0
RUN_LIMITS = Limits(fuel=0, timeout_ms=30_000)
SECTIONS = ("enroll", "deploy", "fib", "footprint", "ramp")


# ====================================================================== small utilities
def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))]


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def row(
    label: str, values: Sequence[float], unit: str, scale: float = 1.0, p90: bool = True
) -> None:
    if not values:
        print(f"  {label:<52} (no samples)")
        return
    text = f"median {med(values) * scale:9.1f} {unit}"
    if p90 and len(values) > 1:
        text += f"   p90 {pct(values, 0.9) * scale:9.1f} {unit}"
    text += f"   (n={len(values)}, min {min(values) * scale:.1f}, max {max(values) * scale:.1f})"
    print(f"  {label:<52} {text}")


def rss_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def qemu_pids() -> list[int]:
    proc = subprocess.run(["pgrep", "-x", "qemu-system-arm"], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()]


class Interrupted(Exception):
    pass


# ====================================================================== the bench
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_qemu-"))
        self.loop = LoopThread("bench-qemu-loop")
        self.ca = FleetCA.create("bench_qemu fleet CA")
        self.backend = QemuBackend(self.loop, self.tmp / "devices")
        self.handles: list[FirmwareDeviceHandle] = []
        self.gateways: list[GatewayHandle] = []
        self.pids: set[int] = set()  # every emulator pid this run started
        self.elf = self.backend.elf

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # -- resources ----------------------------------------------------------------------
    def gateway(self, name: str, **overrides: Any) -> GatewayHandle:
        config = GatewayConfig.for_tests(name=name, **overrides)
        gw = GatewayHandle(self.loop, self.ca, self.tmp / name, config)
        self.gateways.append(gw)
        gw.start()
        return gw

    def device(self, gw: GatewayHandle, name: str, **options: Any) -> FirmwareDeviceHandle:
        creds = self.ca.issue_device(name)
        handle = self.backend.create(name, creds, gw.endpoint, **options)
        self.handles.append(handle)
        return handle

    def power_on(self, handle: FirmwareDeviceHandle) -> None:
        handle.power_on()
        if handle.machine.pid is not None:
            self.pids.add(handle.machine.pid)

    def retire(self, handle: FirmwareDeviceHandle) -> None:
        try:
            handle.close()
        finally:
            if handle in self.handles:
                self.handles.remove(handle)

    def cleanup(self) -> None:
        errors = []
        for handle in list(self.handles):
            try:
                self.retire(handle)
            except Exception as exc:  # keep closing the others
                errors.append(f"{handle.name}: {exc!r}")
        for gw in self.gateways:
            try:
                gw.close()
            except Exception as exc:
                errors.append(f"gateway {gw.config.name}: {exc!r}")
        try:
            leftovers = self.loop.close()
            if leftovers:
                print(f"note: {len(leftovers)} loop tasks were still running at the end")
        except Exception as exc:
            errors.append(f"loop: {exc!r}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            print("cleanup errors: " + "; ".join(errors))

    # -- helpers --------------------------------------------------------------------------
    def boot_online(
        self, handle: FirmwareDeviceHandle, timeout: float = ONLINE_TIMEOUT_S
    ) -> tuple[float, int | None]:
        """power_on -> ONLINE in seconds, and the firmware's 'tls: up in N ms' of this boot."""
        mark = len(handle.machine.console)
        t0 = time.monotonic()
        self.power_on(handle)
        handle.wait_online(timeout)
        elapsed = time.monotonic() - t0
        tls_ms = None
        for line in handle.machine.console[mark:]:
            if m := TLS_UP.search(line):
                tls_ms = int(m.group(1))
        return elapsed, tls_ms

    def wait_run_id(self, dep: Any, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            run_id, error = self.loop.call(lambda: (dep.run_id, dep.error))
            if run_id is not None:
                return int(run_id)
            if error:
                raise RuntimeError(error)
            time.sleep(0.01)
        raise TimeoutError(f"the run of {dep.app_id} did not start within {timeout:g}s")

    # -- images -------------------------------------------------------------------------
    def images(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, device options) per image sections 1 and 2 measure: ours, or each
        --firmware given (interleaved, so that both see the same machine load)."""
        links = self.args.links or []
        if not self.args.firmware:
            if not links:
                return [("", {})]
            return [(f"[{link}] ", {"link": link}) for link in links]
        if links and len(links) != len(self.args.firmware):
            raise SystemExit("--links needs one link per --firmware image")
        out = []
        for i, p in enumerate(self.args.firmware):
            options: dict[str, Any] = {"firmware": str(Path(p).resolve())}
            label = Path(p).name
            if links:
                options["link"] = links[i]
                label += f" {links[i]}"
            out.append((f"[{label}] ", options))
        return out

    def ratios(self, label: str, samples: dict[str, list[float]]) -> None:
        """With two images: the first's median over the second's."""
        if len(samples) == 2:
            (a, va), (b, vb) = samples.items()
            if va and vb:
                print(f"  {label + ', ' + a.strip() + ' / ' + b.strip():<52} "
                      f"{med(va) / med(vb):9.2f} x (medians)")

    # ================================================================== 1. enrollment
    def bench_enroll(self, gw: GatewayHandle, repeats: int) -> None:
        print("\n1. QEMU process start (power_on) -> ONLINE, through the gateway")
        images = self.images()
        enroll: dict[str, list[float]] = {label: [] for label, _ in images}
        reconnect: dict[str, list[float]] = {label: [] for label, _ in images}
        tls_first: dict[str, list[float]] = {label: [] for label, _ in images}
        tls_again: dict[str, list[float]] = {label: [] for label, _ in images}
        enrollments0 = gw.metrics().get("enrollments", 0)
        for i in range(repeats):
            if i and self.left() < self.args.reserve:
                print(f"  (time budget: stopped after {i} repeats)")
                break
            for k, (label, options) in enumerate(images if i % 2 == 0 else images[::-1]):
                handle = self.device(gw, f"enroll-{i}-{k}", **options)
                try:
                    t, tls = self.boot_online(handle)
                    enroll[label].append(t)
                    if tls is not None:
                        tls_first[label].append(tls)
                    handle.power_off()
                    t, tls = self.boot_online(handle)
                    reconnect[label].append(t)
                    if tls is not None:
                        tls_again[label].append(tls)
                except WaitTimeout as exc:
                    print(f"  {label}repeat {i}: {str(exc).splitlines()[0]}")
                finally:
                    self.retire(handle)
        enrolled = gw.metrics().get("enrollments", 0) - enrollments0
        for label, _ in images:
            row(f"{label}new device (challenge-response enrollment)", enroll[label], "ms", 1000)
            row(f"{label}enrolled device booting again (Welcome only)", reconnect[label], "ms",
                1000)
            row(f"{label}firmware 'tls: up in N ms', first boot", tls_first[label], "ms")
            row(f"{label}firmware 'tls: up in N ms', boot again", tls_again[label], "ms")
        self.ratios("new device", enroll)
        self.ratios("firmware 'tls: up', first boot", tls_first)
        new = sum(len(v) for v in enroll.values())
        print(
            f"  gateway enrollments counted: {enrolled} for {new} new devices "
            f"(re-boots must not enroll again)"
        )

    # ================================================================== 2. deploy 64 KiB
    @staticmethod
    def module_64k() -> tuple[int, bytes]:
        size = MODULE_TARGET - (
            len(modules.data_module(MODULE_TARGET - 256)) - (MODULE_TARGET - 256)
        )
        while len(modules.data_module(size)) > MODULE_TARGET:
            size -= 1
        return size, modules.data_module(size)

    def bench_deploy(self, gw: GatewayHandle, repeats: int) -> None:
        data_size, _ = self.module_64k()
        print(
            f"\n2. deploy -> result, a {MODULE_TARGET // 1024} KiB module "
            f"(data_module({data_size}), entry 'checksum', max_apps=1)"
        )
        images = self.images()
        for frame in (8192, 4096):
            if self.left() < self.args.reserve:
                print(f"  max_frame_size {frame}: skipped (time budget)")
                continue
            keys = ("xfer", "total", "rate", "wire_rate", "run_us")
            got: dict[str, dict[str, list[float]]] = {
                label: {key: [] for key in keys} for label, _ in images
            }
            handles: dict[str, FirmwareDeviceHandle] = {}
            module, chunks = modules.data_module(data_size), 0
            try:
                for k, (label, options) in enumerate(images):
                    handles[label] = self.device(
                        gw, f"deploy-{frame}-{k}", max_frame_size=frame, max_apps=1, **options
                    )
                    self.boot_online(handles[label])
                for r in range(repeats):
                    if r and self.left() < self.args.reserve:
                        print(f"  (time budget: {r} repeats)")
                        break
                    for k, (label, _) in enumerate(images if r % 2 == 0 else images[::-1]):
                        # a new digest each time: the device must transfer it
                        seed = r + 1 + frame + 1000 * k
                        module = modules.data_module(data_size, seed)
                        chunks = self.deploy_once(
                            gw, handles[label], module, data_size, seed, got[label], label
                        ) or chunks
            except (WaitTimeout, TimeoutError, RuntimeError) as exc:
                print(f"  max_frame_size {frame}: {str(exc).splitlines()[0]}")
            finally:
                for handle in handles.values():
                    self.retire(handle)
            for label, _ in images:
                g = got[label]
                print(
                    f"  {label}max_frame_size {frame} ({len(module)} B module"
                    + (f", {chunks} chunks" if g["xfer"] else "")
                    + "):"
                )
                row("  deploy call -> installed (transfer)", g["xfer"], "s", 1, p90=False)
                row("  deploy call -> result", g["total"], "s", 1, p90=False)
                row("  module bytes / transfer time", g["rate"], "KiB/s", 1 / 1024, p90=False)
                row(
                    "  bridge bytes down (TLS, framing) / transfer time",
                    g["wire_rate"],
                    "KiB/s",
                    1 / 1024,
                    p90=False,
                )
                row("  checksum run on the device (duration_us)", g["run_us"], "ms", 1 / 1000,
                    p90=False)
            self.ratios(f"frame {frame}: deploy -> result",
                        {label: got[label]["total"] for label, _ in images})

    def deploy_once(
        self,
        gw: GatewayHandle,
        handle: FirmwareDeviceHandle,
        module: bytes,
        data_size: int,
        seed: int,
        got: dict[str, list[float]],
        label: str,
    ) -> int:
        """One deploy -> result of `module`; its figures appended to `got`; the chunks sent
        (0 when it failed)."""
        down0 = handle.link.stats.bytes_down
        t0 = time.monotonic()
        dep = gw.deploy(
            handle, module, "data", limits=RUN_LIMITS, run=RunRequest("checksum"), timeout=120
        )
        t1 = time.monotonic()
        wire = handle.link.stats.bytes_down - down0
        if dep.state != "installed":
            print(f"  {label}deployment {dep.state}: {dep.error_code} {dep.error}")
            return 0
        run_id = self.wait_run_id(dep, 30)
        res = gw.wait_result(handle, "data", run_id, timeout=60)
        t2 = time.monotonic()
        expected = modules.data_checksum(data_size, seed)
        value = res.values[0] if res.values else None
        if res.outcome.name != "RETURNED" or value is None or (int(value) & 0xFFFFFFFF) != expected:
            print(
                f"  {label}outcome {res.outcome.name} values {res.values} "
                f"(expected checksum {expected}) {res.detail}"
            )
        got["xfer"].append(t1 - t0)
        got["total"].append(t2 - t0)
        got["rate"].append(len(module) / (t1 - t0))
        got["wire_rate"].append(wire / (t1 - t0))
        got["run_us"].append(res.duration_us)
        return int(dep.chunks_sent)

    # ================================================================== 3. fib(25)
    def bench_fib(self, gw: GatewayHandle, repeats: int) -> None:
        print("\n3. fib(25): wasm3 on the emulated Cortex-M3 vs wasmtime on the host")
        fib = modules.build("fib")
        device_us: list[float] = []
        wall_s: list[float] = []  # host clock, StartApp sent -> ExecutionResult stored
        handle = self.device(gw, "fib")
        try:
            self.boot_online(handle)
            first = gw.run(handle, fib, "fib", "fib", (25,), RUN_LIMITS, timeout=60)
            print(
                f"  first run (deploy + run): {first.outcome.name} {first.values} "
                f"{first.duration_us / 1000:.1f} ms on the device"
            )
            for r in range(repeats):
                if r and self.left() < self.args.reserve:
                    break
                t0 = time.monotonic()
                run_id = gw.start_app(handle, "fib", "fib", (25,))
                res = gw.wait_result(handle, "fib", run_id, timeout=60)
                wall_s.append(time.monotonic() - t0)
                if res.outcome.name != "RETURNED" or res.values != (75025,):
                    print(f"  run {r}: {res.outcome.name} {res.values} {res.detail}")
                    continue
                device_us.append(res.duration_us)
        except (WaitTimeout, TimeoutError, RuntimeError, AssertionError) as exc:
            print(f"  device: {str(exc).splitlines()[0]}")
        finally:
            self.retire(handle)
        rt = WasmRuntime()
        compiled = rt.compile(fib)
        limits = RunLimits(fuel=1 << 62, timeout_s=30.0)
        rt.run(compiled, "fib", (25,), limits)  # warm-up
        host_us = [
            rt.run(compiled, "fib", (25,), limits).duration_us for _ in range(max(repeats, 5))
        ]
        row("wasm3 on QEMU Cortex-M3 (ExecutionResult.duration_us)", device_us, "ms", 1 / 1000)
        row("  host clock, start_app -> result (incl. 2 UART trips)", wall_s, "ms", 1000)
        row("wasmtime on the host (RunResult.duration_us)", host_us, "ms", 1 / 1000)
        if device_us and host_us:
            print(f"  {'ratio device / host (medians)':<52} {med(device_us) / med(host_us):9.1f} x")

    # ================================================================== 4. footprint
    def bench_footprint(self) -> None:
        cwd = Path.cwd()
        elfs = [Path(p).resolve() for p in self.args.firmware] if self.args.firmware else [
            self.elf]
        for elf in elfs:
            fp = footprint(elf)
            where = elf.relative_to(cwd) if elf.is_relative_to(cwd) else elf
            print(f"\n4. image footprint ({where})")
            print(
                f"  flash (text + data)  {fp['flash']:>9} B  {fp['flash'] / 1024:8.1f} KiB"
                f"   (text {fp['text']}, data {fp['data']})"
            )
            print(
                f"  static RAM (data+bss){fp['ram']:>9} B  {fp['ram'] / 1024:8.1f} KiB"
                f"   (bss {fp['bss']}; 64 KiB stack and the heap come on top)"
            )

    # ================================================================== 5. ramp
    def snapshot(self, gw: GatewayHandle) -> tuple[int, dict[str, tuple[Any, ...]]]:
        def read() -> tuple[int, dict[str, tuple[Any, ...]]]:
            g = gw.gateway
            return (
                g.metrics.get("heartbeat_timeouts", 0),
                {
                    st.identity: (st.heartbeats, st.phase, st.uptime_ms, st.last_heartbeat)
                    for st in g.devices()
                },
            )

        return self.loop.call(read)

    def bench_ramp(self, max_devices: int) -> None:
        print(
            f"\n5. concurrent QEMU devices on one gateway (heartbeat 1 s, timeout 3 s, "
            f"window {RAMP_WINDOW_S:g} s; on time = no heartbeat timeout and every device "
            f"online with >= {RAMP_MIN_HEARTBEATS} heartbeats in the window)"
        )
        print(
            "  the ramp goes on past the first late step until heartbeats time out, a device "
            "is not online, --max-devices or the time budget"
        )
        steps = [1, 2, 4, 8]
        while steps[-1] < max_devices:
            steps.append(steps[-1] + 4)
        steps = sorted({min(n, max_devices) for n in steps})
        gw = self.gateway("gateway-ramp", **HEARTBEAT)
        devices: list[FirmwareDeviceHandle] = []
        on_time, held, first_late = 0, 0, None
        print(
            f"  {'N':>3} {'online in':>9} {'hb min/med':>10} {'hb t/o':>6} {'late':>5} "
            f"{'load 1/5/15':>16} {'qemu RSS':>10} {'RSS/dev':>8} {'qemu CPU':>9} "
            f"{'harness CPU':>11} {'dev clock':>9}"
        )
        try:
            for n in steps:
                new = n - len(devices)
                bound = min(self.args.online_cap, 20.0 + 2.0 * new)
                if self.left() < bound + RAMP_WINDOW_S + 5:
                    print(f"  N={n}: not started (time budget)")
                    break
                batch = [self.device(gw, f"ramp-{k}") for k in range(len(devices), n)]
                devices += batch
                t0 = time.monotonic()
                for h in batch:
                    self.power_on(h)
                online_at = None
                while time.monotonic() - t0 < bound:
                    if all(h.lifecycle is Lifecycle.ONLINE for h in devices):
                        online_at = time.monotonic() - t0
                        break
                    time.sleep(0.05)
                # the window
                timeouts0, hb0 = self.snapshot(gw)
                cpu0 = {h.name: cpu_s(h.machine.pid) for h in devices}
                me0, w0 = self_cpu_s(), time.monotonic()
                time.sleep(RAMP_WINDOW_S)
                timeouts1, hb1 = self.snapshot(gw)
                window = time.monotonic() - w0
                qemu_cpu = sum(cpu_s(h.machine.pid) - cpu0[h.name] for h in devices) / window
                harness_cpu = (self_cpu_s() - me0) / window
                rss = sum(rss_kib(h.machine.pid) for h in devices)
                counts = []
                not_online = 0
                clocks = []  # device ms per host ms between the heartbeats seen (1.0: in step)
                for h in devices:
                    before, _, up0, at0 = hb0.get(h.identity, (0, None, 0, None))
                    after, phase, up1, at1 = hb1.get(h.identity, (0, None, 0, None))
                    counts.append(after - before)
                    if at0 is not None and at1 is not None and at1 - at0 > 1.0:
                        clocks.append((up1 - up0) / ((at1 - at0) * 1000))
                    if h.lifecycle is not Lifecycle.ONLINE or phase is not DevicePhase.CONNECTED:
                        not_online += 1
                timeouts = timeouts1 - timeouts0
                late = timeouts > 0 or not_online > 0 or min(counts) < RAMP_MIN_HEARTBEATS
                online_txt = f"{online_at:8.1f}s" if online_at is not None else f">{bound:6.0f}s"
                print(
                    f"  {n:>3} {online_txt:>9} {min(counts):>4}/{med(counts):<5.1f} "
                    f"{timeouts:>6} {('LATE' if late else 'no'):>5} {loadavg():>16} "
                    f"{rss / 1024:8.1f}Mi {rss / 1024 / n:6.1f}Mi {qemu_cpu * 100:8.0f}% "
                    f"{harness_cpu * 100:10.1f}% {min(clocks, default=float('nan')):9.2f}"
                    + (f"  ({not_online} not online)" if not_online else "")
                )
                if late and first_late is None:
                    first_late = n
                if not late and first_late is None:
                    on_time = n
                if timeouts > 0 or not_online > 0:
                    break
                held = n
        finally:
            for h in devices:
                try:
                    self.retire(h)
                except Exception as exc:
                    print(f"  closing {h.name}: {exc!r}")
        print(
            "  dev clock: slowest device's uptime_ms advance per host ms between heartbeats "
            "(< 1: its SysTick lost ticks)"
        )
        print(
            f"  largest N on time: {on_time}"
            + ("" if on_time else " (none)")
            + f"; largest N without heartbeat timeouts, all online: {held}"
            + f"   ({os.cpu_count()} CPUs; shared machine, see the load average)"
        )


def _sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 2 minutes)")
    parser.add_argument("--repeats", type=int, help="samples per figure (default 5, quick 2)")
    parser.add_argument("--max-devices", type=int, help="largest ramp step (default 24, quick 4)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="run only these sections (default: all)",
    )
    parser.add_argument(
        "--firmware",
        nargs="+",
        metavar="ELF",
        help="sections 1 and 2 on each of these images, interleaved (two: also the ratios "
        "of the first over the second), e.g. a build of main against this tree's",
    )
    parser.add_argument(
        "--links",
        nargs="+",
        choices=("uart", "ethernet"),
        help="the device's link per --firmware image (in order), or, without --firmware, "
        "the links to compare on our image (default: the backend's choice: ethernet for our "
        "image, uart for a given one; an image from before the Ethernet link has only uart)",
    )
    args = parser.parse_args()
    args.repeats = max(1, args.repeats or (2 if args.quick else 5))
    args.max_devices = max(1, args.max_devices or (4 if args.quick else 24))
    args.budget = 110.0 if args.quick else 465.0
    args.reserve = 45.0 if args.quick else 200.0  # seconds kept for the ramp
    if "ramp" not in args.only:
        args.reserve = 0.0
    args.online_cap = 30.0 if args.quick else 60.0

    signal.signal(signal.SIGTERM, _sigterm)
    before = set(qemu_pids())
    print(
        f"bench_qemu: {os.cpu_count()} CPUs, load average {loadavg()} at start "
        f"(shared machine: other work runs alongside), repeats {args.repeats}"
        + (f", {len(before)} qemu-system-arm processes of others already running" if before else "")
    )
    bench: Bench | None = None
    t_start = time.monotonic()
    try:
        t0 = time.monotonic()
        ensure_image()
        print(f"firmware image ready in {time.monotonic() - t0:.1f} s")
        bench = Bench(args)
        gw = bench.gateway("gateway-0", **HEARTBEAT)
        if "enroll" in args.only:
            bench.bench_enroll(gw, args.repeats)
        if "deploy" in args.only:
            bench.bench_deploy(gw, min(args.repeats, 3))
        if "fib" in args.only:
            bench.bench_fib(gw, args.repeats)
        if "footprint" in args.only:
            bench.bench_footprint()
        if "ramp" in args.only:
            bench.bench_ramp(args.max_devices)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({exc.__class__.__name__}): cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup must not be interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench is not None:
            bench.cleanup()
        ours = bench.pids if bench is not None else set()
        left = [p for p in qemu_pids() if p not in before]
        mine = [p for p in left if p in ours]
        print(f"\ntotal {time.monotonic() - t_start:.0f} s")
        if mine:
            print(f"qemu-system-arm processes of this run LEFT RUNNING: {mine}")
        elif left:
            print(
                f"no qemu-system-arm of this run left; {len(left)} others appeared meanwhile "
                f"(other work on this machine): {left}"
            )
        else:
            print("no qemu-system-arm process left")


if __name__ == "__main__":
    main()
