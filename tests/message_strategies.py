"""Hypothesis strategies for every protocol message, built from the field kinds, so a message
added to the catalogue is generated (and fuzzed) without touching the tests."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from wasmbed_hil.protocol.fields import (
    Bool,
    Bytes,
    Enum,
    Kind,
    ListOf,
    Number,
    Optional,
    Struct,
    Text,
    UInt,
    kinds,
)
from wasmbed_hil.protocol.messages import Message

MAX_BLOB = 600  # keeps examples small; the size limits themselves are tested elsewhere


def _utf8_prefix(text: str, max_bytes: int) -> str:
    while len(text.encode("utf-8")) > max_bytes:
        text = text[:-1]
    return text


def strategy_for(kind: Kind) -> st.SearchStrategy[Any]:
    """Values a field of this kind may hold, edges included."""
    if isinstance(kind, UInt):
        return st.one_of(st.integers(0, kind.max), st.sampled_from([0, kind.max]))
    if isinstance(kind, Enum):
        return st.sampled_from(list(kind.enum))
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, Bytes):
        if kind.exact is not None:
            return st.binary(min_size=kind.exact, max_size=kind.exact)
        return st.binary(max_size=min(kind.max_len, MAX_BLOB))
    if isinstance(kind, Text):
        return (st.text(max_size=kind.max_len).map(lambda t: _utf8_prefix(t, kind.max_len))
                .filter(lambda t: len(t.encode("utf-8")) >= kind.min_len))
    if isinstance(kind, Number):
        return st.one_of(st.integers(-(1 << 63), (1 << 64) - 1),
                         st.floats(allow_nan=True, allow_infinity=True),
                         st.sampled_from([0, -1, (1 << 64) - 1, -(1 << 63), -0.0, math.inf]))
    if isinstance(kind, Optional):
        return st.one_of(st.none(), strategy_for(kind.inner))
    if isinstance(kind, ListOf):
        return st.lists(strategy_for(kind.inner), max_size=min(kind.max_items, 6)).map(tuple)
    if isinstance(kind, Struct):
        return st.builds(kind.cls, **{n: strategy_for(k) for n, k in kinds(kind.cls)})
    raise TypeError(f"no strategy for {type(kind).__name__}")


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, **{n: strategy_for(k) for n, k in kinds(cls)})
