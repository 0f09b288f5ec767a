"""What the source must be to run on every Python the package admits (requires-python >= 3.11),
checked on the one CI runs: Python 3.13's compiler strips the indentation of docstrings and
encodes them as UTF-8 to do so, so a docstring holding a lone surrogate (a `"\\ud800"` written
unescaped) made `import wasmbed_hil.cli` fail there with UnicodeEncodeError, while 3.11
compiled it (benchmarks/README.md, "The platform")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("wasmbed_hil", "tests", "suites", "benchmarks", "robot")
                 for p in (ROOT / d).rglob("*.py"))


def _docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((getattr(node, "lineno", 1), doc))
    return found


def _problems(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, doc in _docstrings(ast.parse(path.read_bytes(), str(path))):
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.append(f"{path.relative_to(root)}:{line}: a docstring holds "
                            f"{doc[exc.start]!r}, which Python 3.13 cannot compile: escape it")
    return problems


def test_every_docstring_is_valid_utf8_text() -> None:
    assert len(SOURCES) > 100
    assert [p for path in SOURCES for p in _problems(path)] == []


def test_the_check_finds_the_docstring_3_13_refused(tmp_path: Path) -> None:
    bad = tmp_path / "report.py"
    bad.write_text('def f():\n    """JSON\'s "\\ud800" in a result."""\n')
    assert _problems(bad, tmp_path) == [
        "report.py:1: a docstring holds '\\ud800', which Python 3.13 cannot compile: escape it"]
