"""Validation, pruning and defaulting against a CRD's structural ``openAPIV3Schema``.

The subset served: type, nullable, required, enum, minimum/maximum (and exclusive forms),
minLength/maxLength, pattern, minItems/maxItems, uniqueItems, minProperties/maxProperties,
items, properties, additionalProperties (bool or schema), x-kubernetes-preserve-unknown-fields,
x-kubernetes-int-or-string, x-kubernetes-embedded-resource and default. Like kube-apiserver,
unknown fields are pruned (not rejected) and ``metadata`` is left to the server.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from .jsoncopy import json_copy

Schema = dict[str, Any]
FieldError = tuple[str, str]  # (field path, message)

_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def _render(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, value: Any) -> bool:
    actual = _type_of(value)
    if expected == "number":
        return actual in ("number", "integer")
    if expected == "integer" and isinstance(value, float):
        return value.is_integer()
    return actual == expected


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def validate(schema: Schema, value: Any, path: str = "") -> list[FieldError]:
    """Return every (field, message) error of ``value`` against ``schema`` (empty: valid)."""
    errors: list[FieldError] = []
    _validate(schema, value, path, errors, root=not path)
    return errors


def _validate(schema: Schema, value: Any, path: str, errors: list[FieldError], root: bool) -> None:
    if not schema:
        return
    shown = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            errors.append((shown, f"Invalid value: \"null\": {shown} in body must be of type "
                                  f"{schema['type']}: \"null\""))
        return
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if _type_of(value) not in ("integer", "string"):
            errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body must be of "
                                  "type integer or string"))
            return
    elif expected and not _type_ok(expected, value):
        errors.append((shown, f"Invalid value: {_render(_type_of(value))}: {shown} in body must "
                              f"be of type {expected}: {_render(_type_of(value))}"))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_render(v) for v in schema["enum"])
        errors.append((shown, f"Unsupported value: {_render(value)}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(schema, value, shown, errors)
    if isinstance(value, str):
        _validate_string(schema, value, shown, errors)
    if isinstance(value, list):
        _validate_array(schema, value, path, shown, errors)
    if isinstance(value, dict):
        _validate_object(schema, value, path, shown, errors, root)


def _validate_number(schema: Schema, value: float, shown: str, errors: list[FieldError]) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") and value <= low:
            errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be "
                                  f"greater than {low}"))
        elif value < low:
            errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be "
                                  f"greater than or equal to {low}"))
    if high is not None:
        if schema.get("exclusiveMaximum") and value >= high:
            errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be "
                                  f"less than {high}"))
        elif value > high:
            errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be "
                                  f"less than or equal to {high}"))
    multiple = schema.get("multipleOf")
    if multiple and value % multiple:
        errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be a "
                              f"multiple of {multiple}"))


def _validate_string(schema: Schema, value: str, shown: str, errors: list[FieldError]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should be at "
                              f"least {schema['minLength']} chars long"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append((shown, f"Too long: may not be more than {schema['maxLength']} bytes"))
    pattern = schema.get("pattern")
    if pattern and not _compiled(pattern).search(value):
        errors.append((shown, f"Invalid value: {_render(value)}: {shown} in body should match "
                              f"'{pattern}'"))


def _validate_array(
    schema: Schema, value: list[Any], path: str, shown: str, errors: list[FieldError]
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append((shown, f"Invalid value: {len(value)}: {shown} in body should have at "
                              f"least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append((shown, f"Too many: {len(value)}: must have at most "
                              f"{schema['maxItems']} items"))
    if schema.get("uniqueItems"):
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) != len(seen):
            errors.append((shown, f"Invalid value: {shown} in body shouldn't contain duplicates"))
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, _join(path, index), errors, root=False)


def _validate_object(
    schema: Schema,
    value: dict[str, Any],
    path: str,
    shown: str,
    errors: list[FieldError],
    root: bool,
) -> None:
    properties: dict[str, Schema] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            errors.append((_join(path, name), "Required value"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append((shown, f"Invalid value: {len(value)}: {shown} in body should have at "
                              f"least {schema['minProperties']} properties"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append((shown, f"Too many: {len(value)}: must have at most "
                              f"{schema['maxProperties']} items"))
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if root and key == "metadata":
            continue  # the server validates metadata itself
        if key in properties:
            _validate(properties[key], item, _join(path, key), errors, root=False)
        elif isinstance(additional, dict):
            _validate(additional, item, _join(path, key), errors, root=False)


def prune_and_default(schema: Schema, value: Any, root: bool = True) -> Any:
    """A copy of ``value`` with unknown fields dropped and schema defaults filled in."""
    value = json_copy(value)
    _prune(schema, value, root)
    return value


def _prune(schema: Schema, value: Any, root: bool) -> None:
    if not schema or value is None:
        return
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") or additional is True
        embedded = schema.get("x-kubernetes-embedded-resource")
        for key in list(value):
            if (root or embedded) and key in _ROOT_FIELDS:
                continue  # apiVersion, kind and metadata are the server's, never pruned
            if key in properties:
                _prune(properties[key], value[key], root=False)
            elif isinstance(additional, dict):
                _prune(additional, value[key], root=False)
            elif not preserve:
                del value[key]
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = json_copy(sub["default"])
                _prune(sub, value[key], root=False)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _prune(items, item, root=False)
