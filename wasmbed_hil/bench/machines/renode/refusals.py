"""How Renode says no, where the driver and the probe both need to recognise it."""

from __future__ import annotations

import re

from ...errors import MachineError

#: Renode's refusal of a peripheral type it has no model of in a platform description:
#: "Error E04: Could not resolve type: 'X'." (src/Renode/PlatformDescription/
#: CreationDriver.cs:1899 at renode 06854d4d; ParsingError.cs ``TypeNotResolved = 4``).
MISSING_TYPE = re.compile(r"Could not resolve type: '([^']+)'")


class PortNotAnnounced(MachineError):
    """Renode was started with ``--port 0`` and announced port 0: the bound port is unknown."""


def missing_types(text: str) -> tuple[str, ...]:
    """The types Renode could not resolve, in the order named, once each."""
    return tuple(dict.fromkeys(MISSING_TYPE.findall(text)))
