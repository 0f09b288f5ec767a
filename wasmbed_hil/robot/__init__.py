"""Robot Framework keywords for wasmbed-hil.

Import in a suite or resource file with::

    Library    wasmbed_hil.robot.WasmbedLibrary    backend=${BACKEND}    timeout=10s

or, with defaults and higher-level keywords, ``Resource    robot/wasmbed.resource``.
See robot/README.md for the keyword list and how it sits beside Renode's keywords.

Layout: `library.py` holds the library (lifecycle, cleanup listener, scopes, the names of
gateways and devices); `keywords/` its keywords by concern (gateways, devices, waits,
deployment, console); `arguments.py` turns Robot's arguments into Python values.
"""

from .library import WasmbedLibrary

__all__ = ["WasmbedLibrary"]
