"""The firmware image for QEMU mps2-an385: per-device blob, the board as a build parameter,
build, footprint, and a booted image that meets a corrupted blob (reports it on UART0 and
halts without crashing)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import subprocess

import pytest
from qemu_console import Console

from wasmbed_hil.bench.backends import get_backend
from wasmbed_hil.bench.firmware import (
    BLOB_ADDRESS,
    BlobError,
    build_blob,
    ensure_image,
    footprint,
    parse_blob,
)
from wasmbed_hil.bench.firmware.build import (
    BUILD_DIR,
    FIRMWARE_DIR,
    boards,
    image_path,
    missing_tools,
    run_make,
)
from wasmbed_hil.bench.machines.qemu import QEMU, qemu_command
from wasmbed_hil.pki import FleetCA

MISSING = missing_tools() + ([QEMU] if shutil.which(QEMU) is None else [])
needs_toolchain = pytest.mark.skipif(
    bool(MISSING),
    reason=f"firmware tests need {', '.join(MISSING)} (qemu-system-arm, "
    "arm-none-eabi-gcc/size, make) on PATH",
)


@pytest.fixture(scope="module")
def device():
    ca = FleetCA.create()
    return ca.issue_device("dev-7")


# -- blob (pure Python) ---------------------------------------------------------------------


def test_blob_round_trip(device):
    seed = bytes(range(32))
    blob = build_blob(device, "dev-7", "gateway.test", seed=seed)
    assert blob[:4] == b"WBLB"
    assert struct.unpack_from("<HHI", blob, 4) == (1, 0, len(blob))
    assert blob[-32:] == hashlib.sha256(blob[:-32]).digest()
    parsed = parse_blob(blob)
    assert parsed == {
        "version": 1,
        "key_der": device.key_der,
        "cert_der": device.cert_der,
        "ca_der": device.ca_der,
        "seed": seed,
        "name": "dev-7",
        "server_name": "gateway.test",
    }
    assert BLOB_ADDRESS == 0x203FC000


def test_the_blob_address_is_the_ports_own(tmp_path, monkeypatch):
    from wasmbed_hil.bench.firmware import build

    assert build.blob_address("mps2-an385") == BLOB_ADDRESS  # board_port.h says the same
    port = tmp_path / "ports" / "other-board"
    port.mkdir(parents=True)
    (port / "board.mk").write_text("BOARD_CPU := cortex-m4\n")
    (port / "board_port.h").write_text("#define WB_BLOB_ADDRESS 0x2003C000u\n")
    monkeypatch.setattr(build, "PORTS_DIR", tmp_path / "ports")
    assert build.blob_address("other-board") == 0x2003C000
    with pytest.raises(ValueError, match="unknown board 'nope'"):
        build.blob_address("nope")
    (port / "board_port.h").write_text("/* no address */\n")
    with pytest.raises(build.FirmwareBuildError, match="defines no WB_BLOB_ADDRESS"):
        build.blob_address("other-board")


def test_blob_seed_is_random_by_default(device):
    a = parse_blob(build_blob(device, "d", "gw"))["seed"]
    b = parse_blob(build_blob(device, "d", "gw"))["seed"]
    assert len(a) == 32 and a != b


@pytest.mark.parametrize("offset", [0, 5, 9, 12, 100, -40, -1])
def test_blob_corruption_is_detected(device, offset):
    blob = bytearray(build_blob(device, "dev-7", "gateway.test"))
    blob[offset] ^= 0x01
    with pytest.raises(BlobError):
        parse_blob(bytes(blob))


def test_blob_truncated_is_rejected(device):
    blob = build_blob(device, "dev-7", "gateway.test")
    with pytest.raises(BlobError):
        parse_blob(blob[:-1])


def test_blob_rejects_what_the_firmware_cannot_use(device):
    ed = FleetCA.create().issue_device("ed", key_type="ed25519")
    with pytest.raises(BlobError, match="P-256"):
        build_blob(ed, "ed", "gw")
    with pytest.raises(BlobError):
        build_blob(device, "", "gw")
    with pytest.raises(BlobError):
        build_blob(device, "x" * 65, "gw")
    with pytest.raises(BlobError):
        build_blob(device, "d", "gw", seed=b"short")


def test_qemu_command_shape(tmp_path):
    argv = qemu_command(tmp_path / "fw.elf", tmp_path / "blob.bin", 4321, tmp_path / "qmp.sock")
    assert argv[:3] == ["qemu-system-arm", "-M", "mps2-an385"]
    assert f"loader,file={tmp_path / 'blob.bin'},addr=0x203fc000,force-raw=on" in argv
    assert "tcp:127.0.0.1:4321,nodelay=on" in argv
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"
    # UART0 first (console on stdio), UART1 second (the TLS byte stream)
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == ["chardev:uart0", "tcp:127.0.0.1:4321,nodelay=on"]
    assert qemu_command(tmp_path / "fw.elf", tmp_path / "blob.bin", 4321,
                        board="mps2-an385") == argv[:-2]
    with pytest.raises(ValueError, match="unknown board 'nrf52840dk'"):
        qemu_command(tmp_path / "fw.elf", tmp_path / "blob.bin", 4321, board="nrf52840dk")


# -- boards ---------------------------------------------------------------------------------


def test_the_board_is_a_build_parameter():
    """A bare-metal board is a port directory with a board.mk; make builds it into its own
    build directory, and refuses a board without one."""
    assert boards() == ["mps2-an385"]
    assert image_path() == BUILD_DIR / "mps2-an385" / "wasmbed.elf"
    assert image_path("mps2-an385", selftest="tls") == (
        BUILD_DIR / "mps2-an385-selftest-tls" / "wasmbed.elf")
    with pytest.raises(ValueError, match=r"unknown board 'nope'.*mps2-an385"):
        image_path("nope")
    with pytest.raises(ValueError, match="unknown board"):
        ensure_image(board="nope")
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    refused = subprocess.run(["make", "-C", str(FIRMWARE_DIR), "BOARD=nope"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "BOARD=nope: no ports/nope/board.mk (bare-metal boards: mps2-an385)" in refused.stderr


# -- image ----------------------------------------------------------------------------------


@needs_toolchain
def test_image_builds_and_reports_footprint():
    first = run_make([])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "footprint: flash " in first.stdout
    again = run_make([])  # incremental: nothing left to compile or link
    assert again.returncode == 0
    assert "  CC  " not in again.stdout and "  LD  " not in again.stdout, again.stdout
    elf = ensure_image()
    sizes = footprint(elf)
    assert 0 < sizes["flash"] < 4 * 1024 * 1024
    assert 0 < sizes["ram"] < 0x3FC000
    print(f"footprint: {sizes}")


def _corrupt(blob: bytes, how: str) -> bytes:
    data = bytearray(blob)
    if how == "flipped-byte":
        data[200] ^= 0x40
    elif how == "bad-magic":
        data[0:4] = b"XXXX"
    elif how == "huge-length":
        struct.pack_into("<I", data, 8, 0x7FFFFFFF)
    elif how == "bad-entry-length":  # consistent digest, but an entry runs past the end
        struct.pack_into("<H", data, 14, 0xFFF0)
        data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    return bytes(data)


@needs_toolchain
@pytest.mark.parametrize("how", ["flipped-byte", "bad-magic", "huge-length", "bad-entry-length"])
def test_booted_image_reports_a_corrupted_blob_and_halts(device, tmp_path, how):
    elf = ensure_image()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(_corrupt(build_blob(device, "dev-7", "gateway.test"), how))
    uart1 = socket.create_server(("127.0.0.1", 0))  # QEMU dials UART1 out; nothing talks
    console = None
    try:
        console = Console(qemu_command(elf, blob, uart1.getsockname()[1]))
        _, error = console.wait_for("blob error", timeout=30)
        assert "0x203fc000" in error
        console.wait_for("HALT: invalid per-device blob", timeout=10)
        assert console.proc.poll() is None, "qemu died"
        assert not any("HARDFAULT" in line for line in console.output), console.output
    finally:
        if console is not None:
            console.close()
        uart1.close()


def test_tools_reported_when_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    # the build's tools; QEMU is the qemu backend's to check, and it does
    assert missing_tools() == ["arm-none-eabi-gcc", "arm-none-eabi-size", "make"]
    assert "qemu-system-arm" in get_backend("qemu").unavailable_reason()


def test_without_firmware_sources_the_build_says_so(tmp_path, monkeypatch):
    """An incomplete installation without the firmware sources: an infrastructure error that
    says why, and reports that describe no image (never a crash of the run)."""
    from wasmbed_hil.bench.backends.firmware import firmware_digest
    from wasmbed_hil.bench.errors import InfrastructureError
    from wasmbed_hil.bench.firmware import build

    monkeypatch.setattr(build, "FIRMWARE_DIR", tmp_path / "firmware")
    monkeypatch.setattr(build, "PORTS_DIR", tmp_path / "firmware" / "ports")
    with pytest.raises(build.FirmwareBuildError, match="no firmware sources at") as info:
        build.image_path()
    assert isinstance(info.value, InfrastructureError)
    assert firmware_digest() is None
