"""Robot Framework keywords for wasmbed-hil.

Import in a suite or resource file with::

    Library    wasmbed_hil.robot.WasmbedLibrary    backend=${BACKEND}    timeout=10s

or, with defaults and higher-level keywords, ``Resource    robot/wasmbed.resource``.
See robot/README.md for the keyword list and how it sits beside Renode's keywords.
"""

from .keywords import WasmbedLibrary

__all__ = ["WasmbedLibrary"]
