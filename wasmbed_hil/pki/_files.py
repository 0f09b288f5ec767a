"""Small file helpers: atomic writes with a chosen mode, reads that raise PkiError."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

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
    """Write ``data`` to ``path`` atomically (temp file + rename) with permissions ``mode``.

    The temporary file is created 0600, so a private key is never readable by others.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise PkiError(f"cannot write {path}: {exc}") from exc
        raise


def read_file(path: Path) -> bytes:
    """Return the bytes of ``path``; PkiError if it is missing or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"missing file {path}") from exc
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc}") from exc
