"""A structural parser for Renode platform descriptions (.repl).

It reads the subset of the format that renode/*.repl and Renode's own platform files use,
enough to check a description before Renode sees it: every entry's name, model type,
registration (``@ sysbus 0x...``, ``@ sysbus <0x..., +0x...>``), its attributes
(``size: 0x400000``) and its interrupt/GPIO connections (``RxInterrupt -> nvic@0``).

It does not resolve ``using`` files, type names or constructor parameters: that is Renode's
job, and nothing here claims a description Renode would accept, only that it is well formed
and says what we meant (the tests compare addresses with the firmware's headers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_HEADER = re.compile(rf"^(?P<name>{_NAME})\s*:\s*(?P<rest>.*)$")
_TYPE = re.compile(rf"^{_NAME}(?:\.{_NAME})*$")
_USING = re.compile(r'^using\s+"[^"]+"(?:\s+prefixed\s+"[^"]*")?$')
_ATTRIBUTE = re.compile(rf"^(?P<key>{_NAME})\s*:\s*(?P<value>.*)$")
_CONNECTION = re.compile(
    rf"^(?P<source>{_NAME}|\[[^\]]*\]|\d+)?\s*->\s*(?P<target>{_NAME})@(?P<number>\[[^\]]*\]|\w+)$"
)
_RANGE = re.compile(r"^<\s*(?P<start>\w+)\s*,\s*(?P<plus>\+)?\s*(?P<end>\w+)\s*>$")


class ReplError(ValueError):
    """The description is malformed; the message names the line."""


@dataclass(frozen=True)
class Connection:
    source: str | None  # the named GPIO (RxInterrupt) or None for the default one
    target: str
    number: str  # as written: "0", "0x3", "[19-22]"

    @property
    def numbers(self) -> list[int]:
        """The destination numbers, ranges expanded (``[6-10, 23]`` -> 6..10, 23)."""
        text = self.number.strip("[]")
        out: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(x, 0) for x in part.split("-", 1))
                out.extend(range(low, high + 1))
            elif part:
                out.append(int(part, 0))
        return out


@dataclass
class ReplEntry:
    name: str
    type: str | None  # None for an entry that only adds to an earlier one ("sysbus:")
    registration: str | None  # "sysbus", "gpioPortA", "none"; None when not registered here
    address: int | None
    size: int | None
    line: int
    attributes: dict[str, str] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)

    def end(self) -> int | None:
        """The first address past the peripheral, when its size is known."""
        size = self.size if self.size is not None else _int_or_none(self.attributes.get("size"))
        if self.address is None or size is None:
            return None
        return self.address + size


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def _strip_comments(text: str) -> list[str]:
    """Lines without // and /* */ comments (quoted strings kept intact, line count kept)."""
    out: list[str] = []
    in_block = False
    for raw in text.splitlines():
        line = ""
        i = 0
        in_string = False
        while i < len(raw):
            if in_block:
                end = raw.find("*/", i)
                if end < 0:
                    i = len(raw)
                    continue
                in_block = False
                i = end + 2
                continue
            ch = raw[i]
            if ch == '"':
                in_string = not in_string
            elif not in_string and raw.startswith("//", i):
                break
            elif not in_string and raw.startswith("/*", i):
                in_block = True
                i += 2
                continue
            line += ch
            i += 1
        out.append(line.rstrip())
    if in_block:
        raise ReplError("unterminated /* comment")
    return out


def _parse_registration(text: str, lineno: int) -> tuple[str, int | None, int | None]:
    """``sysbus``, ``sysbus 0x4000``, ``sysbus <0x4000, +0x100>`` -> (target, address, size)."""
    target, _, where = text.strip().partition(" ")
    if not re.fullmatch(_NAME, target):
        raise ReplError(f"line {lineno}: bad registration {text!r}")
    where = where.strip()
    if not where:
        return target, None, None
    if m := _RANGE.match(where):
        try:
            start = int(m["start"], 0)
            end = int(m["end"], 0)
        except ValueError:
            raise ReplError(f"line {lineno}: bad range {where!r}") from None
        size = end if m["plus"] else end - start + 1
        if size <= 0:
            raise ReplError(f"line {lineno}: empty range {where!r}")
        return target, start, size
    try:
        return target, int(where, 0), None
    except ValueError:
        raise ReplError(f"line {lineno}: bad address {where!r}") from None


def _split_inline(rest: str) -> tuple[str, list[str]]:
    """``Type @ sysbus { a: 1; b: 2 }`` -> ("Type @ sysbus", ["a: 1", "b: 2"])."""
    if rest.endswith("}") and "{" in rest:
        head, _, body = rest.partition("{")
        return head.strip(), [p.strip() for p in body[:-1].split(";") if p.strip()]
    return rest, []


def _add_body_line(entry: ReplEntry, text: str, lineno: int) -> None:
    if m := _CONNECTION.match(text):
        entry.connections.append(Connection(m["source"], m["target"], m["number"]))
        return
    if m := _ATTRIBUTE.match(text):
        entry.attributes[m["key"]] = m["value"].strip()
        return
    raise ReplError(f"line {lineno}: neither an attribute nor a connection: {text.strip()!r}")


def parse_repl(text: str) -> list[ReplEntry]:
    """Parse a platform description; raises ReplError naming the first bad line."""
    entries: list[ReplEntry] = []
    current: ReplEntry | None = None
    body_indent: int | None = None
    skip_deeper_than: int | None = None  # inside an ``init:`` block (monitor commands)
    for lineno, line in enumerate(_strip_comments(text), start=1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if "\t" in line[: indent + 1]:
            raise ReplError(f"line {lineno}: tabs in indentation")
        if indent == 0:
            skip_deeper_than = None
            body_indent = None
            if _USING.match(line):
                current = None
                continue
            m = _HEADER.match(line)
            if not m:
                raise ReplError(f"line {lineno}: expected 'name: Type @ registration': {line!r}")
            rest, inline = _split_inline(m["rest"].strip())
            type_text, at, reg_text = rest.partition("@")
            type_name = type_text.strip() or None
            if type_name is not None and not _TYPE.match(type_name):
                raise ReplError(f"line {lineno}: bad model type {type_name!r}")
            registration = address = size = None
            if at:
                if not reg_text.strip():
                    raise ReplError(f"line {lineno}: '@' without a registration")
                registration, address, size = _parse_registration(reg_text, lineno)
            current = ReplEntry(m["name"], type_name, registration, address, size, lineno)
            for item in inline:
                _add_body_line(current, item, lineno)
            entries.append(current)
            continue
        if current is None:
            raise ReplError(f"line {lineno}: indented line outside an entry")
        if skip_deeper_than is not None and indent > skip_deeper_than:
            continue
        if body_indent is None:
            body_indent = indent
        elif indent != body_indent:
            raise ReplError(f"line {lineno}: indentation {indent}, expected {body_indent}")
        skip_deeper_than = None
        if line.strip() == "init:":
            skip_deeper_than = indent
            continue
        _add_body_line(current, line.strip(), lineno)
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.type is None:
            continue
        if entry.name in seen:
            first = seen[entry.name]
            raise ReplError(f"line {entry.line}: {entry.name!r} defined again (line {first})")
        seen[entry.name] = entry.line
    return entries
