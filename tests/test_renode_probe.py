"""The probe that runs before any Renode device boots (bench.machines.renode.probe): a
missing peripheral model (Error E04) makes the backend unavailable, naming the type, and
the probe finds out whether Renode announces the port it bound for ``--port 0``. Against
tests/data/renode/standin_renode.py, a stand-in written from Renode's sources (no Renode
can be installed here)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from wasmbed_hil.bench.machines.renode import machine as renode_machine
from wasmbed_hil.bench.machines.renode import probe
from wasmbed_hil.bench.machines.renode.scripts import RENODE_DIR

STANDIN = Path(__file__).parent / "data" / "renode" / "standin_renode.py"
PLATFORM = RENODE_DIR / "mps2-an385.repl"


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """An executable ``renode`` that runs the stand-in; returns a setter for its models."""
    path = tmp_path / "renode"
    path.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(STANDIN)!r}, "
                    "run_name='__main__')\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    probe.forget()
    yield str(path)
    probe.forget()
    assert not renode_machine._LIVE, "the probe's Renode must be gone"


def test_a_release_loads_the_platform_and_announces_its_bound_port(standin, monkeypatch):
    monkeypatch.setenv("STANDIN_ANNOUNCE", "bound")
    found = probe.profile(standin, PLATFORM, timeout=20)
    assert found.check.loads and found.check.missing_types == ()
    assert found.port_zero and found.version == (1, 16, 1)
    assert found.unavailable_reason() is None
    assert probe.profile(standin, PLATFORM) is found  # probed once, then cached
    assert probe.cached(standin) is found


def test_a_missing_model_makes_the_backend_unavailable_naming_it(standin, monkeypatch, tmp_path):
    # As a release would see the former platform: Arm_CMSDK_Timer is in no release.
    old = tmp_path / "old.repl"
    old.write_text(PLATFORM.read_text() + "\ntimer0: Timers.Arm_CMSDK_Timer @ sysbus 0x40000000\n"
                   "    frequency: 25000000\n")
    found = probe.profile(standin, old, timeout=20)
    assert found.check.missing_types == ("Timers.Arm_CMSDK_Timer",)
    assert not found.check.loads
    reason = found.unavailable_reason()
    assert reason is not None and "Timers.Arm_CMSDK_Timer" in reason and "E04" in reason


def test_a_renode_that_announces_the_requested_port_falls_back_to_a_picked_one(
        standin, monkeypatch):
    monkeypatch.setenv("STANDIN_ANNOUNCE", "requested")  # every release up to 1.16.1
    found = probe.profile(standin, PLATFORM, timeout=20)
    assert not found.port_zero
    assert found.check.loads


def test_missing_types_reads_renodes_e04_lines():
    text = ("There was an error executing command 'machine LoadPlatformDescription @x'\n"
            "Error E04: Could not resolve type: 'Timers.Arm_CMSDK_Timer'.\n"
            "Error E04: Could not resolve type: 'Timers.Arm_CMSDK_Timer'.\n"
            "Error E04: Could not resolve type: 'Foo.Bar'.")
    assert probe.missing_types(text) == ("Timers.Arm_CMSDK_Timer", "Foo.Bar")
    assert probe.missing_types("Error E20: something else") == ()


def test_the_backend_skips_naming_the_model_its_renode_lacks(standin, monkeypatch):
    from wasmbed_hil.bench.backends.renode import RenodeBackend

    monkeypatch.setenv("WASMBED_RENODE", standin)
    monkeypatch.setenv("STANDIN_MODELS", "Memory.MappedMemory,IRQControllers.NVIC,CPU.CortexM,"
                       "UART.CMSDK_APB_UART")  # a Renode without Miscellaneous.DWT
    monkeypatch.delenv("PYRENODE_PKG", raising=False)
    monkeypatch.delenv("PYRENODE_BUILD_DIR", raising=False)
    reason = RenodeBackend.unavailable_reason()
    assert reason is not None and "Miscellaneous.DWT" in reason and "mps2-an385.repl" in reason


def test_a_renode_that_does_not_come_up_is_probed_once_and_skips_nothing(tmp_path, monkeypatch):
    from wasmbed_hil.bench.errors import MachineError

    starts = tmp_path / "starts"
    broken = tmp_path / "renode"
    broken.write_text(f"#!/bin/sh\necho started >> {starts}\necho 'Cannot open assembly'\n"
                      "exit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    probe.forget()
    try:
        for _ in range(2):
            with pytest.raises(MachineError, match="Cannot open assembly"):
                probe.profile(str(broken), PLATFORM, timeout=20)
        assert starts.read_text().splitlines() == ["started"]
    finally:
        probe.forget()
