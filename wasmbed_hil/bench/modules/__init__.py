"""The WebAssembly modules the tests deploy, kept as WAT source and built on demand.

Every ``*.wat`` file here is one module (its first comment says what it proves); `build`
compiles it to binary with ``wasmtime.wat2wasm``. `data_module` generates modules of any size
whose data must arrive intact for their ``checksum`` export to return `data_checksum`.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

import wasmtime

__all__ = ["UnknownModuleError", "build", "data_checksum", "data_module", "names"]

PAGE_SIZE = 65536


class UnknownModuleError(KeyError):
    """No module of that name exists in wasmbed_hil/bench/modules."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


def names() -> list[str]:
    """Names of the available modules (the stems of the .wat files), sorted."""
    root = resources.files(__name__)
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".wat"))


@functools.lru_cache(maxsize=64)
def build(name: str) -> bytes:
    """The binary of module `name`, compiled from ``{name}.wat`` (cached)."""
    available = names()
    if name not in available:
        raise UnknownModuleError(f"unknown module {name!r}; available: {', '.join(available)}")
    source = resources.files(__name__).joinpath(f"{name}.wat").read_text(encoding="utf-8")
    return bytes(wasmtime.wat2wasm(source))


def _data(size: int, seed: int) -> bytes:
    """`size` deterministic pseudo-random bytes derived from `seed` (SHAKE-256)."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return hashlib.shake_256(f"wasmbed-hil data_module seed={seed}".encode()).digest(size)


@functools.lru_cache(maxsize=4)
def data_module(size: int, seed: int = 0) -> bytes:
    """A module holding `size` pseudo-random bytes (from `seed`) in a data segment at address 0.

    Its export ``checksum() -> i32`` sums those bytes at run time (mod 2**32, as a signed i32);
    compare with `data_checksum`. Memory is sized to hold the data (at least one page): a
    module above 1 MiB of data needs ``RunLimits.memory_bytes`` raised accordingly, and summing
    costs about 14 fuel per byte (1 MiB: ~14.7 M of the default 50 M).
    """
    data = _data(size, seed)
    pages = max(1, -(-size // PAGE_SIZE))
    escaped = "\\" + data.hex("\\") if data else ""
    wat = f"""(module
  (memory (export "memory") {pages})
  (data (i32.const 0) "{escaped}")
  (func (export "checksum") (result i32)
    (local $i i32) (local $sum i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const {size})))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sum)))
"""
    return bytes(wasmtime.wat2wasm(wat))


def data_checksum(size: int, seed: int = 0) -> int:
    """The sum mod 2**32 of the bytes `data_module(size, seed)` holds, computed in Python."""
    return sum(_data(size, seed)) % (1 << 32)
