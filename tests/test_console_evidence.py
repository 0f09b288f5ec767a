"""Waits a user can debug: --hil-timeout bounds every wait, a gateway-side wait that fails
shows the devices' consoles, and an emulator killed mid-test is an infrastructure failure
with its exit status and last console lines. Runs pytest on generated scenarios."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.pytest_plugin.evidence import CATEGORIES, INFRASTRUCTURE, PRODUCT

TIMEOUTS = '''
from wasmbed_hil.protocol import DevicePhase


def test_gateway_wait_default(gateway, device):
    gateway.wait_phase(device, DevicePhase.UNREACHABLE)


def test_gateway_wait_explicit(gateway, device):
    gateway.wait_phase(device, DevicePhase.UNREACHABLE, timeout=0.3)


def test_console_expect_default(device):
    device.console.expect("never printed")


def test_device_wait_default(device):
    device.power_off()
    device.wait_online()
'''

KILLED = '''
import os
import signal

from wasmbed_hil.protocol import DevicePhase


def test_killed_under_an_expect(device):
    os.kill(device.machine.pid, signal.SIGKILL)
    device.console.expect("never printed")


def test_killed_under_a_gateway_wait(gateway, device):
    os.kill(device.machine.pid, signal.SIGKILL)
    gateway.wait_heartbeats(device, 1000)


def test_killed_and_nobody_waited(gateway, device):
    os.kill(device.machine.pid, signal.SIGKILL)
    gateway.wait_phase(device, DevicePhase.DISCONNECTED)
'''


def run(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_generated.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
         "-rA", str(tmp_path / "test_generated.py"), "--rootdir", str(tmp_path),
         "--alluredir", str(tmp_path / "allure"), "--junitxml", str(tmp_path / "junit.xml"),
         *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def junit_cases(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Per test: its failure/error message and text, and its properties."""
    out: dict[str, dict[str, str]] = {}
    for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"):
        info = {p.get("name") or "": p.get("value") or "" for p in case.iter("property")}
        for kind in ("failure", "error"):
            for node in case.iter(kind):
                info[kind] = f"{node.get('message')}\n{node.text}"
        out[case.get("name") or ""] = info
    return out


def attachments(tmp_path: Path, test: str) -> dict[str, str]:
    for path in (tmp_path / "allure").glob("*-result.json"):
        result = json.loads(path.read_text())
        if result["name"] == test:
            return {a["name"]: (tmp_path / "allure" / a["source"]).read_text()
                    for a in result.get("attachments", [])}
    raise AssertionError(f"no Allure result for {test}")


def test_hil_timeout_bounds_every_wait_and_gateway_waits_show_consoles(tmp_path: Path) -> None:
    done = run(tmp_path, TIMEOUTS, "--hil-backend=virtual", "--hil-timeout=1")
    assert done.returncode == 1, done.stdout + done.stderr
    cases = junit_cases(tmp_path)
    default = cases["test_gateway_wait_default"]
    assert "timed out after 1s waiting for device-0 Unreachable" in default["failure"]
    assert "--- console of device-0 (last 15 lines) ---" in default["failure"]
    assert "online as" in default["failure"]  # the console's tail, in the message
    assert default["failure_category"] == PRODUCT
    assert not re.match(CATEGORIES[0]["traceRegex"], default["failure"])
    shown = attachments(tmp_path, "test_gateway_wait_default")
    assert "online as" in shown["device consoles at the failed wait"]
    explicit = cases["test_gateway_wait_explicit"]["failure"]
    assert "timed out after 0.3s" in explicit  # an explicit timeout wins
    expect = cases["test_console_expect_default"]["failure"]
    assert "no console line matched 'never printed' within 1s" in expect
    assert "device-0 (virtual): online not reached within 1s" in (
        cases["test_device_wait_default"]["failure"])
    # A device wait's message has its console tail already: it is not appended twice.
    assert "--- console of" not in cases["test_device_wait_default"]["failure"]


@pytest.mark.skipif(QemuBackend.unavailable_reason() is not None,
                    reason=f"qemu backend unavailable: {QemuBackend.unavailable_reason()}")
def test_an_emulator_killed_mid_test_is_an_infrastructure_failure(tmp_path: Path) -> None:
    done = run(tmp_path, KILLED, "--hil-backend=qemu", "--hil-timeout=3")
    assert done.returncode == 1, done.stdout + done.stderr
    cases = junit_cases(tmp_path)
    infrastructure = re.compile(CATEGORIES[0]["traceRegex"])
    for name, case in cases.items():
        assert case["failure_category"] == INFRASTRUCTURE, (name, case)
        assert infrastructure.match(case.get("failure") or case["error"]), name  # Allure's too
    expect = cases["test_killed_under_an_expect"]["failure"]
    assert "MachineDied" in expect
    assert "device-0: qemu exited with status -9 (killed by SIGKILL)" in expect
    assert "online as" in expect  # the last console lines
    gateway_wait = cases["test_killed_under_a_gateway_wait"]["failure"]
    assert "timed out after 3s waiting for 1000 heartbeats" in gateway_wait
    assert "qemu exited with status -9" in gateway_wait
    died = attachments(tmp_path, "test_killed_under_a_gateway_wait")["machine died: device-0"]
    assert died.startswith("device-0: qemu exited with status -9")
    # The call passed; the teardown reports the death nobody waited on.
    unnoticed = cases["test_killed_and_nobody_waited"]
    assert "failure" not in unnoticed
    assert "qemu exited with status -9" in unnoticed["error"]
