"""protocol.cddl and the Python catalogue (messages.py) describe the same wire format.

The CDDL is read and applied by an independent implementation of RFC 8610, cddl-verifier (a
parser and validator that shares no code with this project), never by a reader of our own:

- every valid vector of vectors.json is an Envelope, its message one of its direction's group;
- every invalid vector is classified by what refuses it: the frame's length prefix
  ("framing", outside the CDDL), Python's decode_envelope ("codec": the CDDL refuses it too),
  the direction check ("direction": the Envelope is well-typed, the receiver's direction group
  refuses it) or the session ("session": state, the 1024 minimum, window 0; the CDDL cannot
  say these and accepts them);
- field by field, values at the edges of each field's kind are accepted and values just past
  them refused, by Python and by the CDDL alike (types, ranges, sizes in bytes, enum members,
  list lengths, null, nested records, the envelope);
- the CDDL defines the same messages (names, tags, directions, field labels), records and enums
  as the catalogue, and nothing else.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cddl_verifier import SchemaError, Validator
from cddl_verifier._cddl import parse_cddl  # the validator's own parser (its internal API)

import wasmbed_hil.protocol as protocol
from wasmbed_hil.protocol import vectors
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
from wasmbed_hil.protocol.framing import HEADER
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    MAX_MESSAGE_ID,
    PROTOCOL_VERSION,
    Direction,
    Message,
    ProtocolError,
    decode_envelope,
)
from wasmbed_hil.protocol.session import Role
from wasmbed_hil.protocol.types import ErrorCode

CDDL_PATH = Path(protocol.__file__).with_name("protocol.cddl")
CDDL_TEXT = CDDL_PATH.read_text(encoding="utf-8")
DOC = vectors.load()
GROUPS = {"DeviceToGateway": Direction.DEVICE_TO_GATEWAY,
          "GatewayToDevice": Direction.GATEWAY_TO_DEVICE}
INBOUND_GROUP = {Role.GATEWAY: "DeviceToGateway", Role.DEVICE: "GatewayToDevice"}
OTHER_RULES = {"Envelope", "Message", *GROUPS, "WasmValue"}


@functools.cache
def validator(text: str = CDDL_TEXT) -> Validator:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a schema it can only partly check is a failure here
        return Validator(text)


def verdict(v: Validator, data: Any, root: str) -> str:
    """"" when `data` (CBOR bytes or a decoded value) is a `root`, else why not."""
    result = v.validate(data, root_type=root)
    return "" if result.valid else "; ".join(str(d) for d in result.diagnostics) or "invalid"


def message_bytes(payload: bytes) -> bytes:
    """The bytes of the message item of an envelope (after its head, version and id)."""
    stream = io.BytesIO(payload)
    stream.read(1)  # 0x83
    decoder = cbor2.CBORDecoder(stream)
    decoder.decode()
    decoder.decode()
    return payload[stream.tell():]


# ----------------------------------------------------------------------------- the vectors


@pytest.mark.parametrize("vector", DOC["valid"], ids=lambda v: v["name"])
def test_valid_vector_is_an_envelope_of_its_direction(vector: dict[str, Any]) -> None:
    v = validator()
    payload = bytes.fromhex(vector["hex"])[HEADER:]
    assert verdict(v, payload, "Envelope") == ""
    cls = next(c for c in CATALOGUE.values() if c.__name__ == vector["message"])
    body = message_bytes(payload)
    assert verdict(v, body, cls.__name__) == ""
    for group, direction in GROUPS.items():
        travels = cls.DIRECTION in (direction, Direction.BOTH)
        assert (verdict(v, body, group) == "") is travels, (group, cls.DIRECTION)


def classify(vector: dict[str, Any]) -> str:
    """What refuses an invalid vector: framing, codec, direction or session (module doc)."""
    data = bytes.fromhex(vector["hex"])
    length = int.from_bytes(data[:HEADER], "big")
    if length == 0 or length > vector["max_frame_size"]:
        return "framing"
    try:
        message = decode_envelope(data[HEADER:HEADER + length]).message
    except ProtocolError:
        return "codec"
    if not Role(vector["receiver"]).may_receive(type(message)):
        return "direction"
    return "session"


# What the CDDL cannot say: refused for the frame's length, or by the session's state and limits.
FRAMING = {"zero-length-frame", "frame-over-limit", "frame-length-max"}
SESSION_ONLY = {"heartbeat-before-hello", "proof-without-challenge", "hello-twice",
                "welcome-before-hello", "start-app-before-welcome", "welcome-twice",
                "hello-frame-limit-below-minimum", "hello-window-zero",
                "welcome-frame-limit-below-minimum"}


def test_invalid_vectors_are_classified() -> None:
    by_class: dict[str, set[str]] = {}
    for vector in DOC["invalid"]:
        by_class.setdefault(classify(vector), set()).add(vector["name"])
    assert by_class["framing"] == FRAMING
    assert by_class["session"] == SESSION_ONLY
    assert {n for n in by_class["direction"]} == {
        v["name"] for v in DOC["invalid"] if v["name"].startswith("wrong-direction-")}
    assert len(by_class["codec"]) == len(DOC["invalid"]) - len(FRAMING) - len(SESSION_ONLY) - 4


@pytest.mark.parametrize("vector", DOC["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_by_the_cddl_where_the_cddl_can_say(
        vector: dict[str, Any]) -> None:
    v = validator()
    data = bytes.fromhex(vector["hex"])
    payload = data[HEADER:]
    code = ErrorCode[vector["error"]["name"]]
    kind = classify(vector)
    if kind == "framing":  # the length prefix is at fault; the CDDL describes its payload
        assert code in (ErrorCode.MALFORMED, ErrorCode.FRAME_TOO_LARGE)
        return
    if kind == "codec":
        assert verdict(v, payload, "Envelope") != ""
        return
    assert verdict(v, payload, "Envelope") == ""  # well-typed whichever way it travels
    group = INBOUND_GROUP[Role(vector["receiver"])]
    if kind == "direction":
        assert code is ErrorCode.UNKNOWN_MESSAGE
        assert verdict(v, message_bytes(payload), group) != ""
    else:
        assert code in (ErrorCode.UNEXPECTED_MESSAGE, ErrorCode.MALFORMED)
        assert verdict(v, message_bytes(payload), group) == ""


# ----------------------------------------------------------------------------- edge cases

Case = tuple[str, Any, bool]  # (where, CBOR value, valid)


def sample(kind: Kind) -> Any:
    """A small valid CBOR value of a field of this kind."""
    if isinstance(kind, UInt | Number):
        return 0
    if isinstance(kind, Bool):
        return False
    if isinstance(kind, Text):
        return "a" * kind.min_len
    if isinstance(kind, Bytes):
        return bytes(kind.exact or 0)
    if isinstance(kind, Optional):
        return None
    if isinstance(kind, Enum):
        return int(next(iter(kind.enum)))
    if isinstance(kind, ListOf):
        return []
    if isinstance(kind, Struct):
        return [sample(k) for _, k in kinds(kind.cls)]
    raise TypeError(f"no edge cases for {type(kind).__name__}: extend sample() and cases()")


def cases(kind: Kind) -> Iterator[Case]:
    """Values a field of `kind` must accept and values just past its edges it must refuse."""
    if isinstance(kind, UInt):
        yield from (("", 0, True), ("", kind.max, True), ("", kind.max + 1, False),
                    ("", -1, False), ("", True, False), ("", 1.0, False), ("", "0", False))
    elif isinstance(kind, Bool):
        yield from (("", False, True), ("", True, True), ("", 0, False), ("", None, False))
    elif isinstance(kind, Text):
        top, low = kind.max_len, kind.min_len
        yield from (("", "a" * max(low, 1), True), ("", "a" * top, True),
                    ("", "\u00e9" * (top // 2), True), ("", "a" * (top + 1), False),
                    # more bytes than allowed in fewer characters than allowed: bytes count
                    ("", "\u00e9" * (top // 2 + 1), False), ("", b"a" * max(low, 1), False))
        if low:
            yield ("", "a" * (low - 1), False)
    elif isinstance(kind, Bytes):
        if kind.exact is not None:
            yield from (("", bytes(kind.exact), True), ("", bytes(kind.exact - 1), False),
                        ("", bytes(kind.exact + 1), False), ("", "a" * kind.exact, False))
        else:
            yield from (("", b"", True), ("", bytes(kind.max_len), True),
                        ("", bytes(kind.max_len + 1), False), ("", "", False))
    elif isinstance(kind, Optional):
        yield from (("", None, True), ("", cbor2.undefined, False))
        yield from cases(kind.inner)
    elif isinstance(kind, Enum):
        members = {int(m) for m in kind.enum}
        yield from (("", m, True) for m in sorted(members))
        outside = {m + d for m in members for d in (-1, 1)} - members
        yield from (("", m, False) for m in sorted(outside | {-1}))
        yield ("", "0", False)
    elif isinstance(kind, Number):
        good = [0, -1, (1 << 64) - 1, -(1 << 63), 0.5, -0.0, 5e-324, math.nan, math.inf,
                -math.inf]
        yield from (("", x, True) for x in good)
        yield from (("", x, False) for x in (1 << 64, -(1 << 63) - 1, "1", True, None, b""))
    elif isinstance(kind, ListOf):
        item = sample(kind.inner)
        yield from (("", [], True), ("", [item] * kind.max_items, True),
                    ("", [item] * (kind.max_items + 1), False), ("", {}, False))
        yield from ((f"[0]{where}", [value], ok) for where, value, ok in cases(kind.inner))
    elif isinstance(kind, Struct):
        base = sample(kind)
        yield from (("", base, True), ("", base[:-1], False), ("", [*base, 0], False),
                    ("", {}, False))
        for i, (name, sub) in enumerate(kinds(kind.cls)):
            for where, value, ok in cases(sub):
                yield (f".{name}{where}", [*base[:i], value, *base[i + 1:]], ok)
    else:
        raise TypeError(f"no edge cases for {type(kind).__name__}: extend sample() and cases()")


def message_sample(cls: type[Message]) -> list[Any]:
    return [cls.TAG, *(sample(k) for _, k in kinds(cls))]


@functools.cache
def envelope_cases() -> tuple[tuple[str, str, bytes, bool], ...]:
    """(where, rule, CBOR bytes, valid) for every edge of every field of every message (the
    message checked against its own rule) and of the envelope (against Envelope). Python's
    decoder is asked first, for the whole envelope: each verdict is checked there too."""
    out: list[tuple[str, str, Any, Any, Any, bool]] = []
    for cls in sorted(CATALOGUE.values(), key=lambda c: c.TAG):
        base, rule = message_sample(cls), cls.__name__
        out += [(rule, rule, PROTOCOL_VERSION, 1, base, True),
                (f"{rule} + 1 field", rule, PROTOCOL_VERSION, 1, [*base, 0], False)]
        for i, (name, kind) in enumerate(kinds(cls), start=1):
            for where, value, ok in cases(kind):
                body = [*base[:i], value, *base[i + 1:]]
                out.append((f"{rule}.{name}{where}", rule, PROTOCOL_VERSION, 1, body, ok))
    body = message_sample(protocol.HeartbeatAck)
    for version, ok in ((PROTOCOL_VERSION, True), (1, False), (-1, False), ("0", False)):
        out.append((f"Envelope.version={version!r}", "Envelope", version, 0, body, ok))
    for message_id, ok in ((0, True), (MAX_MESSAGE_ID, True), (MAX_MESSAGE_ID + 1, False),
                           (-1, False), (False, False), (1.0, False)):
        out.append((f"Envelope.message_id={message_id!r}", "Envelope", PROTOCOL_VERSION,
                    message_id, body, ok))
    result = []
    for where, rule, version, message_id, body, ok in out:
        payload = cbor2.dumps([version, message_id, body])
        try:
            decode_envelope(payload)
            python_ok = True
        except ProtocolError:
            python_ok = False
        assert python_ok is ok, f"{where}: Python's decoder disagrees with the edge case"
        result.append((where, rule, payload if rule == "Envelope" else cbor2.dumps(body), ok))
    return tuple(result)


def test_edge_cases_cover_every_field_both_ways() -> None:
    wheres = {where.split("=")[0] for where, _, _, _ in envelope_cases()}
    for cls in CATALOGUE.values():
        for name, _ in kinds(cls):
            field_cases = [ok for where, _, _, ok in envelope_cases()
                           if where.startswith(f"{cls.__name__}.{name}")]
            assert True in field_cases and False in field_cases, f"{cls.__name__}.{name}"
    assert {"Envelope.version", "Envelope.message_id", "Hello.info.window",
            "Heartbeat.apps[0].state", "DeployBegin.limits.fuel"} <= wheres


# ----------------------------------------------------------------------------- the comparison


def _labels(rule: Any) -> list[str | None] | None:
    """The member labels of an array rule (from the validator's syntax tree), else None."""
    alternatives = rule.type.alternatives
    if len(alternatives) != 1 or type(alternatives[0]).__name__ != "Array":
        return None
    choices = alternatives[0].group.choices
    if len(choices) != 1:
        return None
    return [entry.key.name if getattr(entry, "key", None) else None
            for entry in choices[0].entries]


def _records_and_enums() -> tuple[dict[str, type], dict[str, type[IntEnum]]]:
    records: dict[str, type] = {}
    enums: dict[str, type[IntEnum]] = {}

    def walk(kind: Kind) -> None:
        if isinstance(kind, Struct):
            records[kind.cls.__name__] = kind.cls
            for _, sub in kinds(kind.cls):
                walk(sub)
        elif isinstance(kind, Enum):
            enums[kind.enum.__name__] = kind.enum
        elif isinstance(kind, Optional | ListOf):
            walk(kind.inner)

    for cls in CATALOGUE.values():
        for _, kind in kinds(cls):
            walk(kind)
    return records, enums


def compare(text: str) -> list[str]:
    """Every disagreement between the CDDL `text` and the catalogue, each starting with the
    name of the rule, message or field at fault (empty when they agree)."""
    return list(disagreements(text))


def disagreements(text: str) -> Iterator[str]:
    """compare()'s findings one by one, cheapest checks first (a caller may stop early)."""
    try:
        v = validator(text)
    except (SchemaError, UserWarning) as exc:
        yield f"schema: {exc}"
        return
    records, enums = _records_and_enums()
    messages = sorted(CATALOGUE.values(), key=lambda c: c.TAG)

    # The rules: exactly the messages, records, enums (and their members) of the catalogue.
    rules = {rule.name: rule for rule in parse_cddl(text).rules}
    expected = {c.__name__ for c in messages} | set(records) | set(enums) | OTHER_RULES
    expected |= {f"{name}_{member.name}" for name, enum in enums.items() for member in enum}
    for name in sorted(set(rules) - expected):
        yield f"{name}: rule in the CDDL, not in the catalogue"
    for name in sorted(expected - set(rules)):
        yield f"{name}: in the catalogue, no rule in the CDDL"

    # Labels (they do not travel: the names the CDDL and zcbor's generated code use).
    for cls in [*messages, *records.values()]:
        want = ([] if cls in records.values() else ["tag"]) + [n for n, _ in kinds(cls)]
        got = _labels(rules[cls.__name__]) if cls.__name__ in rules else None
        if got != want:
            yield (f"{cls.__name__}: labels {got}, expected {want}")

    # Messages: each its own rule with its tag, in the group of its direction, in no other rule.
    for cls in messages:
        body = message_sample(cls)
        for name in [c.__name__ for c in messages]:
            why = verdict(v, body, name)
            if (why == "") != (name == cls.__name__):
                yield (f"{cls.__name__}: tag {cls.TAG} sample as {name}: {why or 'ok'}")
        for group, direction in GROUPS.items():
            travels = cls.DIRECTION in (direction, Direction.BOTH)
            if (verdict(v, body, group) == "") != travels:
                yield (f"{group}: {cls.__name__} ({cls.DIRECTION.value}) "
                                f"{'refused' if travels else 'accepted'}")
        if why := verdict(v, body, "Message"):
            yield (f"Message: {cls.__name__} refused: {why}")

    # Records and enums, each on its own.
    for name, cls in records.items():
        why = verdict(v, sample(Struct(cls)), name)
        if why:
            yield (f"{name}: sample refused: {why}")
    for name, enum in enums.items():
        for member in enum:
            if verdict(v, int(member), f"{name}_{member.name}"):
                yield (f"{name}_{member.name}: is not {int(member)}")
        for where, value, ok in cases(Enum(enum)):
            if (verdict(v, value, name) == "") != ok:
                yield (f"{name}{where}: {value!r} {'refused' if ok else 'accepted'}")

    # Every edge of every field, and of the envelope.
    for where, rule, data, ok in envelope_cases():
        why = verdict(v, data, rule)
        if (why == "") != ok:
            yield (f"{where}: {'refused: ' + why if ok else 'accepted'}")


def test_cddl_agrees_with_the_catalogue() -> None:
    assert compare(CDDL_TEXT) == []


@pytest.mark.parametrize(
    ("old", "new", "culprit"),
    [
        ("  enrolled_now: bool,\n", "", "Welcome"),  # field dropped from the CDDL
        ("heartbeat_interval_ms: uint .size 4", "heartbeat_interval_ms: uint .size 2",
         "Welcome.heartbeat_interval_ms"),
        ("  nonce: bstr .size 32,", "  nonce: bstr .size (0..32),", "EnrollChallenge.nonce"),
        ("  tag: 38,", "  tag: 39,", "DeployChunk"),
        ("  offset: uint .size 4,\n  data:", "  data:", "DeployChunk"),
        ("  run_id: uint .size 4,\n  entry: tstr .size (1..64),",
         "  entry: tstr .size (1..64),\n  run_id: uint .size 4,", "StartApp"),
        ("ErrorCode_BUSY = 306", "ErrorCode_BUSY = 307", "ErrorCode_BUSY"),
        ("  Outcome_TIMED_OUT / ", "  ", "Outcome"),
        ("  apps: [0*64 AppSummary],", "  apps: [0*65 AppSummary],", "Heartbeat.apps"),
        ("  window: uint .size 2,", "  window: uint .size 2,\n  cores: uint,", "DeviceInfo"),
        ("Error / Welcome /", "Welcome /", "GatewayToDevice"),
        ("  state: AppState,", "  state: AppStatus,", "schema"),  # undefined name
        ("  architecture: tstr .size (1..32),", "  arch: tstr .size (1..32),", "DeviceInfo"),
        ("  reason: tstr .size (0..256),\n]\n\n; First", "  reason: tstr,\n]\n\n; First",
         "Error.reason"),
        ("  message_id: uint .size 4,", "  message_id: uint,", "Envelope.message_id"),
        ("WasmValue = (-9223372036854775808..-1)", "WasmValue = (-9223372036854775807..-1)",
         "StartApp.args"),
        ("DeviceInfoRequest = [\n  tag: 36,\n]\n",
         "DeviceInfoRequest = [\n  tag: 36,\n]\n\nGoodbye = [\n  tag: 41,\n]\n", "Goodbye"),
    ],
)
def test_a_cddl_edit_is_caught(old: str, new: str, culprit: str) -> None:
    assert old in CDDL_TEXT
    problems: list[str] = []
    for problem in disagreements(CDDL_TEXT.replace(old, new, 1)):
        problems.append(problem)
        if problem.startswith(culprit):
            break  # caught: the remaining (slower) checks would only find more
    else:
        pytest.fail(f"the edit went unnoticed as {culprit}: {problems}")


def test_a_field_added_in_python_only_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from wasmbed_hil.protocol.fields import field

    original = protocol.Welcome
    fields = [(f.name, f.type, dataclasses.field(metadata=f.metadata))
              for f in dataclasses.fields(original)]
    fields.append(("extra", int, field(UInt(32))))
    grown = dataclasses.make_dataclass(
        "Welcome", fields, bases=(Message,), frozen=True,
        namespace={"TAG": original.TAG, "DIRECTION": original.DIRECTION,
                   "PHASE": original.PHASE},
    )
    monkeypatch.setitem(CATALOGUE, original.TAG, grown)
    envelope_cases.cache_clear()
    try:
        problems = compare(CDDL_TEXT)
    finally:
        envelope_cases.cache_clear()
    assert problems and all("Welcome" in p for p in problems), problems
    assert any(p.startswith("Welcome: labels") for p in problems), problems


def test_a_message_added_in_python_only_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    from wasmbed_hil.protocol.fields import field
    from wasmbed_hil.protocol.messages import Phase

    @dataclass(frozen=True)
    class Goodbye(Message):
        TAG = 11
        DIRECTION = Direction.DEVICE_TO_GATEWAY
        PHASE = Phase.ESTABLISHED
        reason: str = field(Text(16))

    monkeypatch.setitem(CATALOGUE, Goodbye.TAG, Goodbye)
    envelope_cases.cache_clear()
    try:
        problems = compare(CDDL_TEXT)
    finally:
        envelope_cases.cache_clear()
    assert "Goodbye: in the catalogue, no rule in the CDDL" in problems
    assert any(p.startswith("DeviceToGateway: Goodbye") for p in problems), problems


def test_every_kind_of_the_catalogue_has_edge_cases() -> None:
    seen: set[type] = set()

    def walk(kind: Kind) -> None:
        seen.add(type(kind))
        list(cases(kind))  # raises for a kind the cases do not know
        if isinstance(kind, Optional | ListOf):
            walk(kind.inner)
        elif isinstance(kind, Struct):
            for _, sub in kinds(kind.cls):
                walk(sub)

    for cls in CATALOGUE.values():
        for _, kind in kinds(cls):
            walk(kind)
    assert {UInt, Enum, Bool, Bytes, Text, Number, Optional, ListOf, Struct} <= seen

    class Odd(Kind):
        pass

    with pytest.raises(TypeError, match="no edge cases"):
        list(cases(Odd()))
