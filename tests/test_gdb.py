"""--hil-gdb: a device's GDB server on a handed-over port, attached to for real with
gdb-multiarch on the qemu backend, and the option's checks."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from wasmbed_hil.bench.backends import get_backend
from wasmbed_hil.bench.machines.gdb import (
    GDB_DEVICE_ENV,
    GDB_ENV,
    GdbListener,
    GdbRequest,
    attach_hint,
)
from wasmbed_hil.bench.machines.qemu import gdb_arguments

GDB = "gdb-multiarch"


def elf_entry(path: Path) -> int:
    """The entry point of a 32-bit little-endian ELF (e_entry), as readelf -h shows it."""
    header = path.read_bytes()[:28]
    assert header[:4] == b"\x7fELF" and header[4] == 1 and header[5] == 1, "not an ELF32 LE"
    return struct.unpack_from("<I", header, 24)[0]


def gdb_batch(elf: str, port: int, *commands: str) -> str:
    argv = [GDB, "--batch", "-nx", elf, "-ex", f"target remote 127.0.0.1:{port}"]
    for command in commands:
        argv += ["-ex", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_request_names_its_mode_and_devices_and_refuses_anything_else(monkeypatch):
    assert GdbRequest("halted").applies_to("any") and GdbRequest("halted").halted
    only = GdbRequest("running", "fleet-*")
    assert only.applies_to("fleet-3") and not only.applies_to("device-0") and not only.halted
    with pytest.raises(ValueError, match="halted, running"):
        GdbRequest("paused")
    with pytest.raises(ValueError, match="device name or a glob"):
        GdbRequest("running", "dev;rm -rf")
    monkeypatch.delenv(GDB_ENV, raising=False)
    assert GdbRequest.from_env() is None
    monkeypatch.setenv(GDB_ENV, "halted")
    monkeypatch.setenv(GDB_DEVICE_ENV, "device-0")
    assert GdbRequest.for_device("device-0") == GdbRequest("halted", "device-0")
    assert GdbRequest.for_device("device-1") is None
    monkeypatch.setenv(GDB_ENV, "sleeping")
    with pytest.raises(ValueError, match=GDB_ENV):
        GdbRequest.from_env()


def test_qemu_gets_the_listening_socket_and_halts_only_when_asked():
    listener = GdbListener()
    try:
        assert listener.port > 0
        fd = listener.fileno()
        running = gdb_arguments(fd, halted=False)
        assert running == ["-chardev", f"socket,id=gdb,fd={fd},server=on,wait=off",
                           "-gdb", "chardev:gdb"]
        assert gdb_arguments(fd, halted=True) == [*running, "-S"]
    finally:
        listener.close()
    hint = attach_hint("/fw/wasmbed.elf", 4321, "device-0", halted=True)
    assert "gdb-multiarch /fw/wasmbed.elf -ex 'target remote 127.0.0.1:4321'" in hint
    assert hint.startswith("device-0: ") and "halted" in hint


def test_bad_gdb_options_are_usage_errors(tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    for args, message in ((["--hil-gdb-device", "device-0"], "needs --hil-gdb"),
                          (["--hil-gdb", "running", "--hil-gdb-device", "a b"], "glob"),
                          (["--hil-gdb", "later"], "invalid choice")):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             str(tmp_path / "test_nothing.py"), "--rootdir", str(tmp_path), *args],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)


def _qemu_reason() -> str | None:
    if shutil.which(GDB) is None:
        return f"{GDB} not installed (Debian: gdb-multiarch; scripts/system-deps.sh)"
    return get_backend("qemu").unavailable_reason()


@pytest.mark.skipif(_qemu_reason() is not None, reason=str(_qemu_reason()))
def test_a_halted_qemu_device_waits_at_its_reset_vector_for_gdb_then_boots(
    hil_scope, gateway, tmp_path, monkeypatch
):
    monkeypatch.setenv(GDB_ENV, "halted")
    monkeypatch.setenv(GDB_DEVICE_ENV, "dbg-*")
    backend = hil_scope.backend("qemu", workdir=tmp_path)
    plain = hil_scope.device(backend, "plain-0", gateway)
    assert plain.gdb_port is None and not plain.gdb_halted and plain.gdb_hint() == ""

    device = hil_scope.device(backend, "dbg-0", gateway)
    port = device.gdb_port
    assert port is not None and device.gdb_halted  # known before the emulator starts
    elf = str(backend.elf)
    assert f"gdb-multiarch {elf} -ex 'target remote 127.0.0.1:{port}'" in device.gdb_hint()
    device.power_on()
    assert any(f"127.0.0.1:{port}" in line for line in device.console)  # the hint, logged

    # Halted: the CPU has not run one instruction, the PC is the ELF's entry (reset handler;
    # the Thumb bit of the entry is not part of the PC).
    out = gdb_batch(elf, port, "p/x $pc", "detach")
    assert f"$1 = {elf_entry(Path(elf)) & ~1:#x}" in out, out
    assert not any("online as" in line for line in device.console)
    # Detaching lets it run: it boots, enrolls and comes online.
    device.wait_online(60)
    # The port stays the device's over a power cycle; the next boot is halted again.
    device.power_off()
    device.power_on()
    assert device.gdb_port == port
    out = gdb_batch(elf, port, "p/x $pc", "detach")
    assert f"$1 = {elf_entry(Path(elf)) & ~1:#x}" in out, out
    device.wait_online(60)


SCENARIO = '''
import subprocess


def test_debugging_session(device):
    assert device.gdb_halted and device.device_id is None  # the fixture did not wait
    port = device.gdb_port
    subprocess.run(["gdb-multiarch", "--batch", "-nx", "-ex",
                    f"target remote 127.0.0.1:{port}", "-ex", "detach"],
                   check=True, capture_output=True, timeout=60)
    assert device.wait_online(60)
'''


@pytest.mark.skipif(_qemu_reason() is not None, reason=str(_qemu_reason()))
def test_with_hil_gdb_halted_the_device_fixture_announces_and_does_not_wait(tmp_path):
    (tmp_path / "test_session.py").write_text(SCENARIO)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:randomly",
         str(tmp_path / "test_session.py"), "--rootdir", str(tmp_path),
         "--hil-backend=qemu", "--hil-gdb=halted", "--hil-gdb-device=device-*"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "device-0: GDB server on 127.0.0.1:" in done.stdout
    assert "-ex 'target remote 127.0.0.1:" in done.stdout
