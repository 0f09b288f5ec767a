"""Field kinds of the message catalogue: each one encodes to plain CBOR and validates on decode.

A decoder never trusts a peer: every value is checked for its CBOR type (a bool is not an
integer), its range and its size, and a failure names the path of the offending field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from enum import IntEnum
from typing import Any


class FieldError(ValueError):
    """A decoded value that does not fit its field; `path` names the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Kind:
    """How one field is represented on the wire."""

    cddl: str = "any"

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, value: Any, path: str) -> Any:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def show_int(value: int) -> str:
    """An integer for an error message; a huge one (a CBOR bignum) by its size only, since
    formatting it could itself fail (Python refuses to print ints over 4300 digits)."""
    return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"


class UInt(Kind):
    def __init__(self, bits: int = 64) -> None:
        self.max = (1 << bits) - 1
        self.cddl = "uint" if bits == 64 else f"uint .size {bits // 8}"

    def decode(self, value: Any, path: str) -> int:
        # A plain int (what a CBOR decoder returns) is checked without a call: the hot path.
        if type(value) is not int and not _is_int(value):
            raise FieldError(path, f"expected unsigned integer, got {type(value).__name__}")
        if not 0 <= value <= self.max:
            raise FieldError(path, f"{show_int(value)} out of range 0..{self.max}")
        return value if type(value) is int else int(value)


class Enum(Kind):
    def __init__(self, enum: type[IntEnum]) -> None:
        self.enum = enum
        self.cddl = enum.__name__.lower()

    def encode(self, value: Any) -> int:
        return int(value)

    def decode(self, value: Any, path: str) -> IntEnum:
        if not _is_int(value):
            got = type(value).__name__
            raise FieldError(path, f"expected {self.enum.__name__} code, got {got}")
        try:
            return self.enum(value)
        except ValueError:
            name = self.enum.__name__
            raise FieldError(path, f"{show_int(value)} is not a {name} code") from None


class Bool(Kind):
    cddl = "bool"

    def decode(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected bool, got {type(value).__name__}")
        return value


class Bytes(Kind):
    def __init__(self, max_len: int, exact: int | None = None) -> None:
        self.max_len = max_len
        self.exact = exact
        self.cddl = f"bstr .size {exact}" if exact is not None else f"bstr .size (0..{max_len})"

    def encode(self, value: Any) -> bytes:
        return bytes(value)

    def decode(self, value: Any, path: str) -> bytes:
        if not isinstance(value, bytes):
            raise FieldError(path, f"expected byte string, got {type(value).__name__}")
        if self.exact is not None and len(value) != self.exact:
            raise FieldError(path, f"expected {self.exact} bytes, got {len(value)}")
        if len(value) > self.max_len:
            raise FieldError(path, f"{len(value)} bytes exceeds {self.max_len}")
        return value


class Text(Kind):
    def __init__(self, max_len: int, min_len: int = 0) -> None:
        self.max_len = max_len
        self.min_len = min_len
        self.cddl = f"tstr .size ({min_len}..{max_len})"

    def decode(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise FieldError(path, f"expected text string, got {type(value).__name__}")
        size = len(value.encode("utf-8", "surrogatepass"))
        if not self.min_len <= size <= self.max_len:
            raise FieldError(path, f"{size} bytes of text, allowed {self.min_len}..{self.max_len}")
        return value


class Number(Kind):
    """A WebAssembly value: an integer (i32/i64, signed) or a finite or non-finite float."""

    cddl = "int / float"

    def decode(self, value: Any, path: str) -> int | float:
        if _is_int(value):
            if not -(1 << 63) <= value < (1 << 64):
                raise FieldError(path, f"{show_int(value)} does not fit 64 bits")
            return int(value)
        if isinstance(value, float):
            return value
        raise FieldError(path, f"expected number, got {type(value).__name__}")

    def encode(self, value: Any) -> int | float:
        if isinstance(value, float) and math.isnan(value):
            return math.nan
        return value


class Optional(Kind):
    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.cddl = f"{inner.cddl} / null"

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.decode(value, path)


class ListOf(Kind):
    def __init__(self, inner: Kind, max_items: int) -> None:
        self.inner = inner
        self.max_items = max_items
        self.cddl = f"[* {inner.cddl}]"

    def encode(self, value: Any) -> list[Any]:
        return [self.inner.encode(v) for v in value]

    def decode(self, value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise FieldError(path, f"expected array, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise FieldError(path, f"{len(value)} items exceeds {self.max_items}")
        if not value:  # (a heartbeat of a device running nothing)
            return ()
        inner = self.inner
        try:  # the hot path formats no item path (see decode_fields)
            return tuple([inner.decode(v, "") for v in value])
        except FieldError:
            for i, v in enumerate(value):
                inner.decode(v, f"{path}[{i}]")  # fails again, naming the item
            raise


class Struct(Kind):
    """A nested record (a dataclass whose fields carry a `kind` in their metadata): a CBOR array."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.cddl = _snake(cls.__name__)

    def encode(self, value: Any) -> list[Any]:
        return encode_fields(value)

    def decode(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            got = type(value).__name__
            raise FieldError(path, f"expected {self.cls.__name__} array, got {got}")
        return decode_fields(self.cls, value, path)


def field(kind: Kind, **kwargs: Any) -> Any:
    """A dataclass field carrying its wire kind."""
    return dataclasses.field(metadata={"kind": kind}, **kwargs)


@functools.cache
def kinds(cls: type) -> tuple[tuple[str, Kind], ...]:
    """The (name, kind) pairs of a record, computed once per class (a hot path)."""
    return tuple((f.name, f.metadata["kind"]) for f in dataclasses.fields(cls))


def encode_fields(obj: Any) -> list[Any]:
    return [kind.encode(getattr(obj, name)) for name, kind in kinds(type(obj))]


def decode_fields(cls: type, values: Sequence[Any], path: str) -> Any:
    spec = kinds(cls)
    if len(values) != len(spec):
        raise FieldError(path, f"{cls.__name__} has {len(spec)} fields, got {len(values)}")
    args: list[Any] = []
    append = args.append
    try:
        # The hot path (every message a gateway receives): no field path is formatted, the
        # values go to the constructor by position (kinds() is in field order), and a plain
        # int within a UInt field's range is taken without a call (a heartbeat's two).
        for (_, kind), v in zip(spec, values, strict=True):
            if type(kind) is UInt and type(v) is int and 0 <= v <= kind.max:
                append(v)
            else:
                append(kind.decode(v, ""))
    except FieldError:
        # The cold path: decode again with each field's path, which fails the same way
        # (decoding is deterministic) and names the field, e.g. Heartbeat.apps[0].state.
        for (name, kind), v in zip(spec, values, strict=True):
            kind.decode(v, f"{path}.{name}")
        raise
    return cls(*args)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
