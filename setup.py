"""The wheel carries what the pytest plugin needs at run time besides the Python code: the
firmware sources, the Renode scripts, the CRDs and the Robot resource file. They stay where
they are in the repository (top-level firmware/, renode/, deploy/crds/, robot/); this build
step copies them into the package (wasmbed_hil/_data/..., and wasmbed_hil/robot/
wasmbed.resource), where wasmbed_hil/resources.py finds them when installed. The sdist
carries the same trees (MANIFEST.in). Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (source in the repository, destination inside the built package)
TREES = [
    ("firmware", "wasmbed_hil/_data/firmware"),
    ("renode", "wasmbed_hil/_data/renode"),
    ("deploy/crds", "wasmbed_hil/_data/crds"),
]
FILES = [("robot/wasmbed.resource", "wasmbed_hil/robot/wasmbed.resource")]
# Build output and local state, never shipped (firmware/build/, firmware/fuzz/build/, ...).
IGNORE = shutil.ignore_patterns("build", "__pycache__", "*.pyc", ".west", ".stamp-*",
                                "*.o", "*.a", "*.elf", ".lock")


class BuildPyWithData(build_py):
    """build_py, then the repository's run-time trees copied into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the checkout and finds the trees there
        out = Path(self.build_lib)
        for src, dest in TREES:
            target = out / dest
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / src, target, ignore=IGNORE)
        for src, dest in FILES:
            (out / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, out / dest)


setup(cmdclass={"build_py": BuildPyWithData})
