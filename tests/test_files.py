"""files.write_atomic: the one way the package replaces a file's contents."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wasmbed_hil import files
from wasmbed_hil.files import write_atomic


def test_the_file_is_replaced_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    write_atomic(path, b"new contents", 0o600)
    assert path.read_bytes() == b"new contents"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, b"x")  # 0644 unless told
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


def test_a_write_cut_short_leaves_the_old_file_and_no_temporary_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.html"
    path.write_bytes(b"the old report")

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"the new one")
    assert path.read_bytes() == b"the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_the_temporary_file_is_private_and_unique(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append((Path(src).name, stat.S_IMODE(os.stat(src).st_mode)))
        replace(src, dst)

    monkeypatch.setattr(files.os, "replace", spy)
    path = tmp_path / "junit.xml"
    write_atomic(path, b"a", 0o600)
    write_atomic(path, b"b", 0o600)
    (first, mode), (second, _) = seen
    assert first != second and first.startswith(".junit.xml.") and mode == 0o600
    with pytest.raises(FileNotFoundError):  # no directory: nothing created
        write_atomic(tmp_path / "missing" / "f", b"x")
