"""How the resource models become Kubernetes JSON and back: field facts, decode, encode.

A model is a dataclass whose fields carry their schema facts (`prop(...)`: documentation,
ranges, patterns, sizes). `decode` checks a JSON value against a type and those facts and
raises `ResourceError` naming the field path; `encode` writes a model back. The CRD generator
(`crdgen`) reads the same facts, so the OpenAPI schema and the Python checks cannot drift.
The models themselves are in `resources.py`.
"""

# prop() returns a dataclasses.field() carrying schema facts, not a shared mutable default:

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import MISSING, dataclass
from datetime import UTC, datetime
from enum import Enum, IntEnum
from functools import cache
from typing import Any


class ResourceError(ValueError):
    """Invalid resource content; `path` is the dotted field path (camelCase), or ""."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def under(self, prefix: str) -> ResourceError:
        if not prefix:
            return self
        path = f"{prefix}.{self.path}" if self.path and not self.path.startswith("[") else (
            f"{prefix}{self.path}"
        )
        return ResourceError(path, self.message)


def enum_values(enum: type[Enum]) -> list[str]:
    """The strings an enum takes in a resource: values of StrEnums, names of IntEnums."""
    if issubclass(enum, IntEnum):
        return [m.name for m in enum]
    return [str(m.value) for m in enum]


# ----------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Prop:
    """Schema facts of one field, shared by from_dict and the CRD generator."""

    doc: str = ""
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    date_time: bool = False
    list_map_keys: tuple[str, ...] = ()  # x-kubernetes-list-type: map with these keys
    free_form: bool = False  # x-kubernetes-preserve-unknown-fields


def prop(
    default: Any = MISSING, *, factory: Any = MISSING, doc: str = "", **facts: Any
) -> Any:
    """A dataclass field carrying its schema facts (see `Prop`)."""
    meta = {"wasmbed": Prop(doc=doc, **facts)}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def field_prop(f: dataclasses.Field[Any]) -> Prop:
    return f.metadata.get("wasmbed", Prop())


@cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, (tp, False) otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def is_number(tp: Any) -> bool:
    return tp is float or (
        typing.get_origin(tp) in (typing.Union, types.UnionType)
        and set(typing.get_args(tp)) == {int, float}
    )


def has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def rfc3339(when: datetime | None = None) -> str:
    """An RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pattern_ok(pattern: str, text: str) -> bool:
    # Python's `$` also matches before a final newline; the schema's (ECMA/RE2) does not.
    if pattern.endswith("$") and text.endswith("\n"):
        return False
    return re.search(pattern, text) is not None


def _is_date_time(text: str) -> bool:
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}", text):
        return False
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


# ----------------------------------------------------------------------------- codec


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _check_facts(value: Any, facts: Prop, path: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if facts.minimum is not None and value < facts.minimum:
            raise ResourceError(path, f"must be at least {facts.minimum}, got {value}")
        if facts.maximum is not None and value > facts.maximum:
            raise ResourceError(path, f"must be at most {facts.maximum}, got {value}")
    if isinstance(value, str):
        if facts.min_length is not None and len(value) < facts.min_length:
            raise ResourceError(path, f"must be at least {facts.min_length} characters long")
        if facts.max_length is not None and len(value) > facts.max_length:
            raise ResourceError(
                path, f"must be at most {facts.max_length} characters long, got {len(value)}"
            )
        if facts.pattern is not None and not pattern_ok(facts.pattern, value):
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise ResourceError(path, f"{shown!r} does not match {facts.pattern}")
        if facts.date_time and not _is_date_time(value):
            raise ResourceError(path, f"{value!r} is not an RFC 3339 date-time")
    if isinstance(value, list) and facts.max_items is not None and len(value) > facts.max_items:
        raise ResourceError(path, f"at most {facts.max_items} items, got {len(value)}")


def decode(tp: Any, raw: Any, path: str, facts: Prop = Prop()) -> Any:
    """Build the Python value of type `tp` from JSON-like `raw`, or raise ResourceError."""
    tp, optional = unwrap_optional(tp)
    if raw is None:
        if optional:
            return None
        raise ResourceError(path, "must not be null")
    if dataclasses.is_dataclass(tp):
        return decode_dataclass(tp, raw, path)
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(raw, list):
            raise ResourceError(path, f"expected an array, got {type_name(raw)}")
        _check_facts(raw, facts, path)
        (item_tp,) = typing.get_args(tp)
        items = [decode(item_tp, item, f"{path}[{i}]") for i, item in enumerate(raw)]
        for key in facts.list_map_keys:
            seen: set[Any] = set()
            for i, item in enumerate(items):
                k = getattr(item, key)
                if k in seen:
                    raise ResourceError(f"{path}[{i}].{json_name(key)}", f"duplicate {k!r}")
                seen.add(k)
        return items
    if origin is dict:
        if not isinstance(raw, dict):
            raise ResourceError(path, f"expected an object, got {type_name(raw)}")
        _key_tp, value_tp = typing.get_args(tp)
        for key in raw:
            if not isinstance(key, str):
                raise ResourceError(path, f"keys must be strings, got {key!r}")
        if value_tp is Any:
            return dict(raw)
        return {k: decode(value_tp, v, f"{path}.{k}") for k, v in raw.items()}
    if isinstance(tp, type) and issubclass(tp, Enum):
        if not isinstance(raw, str):
            raise ResourceError(path, f"expected a string, got {type_name(raw)}")
        allowed = enum_values(tp)
        if raw not in allowed:
            raise ResourceError(path, f"{raw!r} is not one of {', '.join(allowed)}")
        return tp[raw] if issubclass(tp, IntEnum) else tp(raw)
    if is_number(tp):
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ResourceError(path, f"expected a number, got {type_name(raw)}")
    elif tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ResourceError(path, f"expected an integer, got {type_name(raw)}")
    elif tp is bool:
        if not isinstance(raw, bool):
            raise ResourceError(path, f"expected a boolean, got {type_name(raw)}")
    elif tp is str:
        if not isinstance(raw, str):
            raise ResourceError(path, f"expected a string, got {type_name(raw)}")
    else:  # pragma: no cover - a model declared a type the codec does not know
        raise TypeError(f"{path}: unsupported field type {tp!r}")
    _check_facts(raw, facts, path)
    return raw


def decode_dataclass(cls: Any, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ResourceError(path, f"expected an object, got {type_name(raw)}")
    fields = {json_name(f.name): f for f in dataclasses.fields(cls)}
    join = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ResourceError(join(str(unknown[0])), "unknown field")
    kwargs: dict[str, Any] = {}
    for key, f in fields.items():
        value = raw.get(key)
        if value is None and has_default(f):
            continue  # absent (or null, which Kubernetes prunes): the default applies
        if key not in raw:
            raise ResourceError(join(key), "required field is missing")
        kwargs[f.name] = decode(hints(cls)[f.name], value, join(key), field_prop(f))
    try:
        return cls(**kwargs)
    except ResourceError as exc:
        raise exc.under(path) from None


def encode(value: Any) -> Any:
    """JSON-like form of a model value (inverse of `decode`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None or (isinstance(item, (list, dict)) and not item):
                continue
            out[json_name(f.name)] = encode(item)
        return out
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value
