"""Infrastructure failures told from product failures.

A failing test is `infrastructure` (the bench failed: an emulator, a port, the toolchain) or
`product` (the gateway, the devices or the control plane misbehaved). The pytest plugin
records the answer in the label (JUnit property) `failure_category`; when that label is
present it decides. Without it (older runs, tests outside the harness) the guess is
conservative: only a `broken` test (an unexpected exception, not a failed assertion) whose
message names one of INFRASTRUCTURE_MARKERS is taken for infrastructure; everything else is
product, so a guess can never hide a regression behind "the bench was flaky".
"""

from __future__ import annotations

INFRASTRUCTURE = "infrastructure"
PRODUCT = "product"
CATEGORY_LABEL = "failure_category"

PASSED = "passed"
FAILED = "failed"  # an assertion did not hold
BROKEN = "broken"  # an unexpected exception
SKIPPED = "skipped"
STATUSES = (PASSED, FAILED, BROKEN, SKIPPED)
FAILING = frozenset({FAILED, BROKEN})

# Substrings of a broken test's message that point at the bench, not the product. The first
# five are the harness's own exception names; the others are the host running out of
# something (as in the plugin's categories.json).
INFRASTRUCTURE_MARKERS = (
    "BackendUnavailable",
    "MachineError",
    "MachineDied",
    "InfrastructureError",
    "FirmwareBuildError",
    "Address already in use",
    "Too many open files",
    "emulator",
)


def categorize(status: str, labels: dict[str, list[str]], message: str) -> tuple[str | None, str]:
    """(category, why) of a test's final outcome; category is None when it did not fail.

    `why` says where the answer came from: "label", "marker: <marker>" or "default".
    """
    if status not in FAILING:
        return None, ""
    for value in labels.get(CATEGORY_LABEL, []):
        value = value.strip().lower()
        if value in (INFRASTRUCTURE, PRODUCT):
            return value, "label"
    if status == BROKEN:
        for marker in INFRASTRUCTURE_MARKERS:
            if marker.lower() in message.lower():
                return INFRASTRUCTURE, f"marker: {marker}"
    return PRODUCT, "default"
