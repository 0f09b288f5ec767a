"""The Robot Framework keyword library (wasmbed_hil.robot), used from Python and from robot."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from robot.api import ExecutionResult, SkipExecution

from wasmbed_hil.bench.backends import BackendUnavailable
from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.virtual.device import Lifecycle
from wasmbed_hil.gateway.events import WaitTimeout
from wasmbed_hil.robot import WasmbedLibrary

RESOURCE = Path(__file__).resolve().parents[1] / "robot" / "wasmbed.resource"


@pytest.fixture
def lib():
    library = WasmbedLibrary(backend="virtual", timeout="10s")
    try:
        yield library
    finally:
        library.close()


def _loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "wasmbed-robot-loop"]


def test_keywords_run_a_module_on_a_virtual_device_and_clean_up(tmp_path):
    before = _loop_threads()
    lib = WasmbedLibrary(backend="virtual", timeout=10, workdir=str(tmp_path / "work"))
    lib.start_gateway(heartbeat_interval="100ms", heartbeat_timeout="500ms")
    name = lib.create_device("sensor")
    device_id = lib.wait_until_connected()
    assert lib.wait_until_enrolled(name) == device_id == lib.get_device_id()
    lib.device_phase_should_be("connected")
    assert lib.run_module("add", 40, 2, app_id="adder", outcome="RETURNED", values=[42]) == (
        "RETURNED",
        [42],
    )
    assert lib.run_module("spin", fuel=200_000, time_limit="10s", outcome="out of fuel")[0] == (
        "OUT_OF_FUEL"
    )
    assert lib.get_execution_result()["detail"]
    lib.console_log_should_contain(f"online as {device_id}")
    lib.console_log_should_contain(r"online as [0-9a-f]{32}", regex=True)
    with pytest.raises(AssertionError, match="no line containing 'no such line'"):
        lib.console_log_should_contain("no such line")
    handle = lib._devices["sensor"].handle
    assert len(_loop_threads()) == len(before) + 1

    leftovers = lib.close()

    assert leftovers == []  # no task was still running on the loop
    assert handle.lifecycle is Lifecycle.OFF
    assert _loop_threads() == before
    assert lib.close() == []  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        lib.start_gateway("again")


def test_failed_waits_say_what_they_saw(lib):
    lib.start_gateway()
    lib.create_device()
    lib.wait_until_connected()
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.3s waiting for device-0 "
                       r"Unreachable; its phases were Enrolling -> Enrolled -> Connected"):
        lib.wait_until_unreachable(timeout="300ms")
    with pytest.raises(AssertionError, match=r"expected values \[43\]; adder on device-0"):
        lib.run_module("add", 40, 2, app_id="adder", values=43)
    with pytest.raises(AssertionError, match="is Connected, expected Unreachable"):
        lib.device_phase_should_be("Unreachable")


def test_refusals_and_silences(lib):
    lib.start_gateway(pairing=False)
    lib.create_device("stranger")
    code, reason = lib.wait_until_rejected(code="PAIRING_DISABLED")
    assert code == "PAIRING_DISABLED" and "pairing" in reason
    lib.gateway_should_have_devices(0)
    lib.enable_pairing()
    lib.wait_until_connected()
    lib.silence_device()
    lib.wait_until_unreachable()
    lib.resume_heartbeats()
    lib.wait_until_connected()
    lib.wait_for_heartbeats(2)
    lib.cut_power()
    lib.wait_until_disconnected()
    assert lib.deploy_module("add", 20, 22, app_id="adder", wait=False) == "pending"
    lib.power_on()
    assert lib.wait_for_execution_result(values=42) == ("RETURNED", [42])


def test_a_test_scope_stops_what_the_test_started(lib):
    lib.start_gateway()  # outside a test: the suite's
    lib.open_test_scope("first test")
    lib.create_device("d")
    lib.wait_until_connected()
    first = lib._devices["d"].handle
    assert lib.close_test_scope() == []
    assert first.lifecycle is Lifecycle.OFF
    with pytest.raises(AssertionError, match="no device"):
        lib.power_on()
    lib.open_test_scope("second test")
    lib.create_device("d")  # the name is free again, the suite's gateway still runs
    lib.wait_until_connected()
    lib.gateway_should_have_devices(2)
    assert lib.close_test_scope() == []


class _Interrupted(Exception):
    pass


def test_a_wait_interrupted_from_outside_leaves_nothing_running(lib):
    """A Robot test timeout interrupts a keyword with an exception raised from a signal
    handler: the wait's coroutine must not stay on the loop."""

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    lib.start_gateway()
    lib.open_test_scope("times out")
    lib.create_device()
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(_Interrupted):
            lib.wait_until_unreachable(timeout="30s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert lib.close_test_scope() == []
    assert lib.close() == []  # no task left: the interrupted wait was cancelled


def test_modules_by_name_path_or_data(lib, tmp_path):
    wat = tmp_path / "answer.wat"
    wat.write_text('(module (func (export "main") (result i32) (i32.const 42)))')
    lib.start_gateway()
    lib.create_device()
    lib.wait_until_connected()
    assert lib.run_module(str(wat), values=[42]) == ("RETURNED", [42])
    checksum = lib.get_data_checksum(3000)
    assert lib.run_module("data:3000", entry="checksum", values=checksum)[1] == [checksum]
    with pytest.raises(AssertionError, match="unknown module 'nope'"):
        lib.deploy_module("nope")
    with pytest.raises(AssertionError, match="should have failed with MODULE_TOO_LARGE"):
        lib.deploy_module("add", app_id="small", expected_error="MODULE_TOO_LARGE")


def test_unavailable_backend_fails_create_device_and_skips_require_backend(lib, monkeypatch):
    monkeypatch.setattr(
        QemuBackend, "unavailable_reason", classmethod(lambda cls: "qemu-system-arm not installed")
    )
    lib.start_gateway()
    with pytest.raises(BackendUnavailable, match=r"'qemu' is unavailable here: qemu-system-arm "
                       r"not installed\. Put 'Require Backend'"):
        lib.create_device(backend="qemu")
    with pytest.raises(SkipExecution, match="backend qemu unavailable here: qemu-system-arm"):
        lib.require_backend("qemu")
    with pytest.raises(BackendUnavailable, match="unknown backend 'renodee'"):
        lib.require_backend("renodee")
    assert lib.require_backend() == "virtual"


SUITE = """\
*** Settings ***
Resource        {resource}
Suite Setup     Require Backend
Test Setup      Start Gateway

*** Test Cases ***
Adder Returns 42
    Create Device    d
    Device Should Enroll And Connect
    Run Module    add    40    2    app_id=adder    outcome=RETURNED    values=[42]

Healthy Device Never Becomes Unreachable
    Create Device    d
    Wait Until Connected
    Wait Until Unreachable    timeout=0.5s

The Same Names Are Free Again After A Failure
    Create Device    d
    Device Should Enroll And Connect
    Gateway Should Have Devices    1
"""


def test_robot_runs_a_suite_with_the_library(tmp_path):
    suite = tmp_path / "generated.robot"
    suite.write_text(SUITE.format(resource=RESOURCE))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "robot", "--variable", "BACKEND:virtual", "--outputdir", str(out),
         "--log", "NONE", "--report", "NONE", "--consolecolors", "off", str(suite)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # robot's rc: one failed test
    result = ExecutionResult(str(out / "output.xml"))
    tests = {t.name: t for t in result.suite.tests}
    assert tests["Adder Returns 42"].status == "PASS", tests["Adder Returns 42"].message
    failed = tests["Healthy Device Never Becomes Unreachable"]
    assert failed.status == "FAIL"
    assert "timed out after 0.5s waiting for d Unreachable" in failed.message
    assert "its phases were Enrolling -> Enrolled -> Connected" in failed.message
    after = tests["The Same Names Are Free Again After A Failure"]
    assert after.status == "PASS", after.message
    # The listener's cleanup reported nothing (no errors, no leftover tasks).
    assert [m.message for m in result.errors.messages] == []


def test_link_keywords_build_impairments_from_robot_values_and_restore_the_link(lib):
    lib.start_gateway()
    lib.create_device(power_on=False)
    link = lib._devices["device-0"].handle.link
    text = lib.impair_link("latency", delay="50ms", jitter="10ms", seed="3")
    assert text.startswith("Latency(0.05, jitter=0.01, seed=3")
    lib.impair_link("bandwidth", baud="115200")
    lib.impair_link("Half-Open", direction="down", start="2s")
    lib.impair_link("corrupt", direction="up", offsets="8")
    lib.impair_link("corrupt", direction="up", offsets="8,100", after_bytes="10",
                    after_direction="up")
    kinds = [(type(i).__name__, getattr(i, "state", None)) for i in link.impairments]
    assert kinds == [("Latency", "active"), ("Bandwidth", "active"), ("HalfOpen", "pending"),
                     ("Corrupt", "active"), ("Corrupt", "pending")]
    latency, cap, half, one, two = link.impairments
    assert (latency.delay, latency.jitter, cap.bytes_per_s, half.start_after) == (
        0.05, 0.01, 11520, 2.0)
    assert (one.offsets, two.offsets, two.start_after.count) == ([8], [8, 100], 10)
    with pytest.raises(AssertionError, match=r"not ended within 0\.1s"):
        lib.wait_until_link_restored(timeout="100ms")
    lib.restore_link()
    assert link.impairments == [] and latency.ended.is_set() and half.ended.is_set()
    lib.wait_until_link_restored()  # nothing in force: at once
    lib.impair_link("stall", duration="50ms")
    lib.wait_until_link_restored(timeout="5s")
    assert link.impairments == []
    with pytest.raises(ValueError, match="unknown link impairment 'jam'"):
        lib.impair_link("jam")
    with pytest.raises(ValueError, match="bad parameters for a partition"):
        lib.impair_link("partition", delay="1s")


def test_console_keywords_wait_for_lines_and_type_commands(lib):
    lib.start_gateway()
    lib.create_device()
    device_id = lib.wait_until_connected()
    line = lib.wait_for_line_on_console(r"online as ([0-9a-f]{32})", treat_as_regex=True)
    assert device_id in line
    lib.write_line_to_console("silent 1")
    assert lib.wait_for_line_on_console("heartbeats silenced").endswith("heartbeats silenced")
    lib.wait_until_unreachable()
    lib.write_line_to_console("silent 0")
    lib.wait_for_line_on_console("heartbeats resum.d", treatAsRegex="true")  # Renode's spelling
    with pytest.raises(AssertionError, match=r"no console line matched text 'online as' "
                       r"within 0\.2s \(searched from line \d+"):
        lib.wait_for_line_on_console("online as", timeout="200ms")  # matched already
    assert device_id in lib.wait_for_line_on_console("online as", from_start=True)
    with pytest.raises(TypeError, match="unexpected arguments: \\['testerId'\\]"):
        lib.wait_for_line_on_console("x", testerId="1")


def test_the_library_timeout_is_every_waits_default_until_it_closes():
    from wasmbed_hil.bench import waits

    before = waits.default_timeout()
    library = WasmbedLibrary(backend="virtual", timeout="1.5s")
    try:
        assert waits.default_timeout() == 1.5
    finally:
        library.close()
    assert waits.default_timeout() == before
