"""API errors as Kubernetes ``Status`` objects (apiVersion v1, kind Status, status Failure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def status_body(
    code: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``Status`` document as kube-apiserver returns it for a failed request."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


@dataclass
class ApiError(Exception):
    """Raised anywhere in request handling; the HTTP layer turns it into a Status response."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details or None)


def _details(group: str, kind: str, name: str) -> dict[str, Any]:
    details = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    what = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{what} "{name}" not found', _details(group, plural, name))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409, "AlreadyExists", f'{what} "{name}" already exists', _details(group, plural, name)
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    what = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(group, plural, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(
    group: str, kind: str, name: str, causes: list[tuple[str, str]]
) -> ApiError:
    """422 Invalid with one cause per (field, message) pair, as field validation reports them."""
    qualified = f"{kind}.{group}" if group else kind
    lines = [f"{f}: {m}" if f else m for f, m in causes]
    summary = lines[0] if len(lines) == 1 else "[" + ", ".join(lines) + "]"
    details = _details(group, kind, name)
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
    ]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)
