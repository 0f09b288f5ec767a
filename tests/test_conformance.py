"""The conformance suite (wasmbed_hil.conformance) run as a firmware author runs it:
``pytest --pyargs wasmbed_hil.conformance`` in a directory of their own, in a subprocess.

It passes against the reference model (virtual) and our image (qemu), and fails against the
self-check image built with ``make -C firmware CONFORMANCE_BREAK=no-heartbeat`` (a firmware
that never sends heartbeats), naming the heartbeat clause.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wasmbed_hil.bench.firmware import build
from wasmbed_hil.conformance import CLAUSES

ROOT = Path(__file__).resolve().parents[1]
BREAK = "no-heartbeat"


def _conformance(cwd: Path, *args: str, select: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WASMBED_HIL_FIRMWARE", "WASMBED_HIL_BOARD", "WASMBED_HIL_BACKEND")}
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "wasmbed_hil.conformance",
           "-p", "no:cacheprovider", "-p", "no:randomly", "-rA", "--strict-markers",
           *args]
    if select:
        cmd += ["-k", select]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _needs_qemu() -> None:
    missing = [t for t in ("qemu-system-arm",) if not shutil.which(t)] + build.missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _broken_image() -> Path:
    """The self-check image: our firmware built with CONFORMANCE_BREAK=no-heartbeat, in a
    build directory of its own beside the normal one."""
    proc = build.run_make([f"BOARD={build.DEFAULT_BOARD}", f"CONFORMANCE_BREAK={BREAK}"])
    elf = build.image_path().parent.with_name(
        f"{build.DEFAULT_BOARD}-conformance-{BREAK}") / "wasmbed.elf"
    assert proc.returncode == 0 and elf.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return elf


#: The suite's checks: one or more per clause.
CHECKS = len(re.findall(r"^def test_c\d_", (ROOT / "wasmbed_hil" / "conformance"
                                            / "test_firmware_contract.py").read_text(), re.M))


def test_every_clause_has_a_check_and_a_section_in_the_contract():
    doc = (ROOT / "docs" / "firmware-contract.md").read_text()
    module = (ROOT / "wasmbed_hil" / "conformance" / "test_firmware_contract.py").read_text()
    for cid, spec in CLAUSES.items():
        assert re.search(rf"^### {cid}\. {re.escape(spec.title)}$", doc, re.M), cid
        assert re.search(rf"^def test_{cid.lower()}_", module, re.M), cid


def test_the_reference_model_passes(tmp_path):
    out = _conformance(tmp_path, "--hil-backend=virtual")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(rf"{CHECKS} passed", out.stdout), out.stdout[-2000:]


def test_our_image_passes_on_qemu(tmp_path):
    _needs_qemu()
    elf = build.ensure_image()
    out = _conformance(tmp_path, "--hil-backend=qemu", f"--hil-firmware={elf}")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    # the header says which image on which board was checked
    assert f"wasmbed-hil: board mps2-an385, firmware image {elf}" in out.stdout
    assert re.search(rf"{CHECKS} passed", out.stdout), out.stdout[-2000:]


def test_an_image_that_never_sends_heartbeats_fails_the_heartbeat_clause(tmp_path):
    _needs_qemu()
    elf = _broken_image()
    out = _conformance(tmp_path, "--hil-backend=qemu", f"--hil-firmware={elf}",
                       select="c1 or c3")
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-2000:]
    assert "PASSED test_firmware_contract.py::test_c1_boots_and_prints_the_connecting_line" \
        in out.stdout  # it boots: what fails is the heartbeat clause, and only that
    assert "FAILED test_firmware_contract.py::test_c3_heartbeats_arrive_at_the_configured" \
        in out.stdout
    assert "firmware contract C3 (Heartbeats) not met: timed out after" in out.stdout
    assert re.search(r"waiting for 6 heartbeats; 0 of \d+ acknowledged", out.stdout), out.stdout
    assert "C3 requires: send a Heartbeat every heartbeat_interval_ms" in out.stdout
    assert "last console lines:" in out.stdout and "online as " in out.stdout
    assert "During handling" not in out.stdout  # the clause's message, not a chain
