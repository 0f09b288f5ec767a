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
