"""Comparing a run with its baseline: what is new, fixed, flaky, slower, quarantined.

Rules for each test of the current run (B is the same test in the baseline):
- failing (failed or broken) and of category infrastructure -> `infrastructure`, never a
  regression;
- failing product, matched by an active quarantine entry -> `quarantined`;
- failing product, B a product failure -> `still_failing`;
- failing product otherwise (B passed, skipped, absent, an infrastructure failure, or there
  is no baseline) -> `new_failures`: these, and only these, fail the report (exit 1);
- passed after a failed attempt in this run -> `flaky`;
- passed, B a product failure -> `fixed`;
- passed, B passed, current duration > B's x (1 + threshold) and longer by more than
  min_delta seconds -> `slower`;
- skipped -> `skipped`;
- absent from a given baseline -> `new_tests` too; in the baseline only -> `removed`.
A test can be in two sections (flaky and fixed, new test and new failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .categories import FAILING, INFRASTRUCTURE, PASSED, PRODUCT, SKIPPED, STATUSES
from .quarantine import Quarantine, QuarantineEntry
from .results import CaseResult, Run

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_DELTA = 0.5

# Section name -> title, in report order.
SECTIONS = {
    "new_failures": "New failures",
    "infrastructure": "Infrastructure failures",
    "flaky": "Flaky",
    "slower": "Duration regressions",
    "fixed": "Fixed",
    "still_failing": "Still failing",
    "quarantined": "Quarantined",
    "new_tests": "New tests",
    "removed": "Removed tests",
    "skipped": "Skipped",
}
NEEDS_BASELINE = frozenset({"slower", "fixed", "still_failing", "new_tests", "removed"})


@dataclass
class Item:
    """A test in a section, with both of its results."""

    key: str
    current: CaseResult | None
    baseline: CaseResult | None
    quarantine: QuarantineEntry | None = None
    note: str = ""

    @property
    def test(self) -> CaseResult:
        result = self.current or self.baseline
        assert result is not None
        return result

    @property
    def ratio(self) -> float | None:
        if not (self.current and self.baseline) or self.baseline.duration_s <= 0:
            return None
        return self.current.duration_s / self.baseline.duration_s

    @property
    def delta_s(self) -> float:
        if not (self.current and self.baseline):
            return 0.0
        return self.current.duration_s - self.baseline.duration_s


@dataclass
class Comparison:
    current: Run
    baseline: Run | None
    sections: dict[str, list[Item]]
    threshold: float = DEFAULT_THRESHOLD
    min_delta: float = DEFAULT_MIN_DELTA
    quarantine: Quarantine | None = None
    # Quarantine entries that did not hold back a failure, with why (expired, no such
    # test, the test passed).
    quarantine_notes: list[tuple[QuarantineEntry, str]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.sections.items()}

    @property
    def exit_code(self) -> int:
        """1 when there is a new product failure that is not quarantined, else 0."""
        return 1 if self.sections["new_failures"] else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": str(self.baseline.source) if self.baseline else None,
            "threshold": self.threshold, "min_delta_s": self.min_delta,
            "quarantine": str(self.quarantine.path) if self.quarantine and
            self.quarantine.path else None,
            "exit_code": self.exit_code, "counts": self.counts,
            f"by_{GROUP_LABEL}": group_by_label(self.current),
            "sections": {name: [i.key for i in items] for name, items in self.sections.items()},
        }


GROUP_LABEL = "fault"  # the fault matrix's scenarios carry the fault they inject


def group_by_label(run: Run, label: str = GROUP_LABEL) -> dict[str, dict[str, int]]:
    """Status counts of the run's tests per value of `label` (tests without it are left
    out): {"power_cut": {"passed": 4, "failed": 1, ..., "total": 5}, ...}, sorted by value."""
    groups: dict[str, dict[str, int]] = {}
    for test in run.tests.values():
        for value in test.labels.get(label, []):
            counts = groups.setdefault(value, {s: 0 for s in (*STATUSES, "total")})
            counts[test.status] = counts.get(test.status, 0) + 1
            counts["total"] += 1
    return dict(sorted(groups.items()))


def is_slower(current: CaseResult, baseline: CaseResult, threshold: float,
              min_delta: float) -> bool:
    return (current.duration_s > baseline.duration_s * (1 + threshold)
            and current.duration_s - baseline.duration_s > min_delta)


def compare(current: Run, baseline: Run | None = None, quarantine: Quarantine | None = None,
            threshold: float = DEFAULT_THRESHOLD, min_delta: float = DEFAULT_MIN_DELTA
            ) -> Comparison:
    sections: dict[str, list[Item]] = {name: [] for name in SECTIONS}
    before = baseline.tests if baseline else {}
    matched: dict[QuarantineEntry, list[CaseResult]] = {}
    for key, test in current.tests.items():
        old = before.get(key)
        entry = quarantine.match(test) if quarantine else None
        if entry is not None:
            matched.setdefault(entry, []).append(test)
        old_product_failure = old is not None and old.failing and old.category == PRODUCT
        if test.failing:
            if test.category == INFRASTRUCTURE:
                sections["infrastructure"].append(Item(key, test, old))
            elif entry is not None and not entry.expired:
                sections["quarantined"].append(Item(key, test, old, entry))
            elif old_product_failure:
                sections["still_failing"].append(Item(key, test, old, entry, _expired(entry)))
            else:
                notes = [n for n in (_expired(entry), _was(old, baseline)) if n]
                sections["new_failures"].append(Item(key, test, old, entry, "; ".join(notes)))
        elif test.status == PASSED:
            if test.flaky:
                failed = sum(a.status in FAILING for a in test.attempts[:-1])
                sections["flaky"].append(Item(
                    key, test, old, note=f"passed on attempt {len(test.attempts)} after "
                    f"{failed} failed attempt{'s' if failed != 1 else ''}"))
            if old_product_failure:
                sections["fixed"].append(Item(key, test, old))
            elif (old is not None and old.status == PASSED
                  and is_slower(test, old, threshold, min_delta)):
                sections["slower"].append(Item(key, test, old))
        elif test.status == SKIPPED:
            sections["skipped"].append(Item(key, test, old))
        if baseline is not None and old is None:
            sections["new_tests"].append(Item(key, test, None))
    for key, old in before.items():
        if key not in current.tests:
            sections["removed"].append(Item(key, None, old))
    for name, items in sections.items():
        if name == "slower":
            items.sort(key=lambda i: (-i.delta_s, i.test.display))
        else:
            items.sort(key=lambda i: i.test.display)
    notes = []
    for entry in quarantine.entries if quarantine else []:
        tests = matched.get(entry, [])
        if entry.expired:
            notes.append((entry, f"expired on {entry.until}: no longer applied"))
        elif not tests:
            notes.append((entry, "matches no test of this run"))
        elif not any(t.failing for t in tests):
            notes.append((entry, "passed in this run: the entry may be removed"
                          if any(t.status == PASSED for t in tests) else "skipped in this run"))
    return Comparison(current, baseline, sections, threshold, min_delta, quarantine, notes)


def _expired(entry: QuarantineEntry | None) -> str:
    if entry is not None and entry.expired:
        return f"quarantine expired on {entry.until.isoformat() if entry.until else '?'}"
    return ""


def _was(old: CaseResult | None, baseline: Run | None) -> str:
    if baseline is None:
        return ""
    if old is None:
        return "new test"
    if old.failing:
        return "failed in the baseline for an infrastructure reason"
    return ""
