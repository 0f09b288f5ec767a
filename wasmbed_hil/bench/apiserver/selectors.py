"""Label and field selectors in kube-apiserver's query syntax.

Label selector: comma-separated requirements ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists) and ``!k`` (does not exist). Field selector: ``path=v``,
``path==v``, ``path!=v`` over dotted paths of the object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\((.*)\)$")
_COMPARE = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_VALUE_ONLY = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise bad_request(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or missing one selects everything. 400 on bad syntax."""
    if not text or not text.strip():
        return []
    requirements = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise bad_request(f"unable to parse requirement: empty requirement in {text!r}")
        if m := _SET.match(part):
            values = [v.strip() for v in m.group(4).split(",")]
            if any(not v or not _VALUE_ONLY.match(v) for v in values):
                raise bad_request(f"unable to parse requirement: invalid values in {part!r}")
            requirements.append(Requirement(m.group(1), m.group(3), frozenset(values)))
        elif m := _COMPARE.match(part):
            op = "!=" if m.group(3) == "!=" else "="
            requirements.append(Requirement(m.group(1), op, frozenset([m.group(4)])))
        elif m := _EXISTS.match(part):
            requirements.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    negate: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for part in self.path.split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        actual = "" if current is None else _field_string(current)
        return (actual == self.value) != self.negate


def _field_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(
    text: str | None, supported: Collection[str] | None = None
) -> list[FieldRequirement]:
    """Parse a field selector; ``supported`` (None: any path) lists the selectable fields."""
    if not text or not text.strip():
        return []
    requirements = []
    for raw in text.split(","):
        part = raw.strip()
        for op in ("!=", "==", "="):
            if op in part:
                path, value = (s.strip() for s in part.split(op, 1))
                break
        else:
            raise bad_request(f"invalid field selector: {part!r}")
        if not path:
            raise bad_request(f"invalid field selector: {part!r}")
        if supported is not None and path not in supported:
            raise bad_request(f'field label not supported: "{path}"')
        requirements.append(FieldRequirement(path, value, op == "!="))
    return requirements


def fields_match(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in requirements)


def object_filter(
    label_selector: str | None,
    field_selector: str | None,
    supported_fields: Collection[str] | None = None,
) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate for an object from both selectors (parsed once, 400 on bad syntax)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, supported_fields)

    def matches(obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return labels_match(labels, metadata.get("labels")) and fields_match(fields, obj)

    return matches
