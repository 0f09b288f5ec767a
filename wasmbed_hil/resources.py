"""Where the files the harness needs at run time are: the firmware sources, the Renode scripts,
the CRDs and the Robot resource file, and where the firmware is built.

From a checkout (an editable install, or the sources on sys.path) they are the repository's
own top-level directories (firmware/, renode/, deploy/crds/, robot/wasmbed.resource) and the
firmware is built where it always was (firmware/build/, deps in .cache/firmware-deps/).
From an installed wheel they are the copies the build put into the package
(wasmbed_hil/_data/..., see setup.py) and the firmware is built into a per-user cache,
never into site-packages: ``$WASMBED_HIL_CACHE``, else ``$XDG_CACHE_HOME/wasmbed-hil/<version>``,
else ``~/.cache/wasmbed-hil/<version>``. ``$WASMBED_HIL_CACHE`` moves the build and the deps
from a checkout too.

The bottom layer: imports nothing of the package.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "wasmbed-hil"
CACHE_ENV = "WASMBED_HIL_CACHE"

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
DATA_DIR = _PACKAGE / "_data"  # the packaged copies (only in a built wheel)


@cache
def from_checkout() -> bool:
    """True when this package runs from a repository checkout (the top-level firmware/ sits
    beside it), False when it is an installed copy."""
    return ((_CHECKOUT / "pyproject.toml").is_file()
            and (_CHECKOUT / "firmware" / "Makefile").is_file())


def package_version() -> str:
    """The installed distribution's version (``0+unknown`` if it is not installed at all)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def checkout_commit() -> str | None:
    """The short git commit of the checkout this package runs from, if it runs from one."""
    return git_commit(_CHECKOUT) if from_checkout() else None


def git_commit(directory: Path) -> str | None:
    """The short commit of the git work tree holding ``directory`` (None: not in one, or no
    git), with ``+dirty`` when tracked files have changes."""
    try:
        head = subprocess.run(["git", "-C", str(directory), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _located(checkout: Path, packaged: Path) -> Path:
    # Only a path: an incomplete installation is reported by whoever needs the file.
    return checkout if from_checkout() else packaged


def firmware_dir() -> Path:
    """The firmware sources (the directory with the Makefile)."""
    return _located(_CHECKOUT / "firmware", DATA_DIR / "firmware")


def renode_dir() -> Path:
    """The Renode platform description and scripts (mps2-an385.repl, *.resc, boards/)."""
    return _located(_CHECKOUT / "renode", DATA_DIR / "renode")


def crds_dir() -> Path:
    """The CustomResourceDefinitions generated from the models (kube/crdgen.py)."""
    return _located(_CHECKOUT / "deploy" / "crds", DATA_DIR / "crds")


def robot_resource() -> Path:
    """The Robot Framework resource file (``Resource    <this path>``). Installed, it is also
    found on Robot's module search path as ``wasmbed_hil/robot/wasmbed.resource``."""
    return _located(_CHECKOUT / "robot" / "wasmbed.resource",
                    _PACKAGE / "robot" / "wasmbed.resource")


def cache_dir() -> Path:
    """The per-user cache the firmware is built in when installed (see the module's doc).
    Not created here."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            raise ValueError(f"{CACHE_ENV}={explicit!r}: give an absolute path")
        return path
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / DISTRIBUTION / package_version()


def firmware_build_dir() -> Path:
    """Where the firmware images are built: firmware/build/ in a checkout (unless
    $WASMBED_HIL_CACHE is set), else <cache_dir>/firmware/build."""
    if from_checkout() and not os.environ.get(CACHE_ENV):
        return _CHECKOUT / "firmware" / "build"
    return cache_dir() / "firmware" / "build"


def firmware_deps_dir() -> Path:
    """The pinned third-party firmware sources (firmware/deps.lock, fetched by
    firmware/scripts/fetch_deps.py): .cache/firmware-deps in a checkout (unless
    $WASMBED_HIL_CACHE is set), else <cache_dir>/firmware-deps."""
    if from_checkout() and not os.environ.get(CACHE_ENV):
        return _CHECKOUT / ".cache" / "firmware-deps"
    return cache_dir() / "firmware-deps"
