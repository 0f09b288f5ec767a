"""The C firmware's view of the message catalogue, generated from messages.py and session.py.

Writes ``firmware/core/include/wb/msg_catalogue.h`` (committed, never edited by hand): the tag
enum, each message's direction and phase, the field tables the C codec (``codec.c``) walks,
the handshake transitions the C session (``session.c``) looks up and the size limits the C
structures are sized by. ``python -m wasmbed_hil.protocol.cgen`` rewrites it, ``--check``
exits 1 when it differs from what this module builds (the test suite runs the same check).

The header holds X-macro lists, so that codec.c and session.c, which include it through msg.h,
expand them into their own static tables; it defines no object itself. The C structures of
each message (``wb_msg_t`` in msg.h) stay hand-written: codec.c checks at compile time that
every field the tables name exists there with the C type its kind needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum

from .. import resources
from .fields import Bool, Bytes, Enum, Kind, ListOf, Number, Optional, Struct, Text, UInt, kinds
from .generated import generator_main
from .messages import (
    CATALOGUE,
    MAX_APPS,
    MAX_CHUNK,
    MAX_KEY,
    MAX_SIGNATURE,
    AppSummary,
    DeviceInfo,
    Direction,
    Limits,
    Message,
    Phase,
)
from .session import TRANSITIONS, Role, State
from .types import AppState, ErrorCode, Outcome

HEADER_PATH = resources.firmware_dir() / "core/include/wb/msg_catalogue.h"
GENERATOR = "python -m wasmbed_hil.protocol.cgen"

# Size limits of messages.py that the C structures and buffers are sized by (msg.h, device.c).
CONSTANTS = {
    "WB_MAX_APPS_WIRE": MAX_APPS,
    "WB_MAX_KEY": MAX_KEY,
    "WB_MAX_SIGNATURE": MAX_SIGNATURE,
    "WB_MAX_CHUNK": MAX_CHUNK,
}
DIRECTIONS = {
    Direction.DEVICE_TO_GATEWAY: "WB_DIR_D2G",
    Direction.GATEWAY_TO_DEVICE: "WB_DIR_G2D",
    Direction.BOTH: "WB_DIR_BOTH",
}
PHASES = {
    Phase.HANDSHAKE: "WB_PHASE_HANDSHAKE",
    Phase.ESTABLISHED: "WB_PHASE_ESTABLISHED",
    Phase.ANY: "WB_PHASE_ANY",
}
# The codec's kinds for enums and records (codec.c `enum kind`): a new one needs C code.
ENUM_KINDS: dict[type[IntEnum], str] = {
    ErrorCode: "ERRCODE", Outcome: "OUTCOME", AppState: "APPSTATE"}
RECORD_KINDS: dict[type, str] = {DeviceInfo: "INFO", Limits: "LIMITS"}
LIST_KINDS: dict[type, str] = {AppSummary: "APPS"}
RECORDS = (DeviceInfo, Limits, AppSummary)


def snake(name: str) -> str:
    """`EnrollProof` -> `enroll_proof`."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def tag_name(cls: type[Message]) -> str:
    return "WB_TAG_" + snake(cls.__name__).upper()


def c_kind(kind: Kind) -> tuple[str, int, int]:
    """(codec kind, min, max) of a field: min/max are string sizes in bytes, list lengths, or
    the exact length of a fixed-size byte string; 0, 0 where the kind bounds the value."""
    if isinstance(kind, UInt):
        bits = kind.max.bit_length()
        if bits not in (16, 32, 64):
            raise TypeError(f"no C codec kind for a {bits}-bit unsigned integer")
        return f"U{bits}", 0, 0
    if isinstance(kind, Bool):
        return "BOOL", 0, 0
    if isinstance(kind, Text):
        return "TEXT", kind.min_len, kind.max_len
    if isinstance(kind, Bytes):
        if kind.exact is not None:
            return "FIXED", kind.exact, kind.exact
        return "BYTES", 0, kind.max_len
    if isinstance(kind, Optional) and isinstance(kind.inner, Bytes) and kind.inner.exact:
        return "OPT_FIXED", kind.inner.exact, kind.inner.exact
    if isinstance(kind, Enum) and kind.enum in ENUM_KINDS:
        return ENUM_KINDS[kind.enum], 0, 0
    if isinstance(kind, Struct) and kind.cls in RECORD_KINDS:
        return RECORD_KINDS[kind.cls], 0, 0
    if isinstance(kind, ListOf):
        if isinstance(kind.inner, Struct) and kind.inner.cls in LIST_KINDS:
            return LIST_KINDS[kind.inner.cls], 0, kind.max_items
        if isinstance(kind.inner, Number):
            return "VALUES", 0, kind.max_items
    raise TypeError(f"no C codec kind for {kind.cddl!r}: extend codec.c and cgen.c_kind()")


def _enum_count(enum: type[IntEnum]) -> int:
    """Members of an enum numbered 0..n-1 (the codec checks `value < count`)."""
    values = sorted(int(m) for m in enum)
    if values != list(range(len(values))):
        raise ValueError(f"{enum.__name__} is not numbered 0..n-1: the C codec assumes it")
    return len(values)


def _macro(name: str, rows: list[str]) -> list[str]:
    """`#define name(X) \\` and one row a line; an empty list defines an empty macro."""
    if not rows:
        return [f"#define {name}(X)"]
    out = [f"#define {name}(X) \\"]
    out += [f"    {row} \\" for row in rows[:-1]]
    out.append(f"    {rows[-1]}")
    return out


def _field_rows(owner: str, cls: type) -> list[str]:
    rows = []
    for name, kind in kinds(cls):
        k, lo, hi = c_kind(kind)
        rows.append(f"X({owner}, {k}, {name}, {lo}, {hi})")
    return rows


def render() -> str:
    """The whole header."""
    messages = sorted(CATALOGUE.values(), key=lambda c: c.TAG)
    out = [
        f"/* GENERATED by `{GENERATOR}` from wasmbed_hil/protocol/messages.py and",
        " * session.py: do not edit. Change the Python catalogue, then run the generator;",
        " * tests/test_firmware_core.py fails while this file and the generator differ.",
        " *",
        " * The message catalogue for the C codec (codec.c) and session (session.c), included",
        " * by msg.h. The X-macro lists define nothing: the .c files expand them into tables. */",
        "#ifndef WB_MSG_CATALOGUE_H",
        "#define WB_MSG_CATALOGUE_H",
        "",
        "/* Message tags. */",
        "enum {",
        *[f"    {tag_name(cls)} = {cls.TAG}," for cls in messages],
        "};",
        "",
        "/* Size limits of the protocol's fields. */",
        *[f"#define {name} {value}" for name, value in CONSTANTS.items()],
        "",
        "/* Direction of a message as bits (0: unknown tag), and its phase (0: unknown tag):",
        " * HANDSHAKE messages move the session as WB_HANDSHAKE says, ESTABLISHED ones travel only",
        " * once established and keep it so, ANY (Error) travels in every state but closed and",
        " * closes the session. */",
        "#define WB_DIR_D2G 1",
        "#define WB_DIR_G2D 2",
        "#define WB_DIR_BOTH (WB_DIR_D2G | WB_DIR_G2D)",
        "#define WB_PHASE_HANDSHAKE 1",
        "#define WB_PHASE_ESTABLISHED 2",
        "#define WB_PHASE_ANY 3",
        "",
        "/* X(tag, \"Name\", member, direction, phase, first, n): every message by tag. member is",
        " * its struct in wb_msg_t.u; its fields are rows first .. first + n - 1 of",
        " * WB_MESSAGE_FIELDS. */",
    ]
    rows, first = [], 0
    for cls in messages:
        n = len(kinds(cls))
        rows.append(f'X({tag_name(cls)}, "{cls.__name__}", {snake(cls.__name__)}, '
                    f"{DIRECTIONS[cls.DIRECTION]}, {PHASES[cls.PHASE]}, {first}, {n})")
        first += n
    out += _macro("WB_MESSAGES", rows)
    out += [
        "",
        "/* X(member, kind, field, min, max): the fields of every message in wire order, the",
        " * messages in tag order. kind is the codec's (enum kind in codec.c); min and max bound",
        " * string sizes in bytes and list lengths, min is the length of a FIXED string; 0, 0",
        " * where the kind itself bounds the value. */",
    ]
    out += _macro("WB_MESSAGE_FIELDS",
                  [row for cls in messages for row in _field_rows(snake(cls.__name__), cls)])
    for record in RECORDS:
        ctype = f"wb_{snake(record.__name__)}_t"
        out += ["", f"/* X({ctype}, kind, field, min, max): the fields of {record.__name__}. */"]
        out += _macro(f"WB_{snake(record.__name__).upper()}_FIELDS", _field_rows(ctype, record))
    out += [
        "",
        "/* Enum values the codec accepts: ErrorCode (a list), Outcome and AppState (0 .. n-1). */",
    ]
    by_hundred: dict[int, list[str]] = {}
    for code in ErrorCode:
        by_hundred.setdefault(int(code) // 100, []).append(f"X({int(code)})")
    out += _macro("WB_ERROR_CODES", [" ".join(row) for row in by_hundred.values()])
    out += [
        f"#define WB_OUTCOME_COUNT {_enum_count(Outcome)}",
        f"#define WB_APP_STATE_COUNT {_enum_count(AppState)}",
        "",
        "/* X(state, \"name\"): the session states (wb_state_t in session.h) and their names. */",
    ]
    out += _macro("WB_STATES", [f'X(WB_ST_{state.name}, "{state.value}")' for state in State])
    out += [
        "",
        "/* X(role, state, tag, next): the transitions of the HANDSHAKE messages, per role, for",
        " * what the role sends and what it receives (the tag's direction says which). No",
        " * transition leads to WB_ST_IDLE: session.c uses it for \"not allowed\". */",
    ]
    rows = []
    for role in Role:
        for (state, cls), after in TRANSITIONS[role].items():
            if cls.PHASE is not Phase.HANDSHAKE:
                continue
            if after is State.IDLE:
                raise ValueError(f"{role.value}: {cls.__name__} leads to IDLE, which C cannot say")
            rows.append(f"X(WB_ROLE_{role.name}, WB_ST_{state.name}, {tag_name(cls)}, "
                        f"WB_ST_{after.name})")
    out += _macro("WB_HANDSHAKE", rows)
    out += ["", "#endif", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    return generator_main(__doc__.splitlines()[0], HEADER_PATH, render, argv, out)


if __name__ == "__main__":
    sys.exit(main())
