"""Small file helpers: atomic writes with a chosen mode, reads that raise PkiError."""

from __future__ import annotations

from pathlib import Path

from ..files import write_atomic
from .errors import PkiError


def make_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) if needed; PkiError if that fails."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create directory {directory}: {exc}") from exc
    return directory


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (files.write_atomic:
    a private key is never readable by others on its way); PkiError if that fails."""
    try:
        write_atomic(Path(path), data, mode)
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc}") from exc


def read_file(path: Path) -> bytes:
    """Return the bytes of ``path``; PkiError if it is missing or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"missing file {path}") from exc
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc}") from exc
