#!/usr/bin/env python3
"""Fetch the pinned firmware dependencies (firmware/deps.lock) into an ignored cache, check
their SHA-256 and unpack them.

    python3 firmware/scripts/fetch_deps.py [--cache DIR]

--cache defaults to .cache/firmware-deps of the checkout; an installed copy of these sources
(inside wasmbed-hil's package) has no default: the harness passes its per-user cache, so
nothing is written into site-packages.

Prints the directory of each unpacked dependency. Safe to repeat: a file already present
with the right hash is not downloaded again. A download that fails says which version was
wanted and, for Debian source packages, which versions the archive offers now (Debian keeps
only the current one: a security update replaces the pinned version).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent
DEBIAN_SRC = "deb-src http://deb.debian.org/debian trixie main\n"


@dataclass(frozen=True)
class Dep:
    name: str
    kind: str
    version: str
    file: str
    sha256: str


class FetchError(RuntimeError):
    pass


def read_lock(path: Path) -> list[Dep]:
    deps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 5 or parts[1] not in ("debsrc", "pypi") or len(parts[4]) != 64:
            raise FetchError(f"{path}:{number}: expected 'name kind version file sha256'")
        deps.append(Dep(*parts))
    return deps


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise FetchError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def fetch_debsrc(dep: Dep, downloads: Path) -> None:
    package = dep.name
    apt = downloads / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(DEBIAN_SRC)
    opts = [
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
    ]
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get is needed to fetch Debian source packages")
    _run(["apt-get", *opts, "update", "-qq"], "apt-get update (private trixie deb-src list)")
    proc = subprocess.run(
        ["apt-get", *opts, "source", "--download-only", f"{package}={dep.version}"],
        cwd=downloads, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        offered = subprocess.run(
            ["apt-cache", *opts, "showsrc", package], capture_output=True, text=True
        ).stdout
        versions = sorted({ln.split(":", 1)[1].strip() for ln in offered.splitlines()
                           if ln.startswith("Version:")})
        raise FetchError(
            f"{package} {dep.version} is no longer in Debian's archive (it keeps only the "
            f"current version). Offered now: {', '.join(versions) or 'none'}. Move the pin in "
            f"firmware/deps.lock (version, file and sha256 together)."
        )


def fetch_pypi(dep: Dep, downloads: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads),
           dep.version]
    cmd += ["--no-binary", ":all:"] if dep.file.endswith(".tar.gz") else ["--only-binary", ":all:"]
    _run(cmd, f"pip download {dep.version}")


def unpack(archive: Path, dest: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if dest.exists():
            shutil.rmtree(dest)
        root.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch(dep: Dep, cache: Path) -> Path:
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / dep.file
    dest = cache / dep.name
    stamp = dest / ".wasmbed-sha256"
    if stamp.exists() and stamp.read_text() == dep.sha256:
        return dest
    if not archive.exists() or sha256(archive) != dep.sha256:
        (fetch_debsrc if dep.kind == "debsrc" else fetch_pypi)(dep, downloads)
    if not archive.exists():
        raise FetchError(f"{dep.name}: download did not produce {dep.file}")
    actual = sha256(archive)
    if actual != dep.sha256:
        archive.unlink()
        raise FetchError(
            f"{dep.name}: SHA-256 of {dep.file} is {actual}, deps.lock pins {dep.sha256}"
        )
    unpack(archive, dest)
    stamp.write_text(dep.sha256)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    checkout = (FIRMWARE.parent / "pyproject.toml").is_file()
    parser.add_argument("--cache", type=Path,
                        default=FIRMWARE.parent / ".cache" / "firmware-deps" if checkout else None,
                        help="where to fetch and unpack (default in a checkout: "
                        ".cache/firmware-deps)")
    parser.add_argument("--lock", type=Path, default=FIRMWARE / "deps.lock")
    args = parser.parse_args()
    if args.cache is None:
        parser.error("--cache DIR is required outside a checkout (an installed wasmbed-hil "
                     "passes its per-user cache)")
    args.cache.mkdir(parents=True, exist_ok=True)
    # Builds run in parallel (test workers, make -j): one fetch at a time per cache.
    with (args.cache / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for dep in read_lock(args.lock):
                print(f"{dep.name}={fetch(dep, args.cache)}")
        except FetchError as exc:
            print(f"fetch_deps: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
