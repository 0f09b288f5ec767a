"""One way to replace a file's contents: written beside it, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` (permissions `mode`) so that a reader sees the old file or
    the new one whole, never a part: a write cut short (a full disk, a killed process)
    leaves the old file and no temporary one. The temporary file is unique (concurrent
    writers of one path do not share it) and created 0600, so data meant to be private (a
    key) is never readable by others on its way. Raises OSError."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
