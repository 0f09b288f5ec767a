"""Seed corpora of the firmware's fuzz harnesses, generated (nothing binary is committed):

    python firmware/fuzz/seeds.py OUT_DIR     # OUT_DIR/{codec,session,blob}/<name>

- codec: the envelope (frame payload) of every vector of wasmbed_hil/protocol/vectors.json;
- session: the 5-byte header of fuzz_session.c then what a gateway sends: each
  gateway-to-device vector after a Welcome, each invalid vector a device receives (after a
  Welcome when its state is "established"), and scripted sessions (enrollment, a whole
  deployment of the vectors' module with its digest, runs, stops, a resumed transfer);
- blob: blobs of wasmbed_hil.bench.firmware.build_blob (a fresh P-256 device of a fresh CA)
  and variants (configuration entry, unknown entry, the smallest accepted blob).
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmbed_hil.bench.firmware.blob import build_blob  # noqa: E402
from wasmbed_hil.pki import FleetCA  # noqa: E402
from wasmbed_hil.protocol import (  # noqa: E402
    DeployBegin,
    DeployChunk,
    DeviceInfoRequest,
    EnrollChallenge,
    EnrollReject,
    Error,
    HeartbeatAck,
    Limits,
    Message,
    StartApp,
    StopApp,
    Welcome,
    encode_envelope,
    frame,
    vectors,
)
from wasmbed_hil.protocol.types import ErrorCode  # noqa: E402

DEVICE_ID = bytes(range(16))


def header(read_cap: int = 0, step_ms: int = 10, run_ms: int = 5, flags: int = 0,
           shape: int = 0x01) -> bytes:
    """fuzz_session.c's header: read size, clock step, run length, flags, device shape
    (default: max_apps 2, max_frame_size 1024, window 1)."""
    return bytes([read_cap, step_ms, run_ms, flags, shape])


def msg(message: Message, message_id: int = 1) -> bytes:
    return frame(encode_envelope(message_id, message))


def welcome(interval_ms: int = 1000) -> bytes:
    return msg(Welcome(DEVICE_ID, interval_ms, 1024, False), 0)


def codec_seeds(doc: dict) -> dict[str, bytes]:
    seeds = {}
    for v in doc["valid"]:
        seeds[f"valid-{v['name']}"] = bytes.fromhex(v["hex"])[4:]
    for v in doc["invalid"]:
        data = bytes.fromhex(v["hex"])
        if len(data) >= 4 and int.from_bytes(data[:4], "big") == len(data) - 4:
            data = data[4:]  # one whole frame: its payload
        seeds[f"invalid-{v['name']}"] = data
    return seeds


def deployment(module: bytes, app_id: str, chunk: int, upto: int | None = None,
               start: int = 0) -> bytes:
    """DeployBegin of `module` then its chunks from byte `start` (a resume) up to byte `upto`
    (0: none, the device holds the module already)."""
    end = len(module) if upto is None else upto
    out = msg(DeployBegin(app_id, "seed", hashlib.sha256(module).digest(), len(module), chunk,
                          Limits(65536, 100000, 100)), 10)
    for offset in range(start, end, chunk):
        out += msg(DeployChunk(app_id, offset, module[offset:min(offset + chunk, end)]),
                   11 + offset // chunk)
    return out


def session_seeds(doc: dict) -> dict[str, bytes]:
    module = bytes.fromhex(doc["module"])
    seeds = {}
    for v in doc["valid"]:
        tag = v["message"]
        data = bytes.fromhex(v["hex"])
        if tag in ("Welcome", "EnrollChallenge", "EnrollReject"):
            seeds[f"valid-{v['name']}"] = header() + data
        elif tag in ("HeartbeatAck", "DeviceInfoRequest", "DeployBegin", "DeployChunk",
                     "StartApp", "StopApp", "Error"):
            seeds[f"valid-{v['name']}"] = header() + welcome() + data
    for v in doc["invalid"]:
        if v["receiver"] != "device":
            continue
        before = welcome() if v["state"] == "established" else b""
        seeds[f"invalid-{v['name']}"] = header() + before + bytes.fromhex(v["hex"])

    nonce = bytes.fromhex(doc["enroll_nonce"])
    seeds["enroll"] = header() + msg(EnrollChallenge(nonce), 0) + msg(
        Welcome(DEVICE_ID, 1000, 1024, True), 1)
    seeds["enroll-reject-then-welcome"] = header() + msg(
        EnrollReject(ErrorCode.PAIRING_DISABLED, "no pairing"), 0) + welcome()
    seeds["revoked"] = header() + welcome() + msg(Error(ErrorCode.REVOKED, "revoked"), 0)
    install = welcome() + deployment(module, "app", 16)  # 5 frames
    # The device reads at most 8 frames per poll and starts a queued run at the end of the
    # poll: what comes after the 8th frame is read during the run (the service hook).
    acks = msg(HeartbeatAck(), 40)
    # A zero-length frame: the device sends Error(MALFORMED), drops the link and reconnects.
    drop = b"\0\0\0\0"
    seeds["deploy-run"] = header(run_ms=3) + install + msg(StartApp("app", 7, "main", ()), 20)
    seeds["deploy-run-args"] = header(flags=0x01) + install + msg(
        StartApp("app", 8, "main", (1, -2, 2**64 - 1, 0.5, float("inf"))), 20)
    seeds["stop-during-run"] = header(run_ms=200, step_ms=1) + install + msg(
        StartApp("app", 9, "main", ()), 20) + 2 * acks + msg(StopApp("app", True), 21) + acks
    seeds["deploy-during-run"] = header(run_ms=100, step_ms=1) + install + msg(
        StartApp("app", 9, "main", ()), 20) + 2 * acks + deployment(module, "app", 37, upto=0) + (
        deployment(module[:20], "small", 10)) + msg(StopApp("app", False), 21) + acks
    seeds["replace-pending-validation"] = header(run_ms=100, step_ms=1) + install + msg(
        StartApp("app", 9, "main", ()), 20) + 2 * acks + deployment(module[:20], "small", 10) + (
        deployment(module[:30], "other", 10, upto=10)) + acks
    seeds["queue-stop"] = header(run_ms=50) + install + msg(StartApp("app", 1, "main", ()), 20) + (
        deployment(module, "other", 37, upto=0)) + msg(StartApp("other", 2, "main", ()), 30) + (
        msg(StopApp("other", False), 31)) + msg(DeviceInfoRequest(), 32)
    seeds["result-after-reconnect"] = header(run_ms=30, step_ms=1) + install + msg(
        StartApp("app", 5, "main", ()), 20) + 2 * acks + drop + welcome()
    seeds["deploy-resume"] = header() + welcome() + deployment(module, "app", 8, upto=16) + (
        drop + welcome() + deployment(module, "app", 8, start=16))
    seeds["deploy-bad-digest"] = header() + welcome() + deployment(module, "app", 37, upto=0) + (
        msg(DeployChunk("app", 0, module[:-1] + b"\0")))
    seeds["deploy-split-reads"] = header(read_cap=3) + install + msg(HeartbeatAck(), 30)
    seeds["dead-link"] = header(step_ms=250, flags=0x08) + welcome(100) + msg(HeartbeatAck(), 5)
    seeds["silent"] = header(shape=0x81) + welcome(100)
    seeds["broken-writes"] = header(flags=0x40 | 0x80, run_ms=20) + install + msg(
        StartApp("app", 3, "main", ()), 20)
    return seeds


def blob(entries: list[tuple[int, bytes]], total: int | None = None) -> bytes:
    """A blob of raw entries (firmware/app/blob.h layout), digest right."""
    body = b"".join(struct.pack("<HH", kind, len(value)) + value for kind, value in entries)
    size = 12 + len(body) + 32 if total is None else total
    head = b"WBLB" + struct.pack("<HHI", 1, 0, size) + body
    return head + hashlib.sha256(head).digest()


def blob_seeds() -> dict[str, bytes]:
    ca = FleetCA.create("fuzz seed CA")
    device = ca.issue_device("fuzz-device")
    seed = bytes(range(32))
    minimal = [(1, b"k"), (2, b"c"), (3, b"a"), (4, seed), (5, b"d"), (6, b"g")]
    return {
        "build-blob": build_blob(device, "fuzz-device", "gateway.test", seed=seed),
        "build-blob-config": build_blob(device, "dev", "gw", seed=seed, config={
            "max_frame_size": 4096, "max_module_size": 1024, "window": 4, "max_apps": 2,
            "backoff_initial_ms": 100, "backoff_max_ms": 1000, "reject_backoff_ms": 5000}),
        "minimal": blob(minimal),
        "unknown-entry": blob([*minimal, (99, b"later layouts"), (7, struct.pack("<HI", 9, 1))]),
        "duplicate-entry": blob([*minimal, (5, b"again")]),
        "missing-entry": blob(minimal[:-1]),
        "long-names": blob([*minimal[:4], (5, b"n" * 64), (6, b"s" * 253)]),
    }


def main(out: Path) -> None:
    doc = vectors.load()
    for harness, seeds in (("codec", codec_seeds(doc)), ("session", session_seeds(doc)),
                           ("blob", blob_seeds())):
        directory = out / harness
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        print(f"seeds: {len(seeds)} {harness} inputs in {directory}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: seeds.py OUT_DIR")
    main(Path(sys.argv[1]))
