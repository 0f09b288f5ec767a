"""fleet(n, processes=K): virtual devices in worker processes (bench/fleet/), small n here;
10,000 devices only in benchmarks/bench_gateway.py --only fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wasmbed_hil.bench.fleet import (
    FleetCommandError,
    FleetError,
    FleetHandle,
    FleetWaitTimeout,
    FleetWorkerDied,
    check_processes,
)
from wasmbed_hil.bench.fleet.protocol import check_command
from wasmbed_hil.bench.seams import Lifecycle
from wasmbed_hil.protocol import DevicePhase, Outcome

pytestmark = pytest.mark.backend_specific("virtual", reason="worker processes hold virtual devices")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_devices_in_two_processes_enroll_heartbeat_and_run(fleet, gateway, wasm):
    handle = fleet(6, processes=2)
    assert isinstance(handle, FleetHandle) and len(handle) == 6
    assert handle.counts() == {"online": 6}
    pids = {w.pid for w in handle.workers}
    assert len(pids) == 2 and os.getpid() not in pids
    states = handle.states()
    assert list(states) == [f"fleet-{i}" for i in range(6)]
    for name, state in states.items():
        assert state.lifecycle is Lifecycle.ONLINE and state.device_id
        assert gateway.device(name).device_id == state.device_id  # the gateway knows it
        assert gateway.device(name).phase is DevicePhase.CONNECTED
    gateway.wait_heartbeats("fleet-5", 2)
    # a deployment to a device of the second worker, by name, through the gateway
    result = gateway.run("fleet-1", wasm("add"), app_id="adder", args=(2, 3))
    assert result.outcome is Outcome.RETURNED and result.values == (5,)
    assert "adder" in handle.state("fleet-1").apps  # installed there, as its worker sees
    assert handle.state("fleet-2").apps == {}


def test_power_off_and_on_by_name(fleet, gateway):
    handle = fleet(4, processes=2)
    handle.power_off(["fleet-0", "fleet-3"])
    assert handle.counts() == {"online": 2, "off": 2}
    gateway.wait_phase("fleet-3", DevicePhase.DISCONNECTED)
    handle.power_on(["fleet-3"])
    handle.wait_online(names=["fleet-3"])
    assert handle.state("fleet-3").lifecycle is Lifecycle.ONLINE
    assert handle.state("fleet-0").lifecycle is Lifecycle.OFF
    with pytest.raises(FleetWaitTimeout, match=r"1 of 1 device\(s\) to be online.*fleet-0: off"):
        handle.wait_online(timeout=0.2, names=["fleet-0"])
    with pytest.raises(KeyError, match="no-such"):
        handle.power_on(["no-such"])


def test_an_error_in_a_worker_surfaces_with_its_traceback(fleet):
    handle = fleet(2, processes=2)
    worker = handle.workers[1]
    with pytest.raises(FleetCommandError, match=r"(?s)RuntimeError: boom.*Traceback"):
        handle.loop.run(worker.request("fail", 10, message="boom"))
    with pytest.raises(FleetCommandError, match="unknown virtual device options: colour"):
        handle.add(["extra-0", "extra-1"], colour="red")
    assert handle.counts() == {"online": 2}  # the worker carries on


def test_a_dead_worker_fails_every_call_and_the_teardown(hil_scope, gateway, tmp_path):
    handle = FleetHandle(hil_scope.loop, hil_scope.ca, tmp_path / "f", gateway.endpoint, 2)
    handle.start()
    handle.add(["d-0", "d-1"])
    handle.power_on()
    handle.wait_online()
    dead = handle.workers[0]
    with pytest.raises(FleetWorkerDied, match=r"exited on its own with status 70"):
        handle.loop.run(dead.request("crash", 10, status=70))
    with pytest.raises(FleetWorkerDied):
        handle.counts()
    with pytest.raises(FleetWorkerDied, match="fleet-worker-0"):
        handle.close()
    assert not any(_alive(w.pid) for w in handle.workers)


def test_close_stops_every_worker_and_the_devices_leave(hil_scope, gateway, tmp_path):
    handle = FleetHandle(hil_scope.loop, hil_scope.ca, tmp_path / "f", gateway.endpoint, 2)
    handle.start()
    handle.add([f"d-{i}" for i in range(4)])
    handle.power_on()
    handle.wait_online()
    pids = [w.pid for w in handle.workers]
    handle.close()
    assert not any(_alive(p) for p in pids)
    for i in range(4):  # powered off: each said goodbye or its connection closed
        gateway.wait_phase(f"d-{i}", DevicePhase.DISCONNECTED)
    handle.close()  # safe twice
    with pytest.raises(FleetError, match="closed"):
        handle.counts()


def test_a_killed_harness_takes_its_workers_along(tmp_path):
    """SIGKILL of the process holding the fleet (no teardown at all): the kernel kills the
    workers (setpriv --pdeathsig)."""
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent("""
        import sys
        from pathlib import Path
        from wasmbed_hil.bench.fleet import FleetHandle
        from wasmbed_hil.bench.gateway import GatewayHandle
        from wasmbed_hil.bench.loop import LoopThread
        from wasmbed_hil.gateway import GatewayConfig
        from wasmbed_hil.pki import FleetCA
        root = Path(sys.argv[1])
        loop = LoopThread()
        ca = FleetCA.create("t")
        gw = GatewayHandle(loop, ca, root / "gw", GatewayConfig.for_tests()).start()
        fleet = FleetHandle(loop, ca, root / "fleet", gw.endpoint, 2).start()
        fleet.add(["a", "b"]); fleet.power_on(); fleet.wait_online(30)
        print(" ".join(str(w.pid) for w in fleet.workers), flush=True)
        sys.stdin.read()
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    import time

    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the kernel's work: there is no event to wait on
    assert not any(_alive(p) for p in pids)


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, True, "2"])
def test_processes_is_validated(bad):
    with pytest.raises(ValueError, match="processes="):
        check_processes(bad)


@pytest.mark.parametrize(("command", "error"), [
    ([], "JSON object"),
    ({"cmd": "rm", "id": 1}, "cmd: one of"),
    ({"cmd": "counts"}, "id: an integer"),
    ({"cmd": "add", "id": 1}, "names is required"),
    ({"cmd": "add", "id": 1, "names": [""]}, "names:"),
    ({"cmd": "add", "id": 1, "names": ["a"], "key_type": "rsa"}, "key_type"),
    ({"cmd": "wait", "id": 1, "lifecycle": "online", "timeout": float("nan")}, "timeout"),
    ({"cmd": "wait", "id": 1, "lifecycle": "asleep", "timeout": 1}, "lifecycle"),
    ({"cmd": "power_on", "id": 1, "rate": -1}, "rate"),
])
def test_worker_commands_are_validated(command, error):
    with pytest.raises(ValueError, match=error):
        check_command(command)


@pytest.mark.parametrize("ending", ["fails", "interrupted"])
def test_workers_die_with_a_failed_or_interrupted_test(tmp_path, ending):
    """A test holding a fleet fails, or is interrupted (KeyboardInterrupt, as Ctrl-C): its
    teardown stops every worker, and pytest says what happened."""
    pids_file = tmp_path / "pids"
    test = tmp_path / "test_holder.py"
    end = "raise KeyboardInterrupt" if ending == "interrupted" else "assert False, 'on purpose'"
    test.write_text(textwrap.dedent(f"""
        from pathlib import Path

        def test_holder(fleet):
            handle = fleet(3, processes=2)
            Path({str(pids_file)!r}).write_text(" ".join(str(w.pid) for w in handle.workers))
            {end}
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:randomly", "-p",
         "no:cacheprovider", "--hil-backend=virtual"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids)
    if ending == "interrupted":
        assert done.returncode == 2 and "KeyboardInterrupt" in done.stdout, done.stdout
    else:
        assert done.returncode == 1 and "on purpose" in done.stdout, done.stdout
    assert "teardown failed" not in done.stdout
