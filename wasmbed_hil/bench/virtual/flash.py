"""The virtual device's persistent "flash": a directory that survives reboots.

Layout (version 1):
    identity/            key.pem, cert.pem, ca.pem (+ DER copies): the device's credentials
    state.json           {"version": 1, "device_id": hex | null}
    modules/<sha256>.wasm  complete, verified modules
    partial/<sha256>.part  a transfer in progress: its size is the resume offset
    apps.json            {app_id: {"digest", "name", "limits": [memory, fuel, timeout_ms]}}
Every JSON write goes to a temporary file renamed over the old one, so a power cut leaves
either the old or the new state, never half of one.

One Flash object owns its modules: it keeps the bytes they use in memory (counted at the
first use, recounted after its own writes), since a heartbeat reports the free memory and
reading the directory for it at each one cost a fleet of 1,000 devices several per cent of
the loop. The state and the applications are read from their files at each use, so a
corrupted file is seen as such.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...files import write_atomic

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class InstalledApp:
    app_id: str
    digest: bytes
    name: str
    limits: tuple[int, int, int]


class Flash:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity_dir = root / "identity"
        self.modules = root / "modules"
        self.partial = root / "partial"
        for d in (self.root, self.modules, self.partial):
            d.mkdir(parents=True, exist_ok=True)
        self._used: int | None = None

    # -- device id -----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.exists():
            return {"version": LAYOUT_VERSION, "device_id": None}
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {"version": LAYOUT_VERSION, "device_id": None}
        return state if isinstance(state, dict) else {"version": LAYOUT_VERSION}

    @property
    def device_id(self) -> bytes | None:
        value = self._state().get("device_id")
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            return None
        return raw if raw is not None and len(raw) == 16 else None

    @device_id.setter
    def device_id(self, value: bytes | None) -> None:
        state = {"version": LAYOUT_VERSION, "device_id": value.hex() if value else None}
        write_atomic(self.root / "state.json", json.dumps(state).encode())

    # -- modules -------------------------------------------------------------------------
    def module_path(self, digest: bytes) -> Path:
        return self.modules / f"{digest.hex()}.wasm"

    def has_module(self, digest: bytes) -> bool:
        return self.module_path(digest).exists()

    def read_module(self, digest: bytes) -> bytes:
        return self.module_path(digest).read_bytes()

    def partial_size(self, digest: bytes) -> int:
        path = self.partial / f"{digest.hex()}.part"
        return path.stat().st_size if path.exists() else 0

    def append_partial(self, digest: bytes, offset: int, data: bytes) -> int:
        """Write data at offset (which must be the current size); returns the new size."""
        path = self.partial / f"{digest.hex()}.part"
        self._used = None
        with path.open("ab") as fh:
            if fh.tell() != offset:
                raise ValueError(f"chunk at {offset}, partial module holds {fh.tell()} bytes")
            fh.write(data)
            return fh.tell()

    def finish_partial(self, digest: bytes) -> bool:
        """Verify the partial module's SHA-256 and keep it; False (and discard) on mismatch."""
        path = self.partial / f"{digest.hex()}.part"
        self._used = None
        data = path.read_bytes()
        if hashlib.sha256(data).digest() != digest:
            path.unlink()
            return False
        os.replace(path, self.module_path(digest))
        return True

    def drop_partial(self, digest: bytes) -> None:
        self._used = None
        (self.partial / f"{digest.hex()}.part").unlink(missing_ok=True)

    def used_bytes(self) -> int:
        if self._used is None:
            self._used = sum(p.stat().st_size for p in self.modules.glob("*.wasm")) + sum(
                p.stat().st_size for p in self.partial.glob("*.part"))
        return self._used

    # -- applications --------------------------------------------------------------------
    def apps(self) -> dict[str, InstalledApp]:
        path = self.root / "apps.json"
        if not path.exists():
            return {}
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                return {}
            return {
                app_id: InstalledApp(
                    app_id, bytes.fromhex(v["digest"]), v["name"], tuple(v["limits"])
                )  # type: ignore[arg-type]
                for app_id, v in raw.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def save_apps(self, apps: dict[str, InstalledApp]) -> None:
        raw = {
            a.app_id: {"digest": a.digest.hex(), "name": a.name, "limits": list(a.limits)}
            for a in apps.values()
        }
        write_atomic(self.root / "apps.json", json.dumps(raw).encode())

    def remove_module_if_unused(self, digest: bytes) -> None:
        if all(a.digest != digest for a in self.apps().values()):
            self._used = None
            self.module_path(digest).unlink(missing_ok=True)
