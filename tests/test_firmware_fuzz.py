"""The firmware's fuzz harnesses (firmware/fuzz, libFuzzer with ASan and UBSan).

- The seed generator (firmware/fuzz/seeds.py) turns every vector of vectors.json into a codec
  seed and every device-side vector into a session seed (no clang needed).
- `make -C firmware/fuzz regress` builds the three harnesses and replays the committed
  regression inputs (firmware/fuzz/regressions/<harness>/) and the seeds: no finding.
- Each regression input still does what made it a finding, and the fixed firmware handles it.

Skipped with the reason when no clang with libFuzzer is installed (CI installs clang-14 and
libclang-rt-14-dev: .ci/run).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.firmware import parse_blob
from wasmbed_hil.protocol import decode_envelope, vectors

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "firmware" / "fuzz"
BUILD = FUZZ / "build"
HARNESSES = ("codec", "session", "blob")

_spec = importlib.util.spec_from_file_location("fuzz_seeds", FUZZ / "seeds.py")
assert _spec is not None and _spec.loader is not None
seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeds)


def _make(*targets: str) -> subprocess.CompletedProcess[str]:
    """make in firmware/fuzz, one at a time across test workers (they share its build dir)."""
    BUILD.mkdir(exist_ok=True)
    with (BUILD / ".make.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(["make", "-C", str(FUZZ), *targets], capture_output=True,
                              text=True, timeout=900)


@pytest.fixture(scope="module")
def built() -> None:
    toolchain = _make("toolchain")
    if toolchain.returncode != 0:
        why = [line for line in toolchain.stderr.splitlines() if not line.startswith("make")]
        pytest.skip("no clang with libFuzzer: " + (why[0] if why else toolchain.stderr))
    result = _make("build", "build/seeds/.stamp")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


# ----------------------------------------------------------------------------- seeds

def test_every_vector_is_a_codec_seed() -> None:
    doc = vectors.load()
    codec = seeds.codec_seeds(doc)
    assert len(codec) == len(doc["valid"]) + len(doc["invalid"])
    for v in doc["valid"]:
        envelope = codec[f"valid-{v['name']}"]
        decoded = decode_envelope(envelope)
        assert (decoded.message_id, type(decoded.message).__name__) == (v["message_id"],
                                                                        v["message"])


def test_session_seeds_cover_the_device_side_vectors() -> None:
    doc = vectors.load()
    session = seeds.session_seeds(doc)
    device_invalid = {f"invalid-{v['name']}" for v in doc["invalid"] if v["receiver"] == "device"}
    assert device_invalid and device_invalid <= set(session)
    for name, data in session.items():
        assert len(data) > 5, name  # the harness's header, then the gateway's bytes
    # a scripted deployment carries the vectors' module in its chunks
    assert bytes.fromhex(doc["module"])[:16] in session["deploy-run"]


def test_blob_seeds_are_blobs_the_python_parser_reads() -> None:
    blobs = seeds.blob_seeds()
    parsed = parse_blob(blobs["build-blob"])
    assert parsed["name"] == "fuzz-device" and parsed["server_name"] == "gateway.test"
    assert parse_blob(blobs["minimal"])["seed"] == bytes(range(32))


# ----------------------------------------------------------------------------- the harnesses

def test_regression_inputs_and_seeds_replay_clean(built: Any) -> None:
    result = _make("regress")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "fuzz regressions: OK" in out
    assert "AddressSanitizer" not in out and "runtime error" not in out
    for harness in HARNESSES:
        found = re.search(rf"(\d+) files found in build/seeds/{harness}\b", out)
        assert found and int(found.group(1)) > 0, harness
    committed = len(list((FUZZ / "regressions" / "session").iterdir()))
    found = re.search(r"(\d+) files found in regressions/session\b", out)
    assert found and int(found.group(1)) == committed


def test_regression_inputs_belong_to_a_harness() -> None:
    for entry in (FUZZ / "regressions").iterdir():
        if entry.is_dir():
            assert entry.name in HARNESSES, entry
            assert all(f.is_file() and f.stat().st_size <= 16384 for f in entry.iterdir())


def test_replaced_validation_no_longer_fills_the_module_store(built: Any) -> None:
    """regressions/session/replaced-validation-orphans-slot: during a run, module M2 completes
    (validated after the run), DeployBegin M3 replaces it and completes, DeployBegin M4 comes.
    Before the fix M2's slot was held by nothing yet never reused: M4 got NO_SPACE "module store
    full" (the harness aborts on that). Now M4 takes M2's slot: DeployReady."""
    trace = subprocess.run(
        [str(BUILD / "fuzz_session"), str(FUZZ / "regressions" / "session"
                                          / "replaced-validation-orphans-slot")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "FUZZ_TRACE": "1"})
    assert trace.returncode == 0, trace.stderr[-4000:]
    # One execution's trace: libFuzzer runs an input a second time when the first run ended
    # with more mallocs than frees (its leak check), which printed the trace twice (8, not 4)
    # about one run in four. The harness's summary line ends each execution.
    first = trace.stderr.split(" bytes read, ", 1)[0]
    sent = re.findall(r"-> (\w+)", first)
    # M1 installed then started; during the run: M2, M3, M4 each answered with DeployReady
    assert sent.count("DeployReady") == 4, sent
    assert sent[-2:] == ["DeployReady", "ExecutionResult"], sent
    assert "Error" not in sent
