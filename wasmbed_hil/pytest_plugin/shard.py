"""`--hil-shard K/N`: run the K-th of N shards of the collected tests.

The split is pytest-split's `least_duration` algorithm: the longest test first, each to the
shard with the least recorded time so far, so the shards take about as long as one another;
a test without a recorded duration counts as the average of those that have one, and with
no durations at all every test counts the same. Every test goes to exactly one shard.

The split depends on nothing but the collected node ids and the durations file: the tests
are sorted by node id before they are split (pytest-split alone takes them in collection
order, which a plugin such as pytest-randomly changes per process), so every machine and
every pytest-xdist worker (they must all run the same tests) computes the same shards. The
shard then runs its tests in the order they were collected.

Durations are per backend (a scenario takes far longer on qemu than on the virtual backend,
and node ids do not name the backend): `<rootdir>/.test_durations.<backend>.json` unless
pytest-split's `--durations-path` says otherwise. pytest-split's `--store-durations` records
them (merged into the file; `--clean-durations` replaces it), from the process that runs the
session only: pytest-xdist's workers would race to write the same file.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

DEFAULT_NAME = ".test_durations"  # pytest-split's --durations-path: this in the cwd
_SHARD = re.compile(r"(\d+)/(\d+)")
SHARD = pytest.StashKey[tuple[int, int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("wasmbed-hil").addoption(
        "--hil-shard", metavar="K/N", default=None,
        help="run only shard K of N (1 <= K <= N), balanced by the recorded durations of "
        "the chosen backend (<rootdir>/.test_durations.<backend>.json, written by "
        "--store-durations); N runs with K = 1..N run every test exactly once")


def parse_shard(text: str) -> tuple[int, int]:
    """(K, N) of `K/N`; pytest.UsageError unless 1 <= K <= N."""
    match = _SHARD.fullmatch(text.strip())
    if not match:
        raise pytest.UsageError(f"--hil-shard={text}: expected K/N, e.g. 1/2")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--hil-shard={text}: K must be between 1 and N")
    return k, n


def durations_path(rootdir: Path, backend: str) -> Path:
    """Where the durations of `backend`'s runs are recorded by default."""
    return rootdir / f"{DEFAULT_NAME}.{backend}.json"


def load_durations(path: Path) -> dict[str, float]:
    """node id -> seconds from a pytest-split durations file; {} when there is none.
    pytest.UsageError when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise pytest.UsageError(f"{path}: not a readable durations file: {exc}") from None
    if isinstance(data, list) and all(isinstance(d, list) and len(d) == 2 for d in data):
        data = dict(data)  # pytest-split's old format: [[nodeid, seconds], ...]
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v) and v >= 0 for k, v in data.items()):
        raise pytest.UsageError(f"{path}: not a durations file (node id -> seconds >= 0)")
    return {k: float(v) for k, v in data.items()}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Before pytest-split's own pytest_configure reads the options: the backend's
    durations file, recorded by the controller alone, and --hil-shard checked."""
    option = config.option
    if not hasattr(option, "durations_path"):  # pytest-split absent, or -p no:pytest_split
        if config.getoption("--hil-shard"):
            raise pytest.UsageError("--hil-shard needs pytest-split: "
                                    "pip install 'wasmbed-hil[bench]'")
        return
    if option.durations_path in (DEFAULT_NAME, os.path.join(os.getcwd(), DEFAULT_NAME)):
        option.durations_path = str(durations_path(config.rootpath,
                                                   str(config.getoption("--hil-backend"))))
    if getattr(config, "workerinput", None) is not None:
        option.store_durations = False  # the controller writes the file, once
    text = config.getoption("--hil-shard")
    if text is None:
        return
    if option.splits is not None or option.group is not None:
        raise pytest.UsageError("--hil-shard and pytest-split's --splits/--group: give one")
    config.stash[SHARD] = parse_shard(text)


class _Named(Protocol):
    @property
    def nodeid(self) -> str: ...


Item = TypeVar("Item", bound=_Named)


def select(items: list[Item], durations: dict[str, float], k: int, n: int
           ) -> tuple[list[Item], float]:
    """Shard `k` of `n` of `items` (in their order) and its estimated seconds: the same for
    any order of the same items."""
    from pytest_split.algorithms import Algorithms

    # pytest-split keeps a list per shard and each test in every other shard's (time and
    # memory of tests x N: --hil-shard 1/1000000000 never ends). Shards past the number of
    # tests get none, whatever the durations, so they are not computed: the same split.
    splits = max(1, min(n, len(items)))
    if k > splits:
        return [], 0.0
    ordered = sorted(items, key=lambda item: item.nodeid)
    group = Algorithms.least_duration.value(splits, ordered, durations)[k - 1]
    chosen = {item.nodeid for item in group.selected}
    return [item for item in items if item.nodeid in chosen], group.duration


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARD not in config.stash:
        return
    k, n = config.stash[SHARD]
    durations = load_durations(Path(config.option.durations_path))
    selected, estimate = select(items, durations, k, n)
    chosen = {item.nodeid for item in selected}
    config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in chosen])
    total = len(items)
    items[:] = selected
    recorded = len(durations.keys() & {item.nodeid for item in items})
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and getattr(config, "workerinput", None) is None:
        reporter.write_line(
            f"wasmbed-hil: shard {k}/{n}: {len(items)} of {total} tests, estimated "
            f"{estimate:.1f} s ({recorded} of them with a duration in "
            f"{config.option.durations_path})")
