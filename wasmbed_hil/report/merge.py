"""One run from the results of N shards (`wasmbed-hil report --current A B ...`).

Each shard ran a disjoint part of the tests (`pytest --hil-shard K/N`), so the merged run is
the union of their tests. A test that two shards both report (same key, backend included:
`...#test_x@qemu` and `...#test_x@virtual` are two tests) means the shards overlapped, and a
report over them would count it once and hide the other result: that is an error, never
resolved silently. The environments are merged key by key; a key whose shards disagree
(their commit, say) shows every value, in shard order.
"""

from __future__ import annotations

from pathlib import Path

from .results import Run, RunReadError, load_run


class DuplicateTestError(RunReadError):
    """The same test in two of the runs being merged."""


def merge_runs(runs: list[Run]) -> Run:
    """The union of `runs` (at least one). DuplicateTestError when a test is in two."""
    if not runs:
        raise ValueError("merge_runs needs at least one run")
    if len(runs) == 1:
        return runs[0]
    tests = {}
    owner: dict[str, Path] = {}
    duplicates: list[str] = []
    for run in runs:
        for key, test in run.tests.items():
            if key in owner:
                duplicates.append(f"{test.display} (in {owner[key]} and {run.source})")
                continue
            owner[key] = run.source
            tests[key] = test
    if duplicates:
        shown = "; ".join(duplicates[:5])
        more = f"; and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        raise DuplicateTestError(
            f"{len(duplicates)} test{'s' if len(duplicates) != 1 else ''} reported by two "
            f"shards: {shown}{more}. Each test must run in exactly one shard (the same "
            "--hil-shard N and durations file on every shard)")
    # each key's distinct values in a list: a value holding ", " itself ("nrf52, rev 2")
    # must not hide another shard's part of it
    values: dict[str, list[str]] = {}
    for run in runs:
        for name, value in run.environment.items():
            seen = values.setdefault(name, [])
            if value not in seen:
                seen.append(value)
    environment = {name: ", ".join(seen) for name, seen in values.items()}
    kinds = {run.kind for run in runs}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    source = Path(" + ".join(str(run.source) for run in runs))
    return Run(source, kind, tests, environment, parts=[run.source for run in runs])


def load_runs(paths: list[Path]) -> Run:
    """load_run of each path, merged. RunReadError (DuplicateTestError) as those raise."""
    return merge_runs([load_run(path) for path in paths])
