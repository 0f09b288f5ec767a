"""The quarantine file: known failures that must not fail CI, each with a reason.

    - test: suites/heartbeat/test_heartbeat.py::test_silenced_device_becomes_unreachable
      reason: the virtual clock drifts under load (issue 123)
      until: 2026-12-31        # optional; from the day after, the entry no longer applies

`test` is a pytest node id (`path/to/test_x.py::Class::test_y[param]`) or an Allure
fullName (`path.to.test_x.Class#test_y`); without a parameter id it covers every
parametrization. A missing or empty reason, an unknown key, a bad date, a test listed twice
or a file that is not UTF-8 is an error (QuarantineError).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from .results import CaseResult

KEYS = ("test", "reason", "until")


class QuarantineError(Exception):
    """The quarantine file is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class QuarantineEntry:
    test: str
    reason: str
    until: date | None = None
    expired: bool = False

    @property
    def key(self) -> str:
        return canonical_test(self.test)

    def matches(self, test: CaseResult) -> bool:
        # on any backend (`KEY@BACKEND`) and with any parameters (`KEY[id]`)
        return self.key in covering(test.key) or self.test == test.nodeid


@dataclass
class Quarantine:
    path: Path | None
    entries: list[QuarantineEntry]

    @property
    def active(self) -> list[QuarantineEntry]:
        return [e for e in self.entries if not e.expired]

    @property
    def expired(self) -> list[QuarantineEntry]:
        return [e for e in self.entries if e.expired]

    def match(self, test: CaseResult) -> QuarantineEntry | None:
        """The entry (active or expired) for `test`, the most specific one first."""
        found = [e for e in self.entries if e.matches(test)]
        found.sort(key=lambda e: (e.expired, e.key != test.key))
        return found[0] if found else None


def covering(key: str) -> set[str]:
    """The entries that cover the test `key` (`MODULE#NAME[PARAMS]@BACKEND`): itself, and
    it without its parameter id, its backend or both. The backend is what follows the last
    `@` outside the parameter id (which may hold an `@` of its own: `test_x[user@host]`)."""
    base, at, backend = key.rpartition("@")
    if not at or "]" in backend:  # no backend, or the `@` is inside the parameter id
        base, backend = key, ""
    plain = base.split("[", 1)[0]
    suffix = f"@{backend}" if backend else ""
    return {key, base, plain + suffix, plain}


def canonical_test(ref: str) -> str:
    """A node id as the report's key (`a/b/test_c.py::K::test_d[p]` -> `a.b.test_c.K#test_d[p]`);
    a fullName unchanged."""
    ref = ref.strip()
    if "::" not in ref:
        return ref
    path, _, tail = ref.partition("::")
    names, bracket, params = tail.partition("[")  # the parameter id may hold "::"
    rest = names.split("::")
    module = path[:-3] if path.endswith(".py") else path
    module = module.replace("\\", "/").strip("/").replace("/", ".")
    return ".".join([module, *rest[:-1]]) + "#" + rest[-1] + bracket + params


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps (`until` is parsed here, with a clear error) and
    without aliases: a quarantine file needs none, and nested aliases (`*a` nine times in
    each of nine levels) make a few hundred bytes a structure whose text (the `reason`) is
    exponentially long, which hung `wasmbed-hil report`."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "an alias (*name): anchors and aliases are not allowed in a "
                "quarantine file", event.start_mark)
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_quarantine(text: str, path: Path | None = None, today: date | None = None
                     ) -> Quarantine:
    where = str(path) if path else "quarantine"
    today = today or date.today()
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise QuarantineError(f"{where}: not valid YAML: {exc}") from None
    if data is None:
        return Quarantine(path, [])
    if not isinstance(data, list):
        raise QuarantineError(f"{where}: expected a list of entries "
                              "(- test: ..., reason: ..., until: YYYY-MM-DD)")
    entries: list[QuarantineEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(data, 1):
        entries.append(_entry(raw, f"{where}: entry {number}", today))
        key = entries[-1].key
        if key in seen:
            raise QuarantineError(f"{where}: entry {number}: {entries[-1].test!r} is already "
                                  f"quarantined by entry {seen[key]}")
        seen[key] = number
    return Quarantine(path, entries)


def _entry(raw: Any, where: str, today: date) -> QuarantineEntry:
    if not isinstance(raw, dict):
        raise QuarantineError(f"{where}: expected a mapping with test, reason and optionally "
                              "until")
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        raise QuarantineError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(KEYS)}")
    test = raw.get("test")
    if not isinstance(test, str) or not test.strip():
        raise QuarantineError(f"{where}: 'test' is missing or empty (a pytest node id or an "
                              "Allure fullName)")
    where = f"{where} ({test.strip()})"
    reason = raw.get("reason")
    if reason is None or not str(reason).strip():
        raise QuarantineError(f"{where}: 'reason' is missing or empty: every quarantined test "
                              "needs one")
    until = raw.get("until")
    if until is not None:
        try:
            until = date.fromisoformat(str(until).strip())
        except ValueError:
            raise QuarantineError(f"{where}: 'until' must be an ISO date (YYYY-MM-DD), not "
                                  f"{until!r}") from None
    return QuarantineEntry(test.strip(), str(reason).strip(), until,
                           expired=until is not None and until < today)


def load_quarantine(path: Path | str, today: date | None = None) -> Quarantine:
    """The quarantine file at `path`. OSError when it cannot be read, QuarantineError when
    it is invalid."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # not a crash: a reason typed in another encoding (Latin-1 "café") names the byte
        raise QuarantineError(f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                              f"{exc.start}); save the file as UTF-8") from None
    return parse_quarantine(text, path, today)
