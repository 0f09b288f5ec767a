"""The fault kinds' registry (bench.faultkinds): what each needs, why a combination is
skipped, seeded choices, and healing only what was struck."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from wasmbed_hil.bench.faultkinds import FAULT_KINDS, FaultContext, healed, strike


class FakeFaults:
    def __init__(self, supported: set[str]) -> None:
        self.supported = frozenset(supported)
        self.calls: list[tuple[str, Any]] = []

    def drop_link_after_chunks(self, chunks: int | None) -> None:
        self.calls.append(("drop_link_after_chunks", chunks))

    def silence(self, silent: bool = True) -> None:
        self.calls.append(("silence", silent))


def fake_device(backend: str, supported: set[str]) -> Any:
    return SimpleNamespace(name="dut", backend=backend, faults=FakeFaults(supported))


def test_every_kind_is_described_and_registered_under_its_name():
    assert len(FAULT_KINDS) >= 10
    for name, kind in FAULT_KINDS.items():
        assert kind.name == name and kind.summary
        assert not (kind.needs_platform and kind.requires)


def test_a_combination_that_cannot_be_shown_says_why():
    firmware = fake_device("qemu", {"silence", "cut_link", "impair"})
    assert "offers no drop_link_after_chunks" in FAULT_KINDS["drop_after_chunk"].unsupported(
        firmware, "deploy_large", 10)
    virtual = fake_device("virtual", {"drop_link_after_chunks", "silence"})
    assert "deploy_small moves 1 chunk" in FAULT_KINDS["drop_after_chunk"].unsupported(
        virtual, "deploy_small", 1)
    assert FAULT_KINDS["drop_after_chunk"].unsupported(virtual, "deploy_large", 10) is None
    assert "keeps modules in RAM" in FAULT_KINDS["reboot"].unsupported(firmware, "run", 1)
    assert FAULT_KINDS["reboot"].unsupported(firmware, "deploy_large", 10) is None
    assert "proves nothing" in FAULT_KINDS["corrupt_proof"].unsupported(
        fake_device("virtual", {"corrupt_proof"}), "heartbeat", 0)
    assert FAULT_KINDS["api_outage"].unsupported(firmware, "run", 1) is None


def test_the_chunk_comes_from_the_seed():
    def chosen(seed: int) -> int:
        device = fake_device("virtual", {"drop_link_after_chunks"})
        ctx = FaultContext(None, device, random.Random(seed), chunks=10)  # type: ignore[arg-type]
        FAULT_KINDS["drop_after_chunk"].arm(ctx)
        assert device.faults.calls == [("drop_link_after_chunks", ctx.choices["chunk"])]
        return ctx.choices["chunk"]

    picks = [chosen(seed) for seed in range(20)]
    assert all(1 <= p <= 9 for p in picks)
    assert picks == [chosen(seed) for seed in range(20)]  # replayed, the same choices
    assert len(set(picks)) > 1


def test_healed_heals_a_struck_fault_also_when_the_block_fails():
    kind = FAULT_KINDS["silence"]
    device = fake_device("virtual", {"silence"})
    ctx = FaultContext(None, device, random.Random(0))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="boom"), healed(kind, ctx):
        strike(kind, ctx)
        raise RuntimeError("boom")
    assert device.faults.calls == [("silence", True), ("silence", False)]
    with healed(kind, ctx):  # nothing struck: nothing to heal
        pass
    assert len(device.faults.calls) == 2


SEED_PROBE = '''
import os
from pathlib import Path

def test_a(hil_fault_seed, fault_rng):
    Path(os.environ["SEEDS"], "a").write_text(f"{hil_fault_seed} {fault_rng.random()}")

def test_b(hil_fault_seed):
    Path(os.environ["SEEDS"], "b").write_text(str(hil_fault_seed))
'''


def _run_probe(tmp_path, *args: str) -> tuple[str, str, str]:
    import os
    import subprocess
    import sys

    (tmp_path / "test_probe.py").write_text(SEED_PROBE)
    seeds = tmp_path / "seeds"
    seeds.mkdir(exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(tmp_path / "test_probe.py"), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "SEEDS": str(seeds)})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, (seeds / "a").read_text(), (seeds / "b").read_text()


def test_the_run_prints_its_seed_and_every_worker_uses_it(tmp_path):
    header, a, b = _run_probe(tmp_path, "-n", "2", "-v")
    seed = a.split()[0]
    assert f"fault seed={seed} (replay with --hil-fault-seed={seed})" in header
    assert b == seed  # both workers: the controller's seed
    # Replayed, without workers this time: the same seed and the same choices.
    _, a2, _ = _run_probe(tmp_path, "-p", "no:xdist", f"--hil-fault-seed={seed}")
    assert a2 == a
