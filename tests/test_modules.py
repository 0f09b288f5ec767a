"""Tests for wasmbed_hil.bench.modules: WAT sources, building, and the generated data modules."""

from __future__ import annotations

from importlib import resources

import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.virtual.runtime import ModuleError, RunLimits, WasmRuntime
from wasmbed_hil.protocol.types import Outcome

pytestmark = pytest.mark.filterwarnings("error")

REQUIRED = {
    "add",
    "fib",
    "hello",
    "trap",
    "spin",
    "oom",
    "oom_graceful",
    "big_memory",
    "stack",
    "imports_unknown",
}
CHUNK = 4096
PAGE = 65536


@pytest.fixture(scope="module")
def rt() -> WasmRuntime:
    return WasmRuntime()


def test_names_lists_every_required_module() -> None:
    available = modules.names()
    assert set(available) >= REQUIRED
    assert available == sorted(available)


def test_sources_are_text_with_a_comment_and_no_binaries_are_committed() -> None:
    root = resources.files(modules.__name__)
    files = [p.name for p in root.iterdir() if p.is_file()]
    assert not [f for f in files if f.endswith(".wasm")]
    for name in modules.names():
        source = root.joinpath(f"{name}.wat").read_text(encoding="utf-8")
        assert source.startswith(f";; {name}:"), f"{name}.wat must start with what it proves"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_module_builds_to_a_valid_binary(rt: WasmRuntime, name: str) -> None:
    wasm = modules.build(name)
    assert isinstance(wasm, bytes)
    assert wasm.startswith(b"\0asm\x01\0\0\0")
    rt.validate(wasm)
    assert modules.build(name) is wasm  # cached


@pytest.mark.parametrize("name", ["nope", "", "../runtime", "add.wat", "ADD"])
def test_unknown_names_are_a_clear_key_error(name: str) -> None:
    with pytest.raises(KeyError) as info:
        modules.build(name)
    assert isinstance(info.value, modules.UnknownModuleError)
    message = str(info.value)
    assert repr(name) in message
    assert "add" in message and "fib" in message  # lists what is available


def test_modules_have_their_documented_entries(rt: WasmRuntime) -> None:
    entries = {
        "add": {"main", "add_i64", "add_f32", "add_f64", "swap"},
        "fib": {"fib", "fib_i64"},
        "hello": {"main", "echo"},
        "trap": {"main", "divzero", "oob"},
        "spin": {"main", "ticker"},
        "oom": {"main"},
        "oom_graceful": {"main"},
        "big_memory": {"main"},
        "stack": {"main"},
        "imports_unknown": {"main"},
    }
    for name, expected in entries.items():
        assert expected <= set(rt.compile(modules.build(name)).functions), name


def test_data_module_is_deterministic_and_depends_on_the_seed() -> None:
    assert modules.data_module(1000, 7) == modules.data_module(1000, 7)
    assert modules.data_module(1000, 7) != modules.data_module(1000, 8)
    assert modules.data_checksum(1000, 7) == modules.data_checksum(1000, 7)
    assert modules.data_checksum(1000, 7) != modules.data_checksum(1000, 8)
    assert modules.data_checksum(0) == 0


@pytest.mark.parametrize(("size", "seed"), [(0, 0), (1, 0), (PAGE, 3), (PAGE + 17, 1)])
def test_data_module_checksum_matches_python(rt: WasmRuntime, size: int, seed: int) -> None:
    wasm = modules.data_module(size, seed)
    assert len(wasm) > size
    result = rt.run(wasm, "checksum")
    assert result.outcome is Outcome.RETURNED
    assert result.values[0] % 2**32 == modules.data_checksum(size, seed)


def test_a_large_module_arrives_intact_in_chunks(rt: WasmRuntime) -> None:
    size = 1 << 20
    wasm = modules.data_module(size, seed=42)
    chunks = [wasm[i : i + CHUNK] for i in range(0, len(wasm), CHUNK)]
    assert len(chunks) > 256
    received = b"".join(chunks)
    result = rt.run(received, "checksum")
    assert result.outcome is Outcome.RETURNED
    assert result.values[0] % 2**32 == modules.data_checksum(size, seed=42)
    with pytest.raises(ModuleError):
        rt.validate(b"".join(chunks[:10] + chunks[11:]))  # a lost chunk is noticed


def test_data_above_the_default_memory_limit_needs_a_larger_limit(rt: WasmRuntime) -> None:
    size = (1 << 20) + 1
    wasm = modules.data_module(size)
    assert rt.run(wasm, "checksum").outcome is Outcome.OUT_OF_MEMORY
    result = rt.run(wasm, "checksum", limits=RunLimits(memory_bytes=2 << 20))
    assert result.outcome is Outcome.RETURNED
    assert result.values[0] % 2**32 == modules.data_checksum(size)


def test_data_module_rejects_a_negative_size() -> None:
    with pytest.raises(ValueError):
        modules.data_module(-1)
    with pytest.raises(ValueError):
        modules.data_checksum(-1)
