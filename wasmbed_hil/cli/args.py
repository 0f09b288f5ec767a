"""The REST commands' argument types: the label-selector grammar (`deploy --selector`) and
numbers. Each raises argparse.ArgumentTypeError, which argparse reports as bad usage (exit 2).
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


def _terms(text: str) -> list[str]:
    """Split a selector at the commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    return [*terms, current.strip()]


def parse_selector(text: str) -> dict[str, Any]:
    """A label selector in kubectl's syntax as {matchLabels, matchExpressions}: `k=v` (also
    `k==v`), `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist)."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in _terms(text):
        if not term:
            raise argparse.ArgumentTypeError(f"empty term in selector {text!r}")
        found = _SET_TERM.match(term)
        if found:
            values = [v.strip() for v in found.group(3).split(",") if v.strip()]
            if not values:
                raise argparse.ArgumentTypeError(f"no values in {term!r}")
            expressions.append({"key": found.group(1),
                                "operator": "In" if found.group(2) == "in" else "NotIn",
                                "values": values})
        elif "!=" in term:
            key, _, value = term.partition("!=")
            expressions.append({"key": key.strip(), "operator": "NotIn",
                                "values": [value.strip()]})
        elif "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            labels[key.strip()] = value.strip()
        elif term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        elif re.fullmatch(r"[^\s()]+", term):
            expressions.append({"key": term, "operator": "Exists"})
        else:
            raise argparse.ArgumentTypeError(f"cannot parse {term!r} in selector {text!r}")
    if any(not key for key in labels) or any(not e["key"] for e in expressions):
        raise argparse.ArgumentTypeError(f"a term of selector {text!r} has no label key")
    selector: dict[str, Any] = {}
    if labels:
        selector["matchLabels"] = labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def number(text: str) -> int | float:
    """An integer, else a finite float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def non_negative(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def coalesce_seconds(text: str) -> float:
    """Seconds between two polls of a busy gateway's event loop: 0 (poll at once) to 0.1."""
    from ..gateway.eventloop import MAX_COALESCE_S

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_COALESCE_S):
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_COALESCE_S:g}, got {text}")
    return value


def tcp_port(text: str) -> int:
    """A TCP port, 0..65535 (0: one the OS picks). socket.bind raises OverflowError, not
    OSError, for one out of range: a traceback instead of a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is no TCP port (0..65535)")
    return value


MAX_ENDPOINT = 512  # Gateway.spec.endpoint's maxLength


def endpoint(text: str) -> str:
    """host or host:port, as a Gateway resource can hold it (port 1..65535, at most 512
    characters): the gateway agent registers it, and one it cannot failed every pass."""
    host, colon, tail = text.rpartition(":")
    if not colon:
        host, tail = text, ""
    if not host or len(text) > MAX_ENDPOINT:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is no host:port (a host, at most {MAX_ENDPOINT} characters)")
    if colon and not (tail.isascii() and tail.isdigit() and 1 <= int(tail) <= 65535):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: the port must be 1..65535")
    return text
