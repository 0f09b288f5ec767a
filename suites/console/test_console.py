"""The device console on every backend: expect what the firmware prints as it prints it,
type its console commands, and see them take effect at the gateway."""

from __future__ import annotations

import re

import pytest

from wasmbed_hil.bench.consolelog import ConsoleTimeout
from wasmbed_hil.protocol import DevicePhase


def test_expect_sees_the_session_the_gateway_sees(gateway, device):
    match = device.console.expect(r"online as ([0-9a-f]{32})", from_start=True)
    assert match.group(1) == device.device_id
    assert gateway.device(device).device_id == match.group(1)


def test_console_commands_silence_and_resume_heartbeats(gateway, device):
    gateway.wait_heartbeats(device, 1)
    device.console.skip_to_end()
    device.console.write_line("silent 1")
    device.console.expect_exact("heartbeats silenced")
    gateway.wait_phase(device, DevicePhase.UNREACHABLE)
    device.console.write_line("silent 0")
    device.console.expect_exact("heartbeats resumed")
    gateway.wait_phase(device, DevicePhase.CONNECTED)


def test_expect_follows_a_reboot_line_by_line(device):
    before = device.console.skip_to_end()
    device.power_off()
    device.power_on()
    connecting = device.console.expect(r"connecting to ")
    after_connecting = device.console.cursor
    online = device.console.expect(r"online as ([0-9a-f]{32})")
    assert online.group(1) == device.device_id
    # Matched in order, both printed after the reboot: each expect moved the cursor on.
    assert before < after_connecting < device.console.cursor
    assert device.console[after_connecting - 1] == connecting.string
    assert device.console[device.console.cursor - 1] == online.string


def test_a_line_that_never_comes_times_out_naming_pattern_and_tail(device):
    with pytest.raises(ConsoleTimeout) as caught:
        device.console.expect(r"never printed \d+", timeout=0.2)
    text = str(caught.value)
    assert re.search(r"no console line matched 'never printed \\\\d\+' within 0\.2s", text), text
    assert "online as" in text  # the tail
