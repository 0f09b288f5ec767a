"""Starting and stopping a stand-in lab from the harness (`--board-lab=qemu:N[:coordinator]`).

The lab runs as its own process (``python -m wasmbed_hil.bench.lab up``), started through
bench.process.ServiceProcess, which waits for its ``ready`` line (an event, not a delay)
and stops it with SIGTERM (the lab then stops its QEMUs, exporter, ser2nets and
coordinator), SIGKILL to its process group if it does not end.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..process import ServiceProcess

SPEC = re.compile(r"^qemu:(\d+)(:coordinator)?$")


def parse_spec(spec: str) -> tuple[int, bool]:
    """``qemu:N`` (local) or ``qemu:N:coordinator`` -> (N, coordinator)."""
    match = SPEC.match(spec.strip())
    if match is None or not 1 <= int(match.group(1)) <= 64:
        raise ValueError(f"--board-lab {spec!r}: qemu:N or qemu:N:coordinator with N in 1..64")
    return int(match.group(1)), bool(match.group(2))


class LabProcess:
    """A stand-in lab in a temporary directory, for the time of a `with` block."""

    def __init__(self, boards: int, coordinator: bool = False, root: Path | None = None,
                 timeout: float = 120.0) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="wasmbed-lab-"))
        self.timeout = timeout
        argv = [sys.executable, "-m", "wasmbed_hil.bench.lab", "up", "--boards", str(boards),
                "--dir", str(self.root / "lab")]
        if coordinator:
            argv.append("--coordinator")
        if shutil.which("setpriv"):  # a harness killed outright takes its lab with it
            argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        self.service = ServiceProcess("lab", argv, self.root)
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        try:
            self.service.start(self.timeout)
        except AssertionError as exc:  # exited or timed out before its ready line
            log = (self.root / "lab.err.log")
            detail = log.read_text()[-2000:] if log.is_file() else ""
            self.close()
            raise RuntimeError(f"the stand-in lab did not start: {exc}\n{detail}") from exc
        assert self.service.ready is not None
        self.info = json.loads(self.service.ready.string.split(" ", 1)[1])
        return self.info

    def close(self) -> None:
        self.service.terminate(30.0)
        self.service.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> dict[str, Any]:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
