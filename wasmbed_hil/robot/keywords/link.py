"""The device's link: impairments on its byte path to the gateway, on every backend."""

from __future__ import annotations

from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from .. import arguments
from ..arguments import Timeout
from .component import LibraryComponent

# Parameters given in Robot's time format ("50ms", "2s"); the others are numbers or text.
TIME_PARAMETERS = ("delay", "jitter", "start", "duration")


class LinkKeywords(LibraryComponent):
    @keyword
    def impair_link(self, kind: str, device: str | None = None, **params: Any) -> str:
        """Applies a link impairment to a device's link (its byte path to the gateway: the
        bridge on firmware backends, a relay on virtual ones) until `Restore Link` or, with
        ``duration``, until that has passed. Several stack, in the order applied. Returns a
        description of it.

        ``kind`` and its parameters (times in Robot's format, e.g. ``50ms``):
        | latency    | ``delay``, ``jitter``, ``seed``                                      |
        | bandwidth  | ``bytes_per_s``, or ``baud`` (a UART: 115200 baud = 11520 bytes/s)   |
        | partition  | (none): open connections cut, new ones refused                       |
        | half-open  | ``direction`` (up: device -> gateway, down): its bytes dropped       |
        | reset      | (none): connections cut with a TCP RST, once                         |
        | corrupt    | ``direction``, ``offsets`` (e.g. ``8,100``) and/or ``rate``, ``seed`` |
        | stall      | ``direction`` (default both): bytes held, released in order at the end |
        Every kind also takes ``start`` (a delay), or ``after_bytes`` with
        ``after_direction``, and ``duration``; most take ``direction``.

        | Impair Link    latency    delay=50ms    jitter=10ms    seed=1
        | Impair Link    bandwidth    baud=115200
        | Impair Link    partition    duration=2s
        | Impair Link    corrupt    direction=down    offsets=8
        """
        dev = self.ctx.device(device)
        values = {
            name: arguments.seconds(value, 0.0) if name in TIME_PARAMETERS
            else arguments.coerce(value)
            for name, value in params.items()
        }
        if isinstance(values.get("offsets"), int):  # a single offset read as a number
            values["offsets"] = [values["offsets"]]
        impairment = dev.handle.link.apply(kind, **values)
        logger.info(f"{dev.name}: link impaired: {impairment!r}")
        return repr(impairment)

    @keyword
    def restore_link(self, device: str | None = None) -> None:
        """Takes every impairment off a device's link; what they held goes on, in order."""
        self.ctx.device(device).handle.link.clear()

    @keyword
    def wait_until_link_restored(self, device: str | None = None,
                                 timeout: Timeout = None) -> None:
        """Waits until the impairments with a ``duration`` on a device's link have ended
        (fails at once if one without a duration is in force: only `Restore Link` ends it)."""
        self.ctx.device(device).handle.link.wait_restored(self.seconds(timeout))
