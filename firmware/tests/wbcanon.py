"""Canonical text form of a protocol message, the same as the C side's wb_msg_print(), and the
generator of the vectors file the C vectors test reads (no JSON parser in C).

    python firmware/tests/wbcanon.py OUT.txt     # writes the vectors in text form

Lines of OUT.txt:
    valid <name> <frame hex> <canonical form>
    invalid <name> <receiver> <state> <max_frame_size> <frame hex> <error code>
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wasmbed_hil.protocol import vectors  # noqa: E402
from wasmbed_hil.protocol.fields import (  # noqa: E402
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
from wasmbed_hil.protocol.messages import Message  # noqa: E402


def canon_value(value: Any, kind: Kind) -> str:
    if isinstance(kind, Optional):
        return "null" if value is None else canon_value(value, kind.inner)
    if isinstance(kind, Enum | UInt):
        return str(int(value))
    if isinstance(kind, Bool):
        return "true" if value else "false"
    if isinstance(kind, Text):
        return "t:" + value.encode("utf-8").hex()
    if isinstance(kind, Bytes):
        return "b:" + bytes(value).hex()
    if isinstance(kind, Struct):
        return "[" + ",".join(canon_value(getattr(value, n), k) for n, k in kinds(kind.cls)) + "]"
    if isinstance(kind, ListOf):
        return "[" + ",".join(canon_value(v, kind.inner) for v in value) + "]"
    if isinstance(kind, Number):
        if isinstance(value, float):
            if math.isnan(value):
                return "f:nan"
            return "f:" + struct.pack(">d", value).hex()
        return f"i:{int(value)}"
    raise TypeError(kind)


def canon(message_id: int, message: Message) -> str:
    fields = ",".join(canon_value(getattr(message, n), k) for n, k in kinds(type(message)))
    return f"{type(message).__name__} {message_id} [{fields}]"


def vectors_text() -> str:
    doc = vectors.load()
    lines = []
    for v in doc["valid"]:
        message = vectors.message_from_json(v["message"], v["decoded"])
        lines.append(f"valid {v['name']} {v['hex']} {canon(v['message_id'], message)}")
    for v in doc["invalid"]:
        lines.append(
            f"invalid {v['name']} {v['receiver']} {v['state']} {v['max_frame_size']} "
            f"{v['hex']} {v['error']['value']}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(vectors_text(), encoding="utf-8")
