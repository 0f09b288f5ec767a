"""The HTML report of a run rendered by Allure 3 (the npm package `allure`), where node is.

`wasmbed-hil report` calls `generate`: Allure 3, pinned with its whole dependency tree and
their integrity hashes in `allure3/package-lock.json`, is installed by `npm ci` into a cache
directory on first use (`.cache/allure` or $WASMBED_ALLURE_CACHE; package scripts are not
run), then renders the Allure results into one self-contained `index.html` (Allure's
"awesome" report, single-file mode: it opens from disk, no server). The history of earlier
runs is carried in a JSON-lines file (Allure's `historyPath`) that each run appends to, so
the report shows trends, flaky and new tests across runs (the last HISTORY_LIMIT runs).

Allure 3 puts a Google Analytics tag into the page; `generate` takes it out, so that opening
a report sends nothing anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

VERSION = "3.18.0"  # the pin in allure3/package.json and its lock
ENV_CACHE = "WASMBED_ALLURE_CACHE"
DEFAULT_CACHE = Path(".cache/allure")
LOCK_FILES = ("package.json", "package-lock.json")
HISTORY_LIMIT = 20  # runs kept in the history file (one JSON line each, ~1 KiB per test)
INSTALL_TIMEOUT_S = 600.0
GENERATE_TIMEOUT_S = 600.0
_ANALYTICS = re.compile(
    r'\s*<script async src="https://www\.googletagmanager\.com/[^"]*"></script>'
    r"\s*<script>\s*window\.dataLayer.*?</script>", re.DOTALL)


class AllureError(Exception):
    """Allure 3 could not be installed or could not render the report."""


@dataclass(frozen=True)
class Generated:
    index: Path  # the report's index.html
    history: Path  # the history file it read and appended to
    damaged: int = 0  # lines of the history that could not be read, left out


def default_cache() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE)


def unavailable_reason() -> str | None:
    """Why Allure 3 cannot run here (no node or npm), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian: apt-get install nodejs npm)"
    return None


def _pinned(name: str) -> bytes:
    return resources.files(__package__).joinpath("allure3", name).read_bytes()


def executable(cache: Path) -> Path:
    """Allure 3's command in `cache`, installed with `npm ci` from the pinned lock unless
    that exact lock is installed there already. AllureError when npm fails."""
    binary = cache / "node_modules" / ".bin" / "allure"
    if binary.exists() and all((cache / name).is_file() and (cache / name).read_bytes()
                               == _pinned(name) for name in LOCK_FILES):
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    for name in LOCK_FILES:
        (cache / name).write_bytes(_pinned(name))
    npm = shutil.which("npm") or "npm"
    try:
        done = subprocess.run(
            [npm, "ci", "--prefix", str(cache), "--ignore-scripts", "--no-audit", "--no-fund",
             "--loglevel=error"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AllureError(f"npm ci of allure@{VERSION} into {cache} failed: {exc}") from None
    if done.returncode != 0 or not binary.exists():
        raise AllureError(f"npm ci of allure@{VERSION} into {cache} failed (exit "
                          f"{done.returncode}): {_last_line(done.stderr or done.stdout)}")
    return binary


def generate(results: Path | list[Path], out_dir: Path, history: Path, name: str,
             cache: Path | None = None) -> Generated:
    """Render the Allure results in `results` (one directory, or the shards' directories:
    one report of them all) into `out_dir`/index.html (replacing what was there), reading
    and appending to `history`. AllureError when it cannot."""
    reason = unavailable_reason()
    if reason:
        raise AllureError(reason)
    # resolved: npm ci fails ("Missing: allure@ from lock file") on a prefix reached through
    # a symbolic link (a .cache linked to a shared one)
    binary = executable((cache or default_cache()).resolve())
    out_dir = out_dir.absolute()
    history = history.absolute()
    history.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    # Allure reads and rewrites a copy, which replaces the history once the report is made:
    # a run killed (or a disk full) while Allure wrote it left a cut line, and Allure fails
    # on a history it cannot parse, in every later run
    work = history.with_name(f".{history.name}.{os.getpid()}.tmp")
    try:
        damaged = _readable_history(history, work)
        done, index = _generate(binary, results, out_dir, work, name)
        if done.returncode == 0 and index.is_file() and work.is_file():
            os.replace(work, history)
    finally:
        work.unlink(missing_ok=True)
    if done.returncode != 0 or not index.is_file():
        raise AllureError(f"allure generate failed (exit {done.returncode}): "
                          f"{_last_line(done.stderr or done.stdout)}")
    index.write_text(_ANALYTICS.sub("", index.read_text(encoding="utf-8")), encoding="utf-8")
    return Generated(index, history, damaged)


def _readable_history(history: Path, into: Path) -> int:
    """The lines of `history` that are JSON objects, into `into` (nothing when there is no
    history yet); how many were not, left out."""
    try:
        lines = history.read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    kept, damaged = [], 0
    for line in filter(bytes.strip, lines):
        try:
            readable = isinstance(json.loads(line), dict)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            readable = False
        if readable:
            kept.append(line + b"\n")
        else:
            damaged += 1
    into.write_bytes(b"".join(kept))
    return damaged


def _generate(binary: Path, results: Path | list[Path], out_dir: Path, history: Path,
              name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    config = {"name": name, "output": str(out_dir), "historyPath": str(history),
              "historyLimit": HISTORY_LIMIT,
              "plugins": {"awesome": {"options": {"singleFile": True, "reportName": name}}}}
    with tempfile.TemporaryDirectory(prefix="wasmbed-allure-") as scratch:
        rc = Path(scratch) / "allurerc.json"
        rc.write_text(json.dumps(config))
        source = (_gather(results, Path(scratch) / "results") if isinstance(results, list)
                  else results.absolute())
        try:
            done = subprocess.run(
                [str(binary), "generate", str(source), "--config", str(rc),
                 "--output", str(out_dir)],
                capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S, cwd=scratch,
                env={**os.environ, "NO_COLOR": "1"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AllureError(f"allure generate failed: {exc}") from None
    return done, out_dir / "index.html"


def _gather(directories: list[Path], into: Path) -> Path:
    """One results directory holding the files of several (Allure's way of merging runs:
    results, containers and attachments are named by UUID), linked where the file system
    allows, else copied. Of the other files (environment.properties, categories.json...)
    the first directory's is kept. AllureError when two directories hold a result,
    container or attachment of one name with different contents."""
    into.mkdir()
    for directory in directories:
        for file in sorted(directory.iterdir()):
            if not file.is_file():
                continue
            target = into / file.name
            if target.exists():
                uuid_named = file.name.endswith(("-result.json", "-container.json")) or (
                    "-attachment" in file.name)
                if uuid_named and target.read_bytes() != file.read_bytes():
                    raise AllureError(f"{file.name} is in two results directories with "
                                      f"different contents (the second: {directory})")
                continue
            try:
                os.link(file, target)
            except OSError:
                shutil.copyfile(file, target)
    return into


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
