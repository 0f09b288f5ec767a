"""protocol.cddl and the Python catalogue (messages.py) describe the same wire format.

The CDDL is read by a small reader written for the subset protocol.cddl uses: rules
`Name = type`, arrays of `label: type` entries, type choices with `/`, integer values and
ranges. No CDDL library is involved.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import ClassVar

import pytest

import wasmbed_hil.protocol as protocol
from wasmbed_hil.protocol.fields import (
    Bool,
    Bytes,
    Enum,
    FieldError,
    Kind,
    ListOf,
    Number,
    Optional,
    Struct,
    Text,
    UInt,
    field,
    kinds,
)
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    MAX_MESSAGE_ID,
    PROTOCOL_VERSION,
    Direction,
    Message,
)

CDDL_PATH = Path(protocol.__file__).with_name("protocol.cddl")
PRELUDE = {"uint", "int", "bstr", "tstr", "bool", "null", "float"}

# ----------------------------------------------------------------------------- the reader


@dataclass(frozen=True)
class Array:
    entries: tuple[tuple[str | None, str], ...]  # (label or None, type text)


@dataclass(frozen=True)
class Choice:
    alternatives: tuple[str, ...]


def strip_comments(text: str) -> str:
    """Drop `;` comments (outside "text" literals)."""
    lines = []
    for line in text.splitlines():
        in_text = False
        for i, ch in enumerate(line):
            if ch == '"':
                in_text = not in_text
            elif ch == ";" and not in_text:
                line = line[:i]
                break
        lines.append(line.rstrip())
    return "\n".join(lines)


def read_rules(text: str) -> dict[str, str]:
    """Rule name -> its body, whitespace-normalised. A rule starts in column 0."""
    rules: dict[str, str] = {}
    current: str | None = None
    for line in strip_comments(text).splitlines():
        if not line.strip():
            continue
        m = re.match(r"([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if m and not line[0].isspace():
            current = m.group(1)
            if current in rules:
                raise ValueError(f"rule {current} defined twice")
            rules[current] = m.group(2)
        elif current is None:
            raise ValueError(f"text before the first rule: {line!r}")
        else:
            rules[current] += " " + line.strip()
    return {name: " ".join(body.split()) for name, body in rules.items()}


def split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` where no bracket or parenthesis is open."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r} in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unclosed bracket in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def encloses(body: str) -> bool:
    """True when body is one bracketed group: "[...]" whose first "[" closes at the end."""
    depth = 0
    for i, ch in enumerate(body):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0:
            return body[0] == "[" and i == len(body) - 1
    return False


def parse_type(body: str) -> Array | Choice:
    body = body.strip()
    if encloses(body):
        entries = []
        for entry in split_top(body[1:-1], ","):
            if not entry:
                continue  # trailing comma
            label, sep, rest = entry.partition(":")
            if sep and re.fullmatch(r"[a-z_][a-z0-9_]*", label.strip()):
                entries.append((label.strip(), rest.strip()))
            else:
                entries.append((None, entry))
        return Array(tuple(entries))
    return Choice(tuple(split_top(body, "/")))


def parse_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def parse_range(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\(?(-?\d+)\.\.(-?\d+)\)?", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def load_rules(text: str | None = None) -> dict[str, Array | Choice]:
    raw = read_rules(CDDL_PATH.read_text(encoding="utf-8") if text is None else text)
    return {name: parse_type(body) for name, body in raw.items()}


# ----------------------------------------------------------------------------- expectations


def expected_type(kind: Kind) -> str:
    """The CDDL type text protocol.cddl must use for a field of this kind."""
    if isinstance(kind, UInt):
        return f"uint .size {(kind.max.bit_length() + 7) // 8}"
    if isinstance(kind, Bytes | Text | Bool):
        return kind.cddl  # "bstr .size 16", "bstr .size (0..512)", "tstr .size (1..64)", "bool"
    if isinstance(kind, Enum):
        return kind.enum.__name__
    if isinstance(kind, Struct):
        return kind.cls.__name__
    if isinstance(kind, Number):
        return "WasmValue"
    if isinstance(kind, Optional):
        return f"{expected_type(kind.inner)} / null"
    if isinstance(kind, ListOf):
        return f"[0*{kind.max_items} {expected_type(kind.inner)}]"
    raise TypeError(f"no CDDL mapping for {type(kind).__name__}: extend expected_type()")


def nested(kind: Kind) -> list[Kind]:
    """`kind` and every kind inside it."""
    if isinstance(kind, Optional | ListOf):
        return [kind, *nested(kind.inner)]
    if isinstance(kind, Struct):
        return [kind, *(k for _, sub in kinds(kind.cls) for k in nested(sub))]
    return [kind]


def compare(rules: dict[str, Array | Choice], catalogue: dict[int, type[Message]]) -> list[str]:
    """Every disagreement between the CDDL rules and the catalogue (empty when they agree)."""
    problems: list[str] = []

    def check_fields(name: str, cls: type, entries: list[tuple[str | None, str]]) -> None:
        spec = kinds(cls)
        if len(entries) != len(spec):
            problems.append(f"{name}: {len(spec)} fields in Python, {len(entries)} in CDDL")
        for i, ((py_name, kind), (label, typ)) in enumerate(zip(spec, entries, strict=False)):
            if label != py_name:
                problems.append(f"{name} field {i}: Python {py_name!r}, CDDL {label!r}")
            want = expected_type(kind)
            if typ != want:
                problems.append(f"{name}.{py_name}: CDDL {typ!r}, expected {want!r}")

    def array_rule(name: str) -> Array | None:
        rule = rules.get(name)
        if not isinstance(rule, Array):
            problems.append(f"{name}: no array rule in the CDDL")
            return None
        return rule

    records: dict[str, type] = {}
    enums: dict[str, type[IntEnum]] = {}
    for tag, cls in sorted(catalogue.items()):
        rule = array_rule(cls.__name__)
        if rule is None:
            continue
        entries = list(rule.entries)
        if not entries or entries[0] != ("tag", str(tag)):
            problems.append(f"{cls.__name__}: first entry {entries[:1]}, expected tag: {tag}")
        check_fields(cls.__name__, cls, entries[1:])
        for _, kind in kinds(cls):
            for k in nested(kind):
                if isinstance(k, Struct):
                    records[k.cls.__name__] = k.cls
                elif isinstance(k, Enum):
                    enums[k.enum.__name__] = k.enum

    for name, cls in records.items():
        rule = array_rule(name)
        if rule is not None:
            check_fields(name, cls, list(rule.entries))

    for name, enum in enums.items():
        rule = rules.get(name)
        if not isinstance(rule, Choice):
            problems.append(f"{name}: no choice rule in the CDDL")
            continue
        want = [f"{name}_{m.name}" for m in enum]
        if list(rule.alternatives) != want:
            problems.append(f"{name}: members {list(rule.alternatives)}, expected {want}")
        for member in enum:
            value_rule = rules.get(f"{name}_{member.name}")
            value = (
                parse_int(value_rule.alternatives[0])
                if isinstance(value_rule, Choice) and len(value_rule.alternatives) == 1
                else None
            )
            if value != int(member):
                problems.append(f"{name}_{member.name}: CDDL {value}, Python {int(member)}")

    # The envelope and the direction groups.
    envelope = array_rule("Envelope")
    want_env = [("version", str(PROTOCOL_VERSION)),
                ("message_id", f"uint .size {(MAX_MESSAGE_ID.bit_length() + 7) // 8}"),
                ("message", "Message")]
    if envelope is not None and list(envelope.entries) != want_env:
        problems.append(f"Envelope: {list(envelope.entries)}, expected {want_env}")
    groups = {"DeviceToGateway": Direction.DEVICE_TO_GATEWAY,
              "GatewayToDevice": Direction.GATEWAY_TO_DEVICE}
    if rules.get("Message") != Choice(tuple(groups)):
        problems.append(f"Message: {rules.get('Message')}, expected a choice of {list(groups)}")
    for group, direction in groups.items():
        want = [cls.__name__ for _, cls in sorted(catalogue.items())
                if cls.DIRECTION in (direction, Direction.BOTH)]
        rule = rules.get(group)
        got = list(rule.alternatives) if isinstance(rule, Choice) else None
        if got != want:
            problems.append(f"{group}: {got}, expected {want}")

    # Nothing in the CDDL that Python lacks, and no dangling reference.
    names = {cls.__name__ for cls in catalogue.values()}
    for name, rule in rules.items():
        is_message = isinstance(rule, Array) and rule.entries[:1] and rule.entries[0][0] == "tag"
        if is_message and name not in names:
            problems.append(f"{name}: message in the CDDL, not in the catalogue")
        texts = [t for _, t in rule.entries] if isinstance(rule, Array) else rule.alternatives
        for text in texts:
            for ref in re.findall(r"(?<![.\w])([A-Za-z][A-Za-z0-9_]*)", text):
                if ref not in rules and ref not in PRELUDE and ref != "size":
                    problems.append(f"{name}: reference to undefined {ref!r}")
    return problems


# ----------------------------------------------------------------------------- tests


def test_cddl_agrees_with_the_catalogue() -> None:
    assert compare(load_rules(), CATALOGUE) == []


def test_reader_understands_the_subset() -> None:
    text = """
; comment "with ; inside"
Thing = [
  tag: 7,  ; trailing comment
  a: bstr .size 16 / null,
  b: [0*4 Other],
]
Other = One / Two
One = 1
Two = (-5..-1)
"""
    rules = load_rules(text)
    assert rules["Thing"] == Array((("tag", "7"), ("a", "bstr .size 16 / null"),
                                    ("b", "[0*4 Other]")))
    assert rules["Other"] == Choice(("One", "Two"))
    assert parse_int(rules["One"].alternatives[0]) == 1
    assert parse_range(rules["Two"].alternatives[0]) == (-5, -1)
    with pytest.raises(ValueError, match="twice"):
        read_rules("A = 1\nA = 2\n")
    with pytest.raises(ValueError, match="unclosed"):
        parse_type("[ a: uint")


def _fake_catalogue(cls: type[Message]) -> dict[int, type[Message]]:
    return {**CATALOGUE, cls.TAG: cls}


def test_a_field_added_in_python_only_is_caught() -> None:
    original = CATALOGUE[protocol.Welcome.TAG]
    fields = [(f.name, f.type, dataclasses.field(metadata=f.metadata))
              for f in dataclasses.fields(original)]
    fields.append(("extra", int, field(UInt(32))))
    grown = dataclasses.make_dataclass(
        "Welcome", fields, bases=(Message,), frozen=True,
        namespace={"TAG": original.TAG, "DIRECTION": original.DIRECTION},
    )
    problems = compare(load_rules(), _fake_catalogue(grown))
    assert problems and all(p.startswith("Welcome") for p in problems), problems
    assert "Welcome: 5 fields in Python, 4 in CDDL" in problems


def test_a_message_added_in_python_only_is_caught() -> None:
    @dataclass(frozen=True)
    class Goodbye(Message):
        TAG: ClassVar[int] = 11
        DIRECTION: ClassVar[Direction] = Direction.DEVICE_TO_GATEWAY
        reason: str = field(Text(16))

    problems = compare(load_rules(), _fake_catalogue(Goodbye))
    assert "Goodbye: no array rule in the CDDL" in problems
    assert any(p.startswith("DeviceToGateway") for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "culprit"),
    [
        ("  enrolled_now: bool,\n", "", "Welcome"),  # field dropped from the CDDL
        ("heartbeat_interval_ms: uint .size 4", "heartbeat_interval_ms: uint .size 2", "Welcome"),
        ("  nonce: bstr .size 32,", "  nonce: bstr .size (0..32),", "EnrollChallenge"),
        ("  tag: 38,", "  tag: 39,", "DeployChunk"),
        ("  offset: uint .size 4,\n  data:", "  data:", "DeployChunk"),
        ("  run_id: uint .size 4,\n  entry: tstr .size (1..64),",
         "  entry: tstr .size (1..64),\n  run_id: uint .size 4,", "StartApp"),
        ("ErrorCode_BUSY = 306", "ErrorCode_BUSY = 307", "ErrorCode_BUSY"),
        ("  Outcome_TIMED_OUT / ", "  ", "Outcome"),
        ("  apps: [0*64 AppSummary],", "  apps: [0*65 AppSummary],", "Heartbeat"),
        ("  window: uint .size 2,", "  window: uint .size 2,\n  cores: uint,", "DeviceInfo"),
        ("Error / Welcome /", "Welcome /", "GatewayToDevice"),
        ("  state: AppState,", "  state: AppStatus,", "AppSummary"),
    ],
)
def test_a_cddl_edit_is_caught(old: str, new: str, culprit: str) -> None:
    text = CDDL_PATH.read_text(encoding="utf-8")
    assert old in text
    problems = compare(load_rules(text.replace(old, new, 1)), CATALOGUE)
    assert any(p.startswith(culprit) for p in problems), problems


def test_wasm_value_range_matches_the_codec() -> None:
    rule = load_rules()["WasmValue"]
    assert isinstance(rule, Choice)
    assert "float" in rule.alternatives
    ranges = sorted(r for alt in rule.alternatives if (r := parse_range(alt)) is not None)
    assert len(ranges) == len(rule.alternatives) - 1
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert lo == hi + 1, "the integer ranges must be contiguous"
    low, high = ranges[0][0], ranges[-1][1]
    number = Number()
    assert number.decode(low, "v") == low
    assert number.decode(high, "v") == high
    for outside in (low - 1, high + 1):
        with pytest.raises(FieldError):
            number.decode(outside, "v")
    assert number.decode(-0.5, "v") == -0.5


def test_every_kind_of_the_catalogue_has_a_cddl_mapping() -> None:
    seen: set[type] = set()
    for cls in CATALOGUE.values():
        for _, kind in kinds(cls):
            for k in nested(kind):
                expected_type(k)  # raises for a kind the mapping does not know
                seen.add(type(k))
    assert {UInt, Enum, Bool, Bytes, Text, Number, Optional, ListOf, Struct} <= seen
