"""Message faults at the gateway: drop, delay, duplicate, reorder or corrupt chosen messages."""

from __future__ import annotations

from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from ...bench.gateway import GatewayHandle
from ...bench.message_faults import MessageFaults, fault_from_words
from ...protocol import Direction
from ..arguments import Timeout
from .component import LibraryComponent


class MessageFaultKeywords(LibraryComponent):
    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        # gateway name -> (its handle, its rules); a later test's gateway of the same name
        # is another handle, and a restarted gateway lost its rules: both make it stale.
        self._installed: dict[str, tuple[GatewayHandle, MessageFaults]] = {}

    def _faults(self, name: str, handle: GatewayHandle) -> MessageFaults | None:
        entry = self._installed.get(name)
        if entry is None:
            return None
        if entry[0] is not handle or not entry[1].active:
            del self._installed[name]
            return None
        return entry[1]

    @keyword
    def inject_message_fault(
        self,
        action: str,
        message: str,
        nth: int | None = None,
        rate: float | None = None,
        seconds: Timeout = None,
        copies: int | None = None,
        mode: str | None = None,
        hold: Timeout = None,
        direction: str | None = None,
        device: str | None = None,
        limit: int | None = None,
        seed: int = 0,
        gateway: str | None = None,
    ) -> None:
        """Installs one message fault rule on a gateway (default: the current one) until
        `Clear Message Faults` or the end of the test that started the gateway.

        ``action``: ``drop``, ``delay`` (``seconds``), ``duplicate`` (``copies``, default 1),
        ``reorder`` (held until the next message that way, at most ``hold``, default 2 s) or
        ``corrupt`` (``mode`` ``envelope``: the receiver sees a malformed message, default;
        ``last-byte``: its last byte inverted). ``message``: a message type (``DeployChunk``,
        ``ChunkAck``, ``HeartbeatAck``...) or ``reply to TYPE`` (the gateway's or the device's
        reply to that request). ``nth``: only the nth such message of each device (from 1);
        ``rate``: each one with that probability (random from ``seed``); neither: every one.
        ``device``: only that device (its name); ``limit``: at most that many per device.
        ``direction`` (``device->gateway`` or ``gateway->device``) only for ``Error``.

        | Inject Message Fault    drop         DeployChunk    nth=5
        | Inject Message Fault    delay        HeartbeatAck   nth=2    seconds=300ms
        | Inject Message Fault    duplicate    reply to Heartbeat    rate=0.5    seed=7
        """
        name, handle = self.ctx.gateway(gateway)
        if self._faults(name, handle) is not None:
            raise AssertionError(
                f"gateway {name!r} has message faults already: 'Clear Message Faults' first")
        options: dict[str, Any] = {}
        for key, value in (("nth", nth), ("limit", limit), ("copies", copies)):
            if value is not None:
                options[key] = int(value)
        if rate is not None:
            options["rate"] = float(rate)
        if seconds is not None:
            options["seconds"] = self.seconds(seconds)
        if hold is not None:
            options["hold_s"] = self.seconds(hold)
        if mode is not None:
            options["mode"] = mode
        if device is not None:
            options["device"] = self.ctx.device(device).handle.identity
        if direction is not None:
            options["direction"] = Direction(direction)
        rule = fault_from_words(action, message, **options)
        self._installed[name] = (handle, handle.message_faults(rule, seed=int(seed)))
        logger.info(f"message fault on {name}: {rule.describe()}")

    @keyword
    def clear_message_faults(self, gateway: str | None = None) -> int:
        """Removes the gateway's message fault rules; returns how many faults they applied."""
        name, handle = self.ctx.gateway(gateway)
        faults = self._faults(name, handle)
        if faults is None:
            return 0
        del self._installed[name]
        count = faults.count()
        faults.remove()
        return count

    @keyword
    def message_faults_applied_should_be(
        self, count: int, action: str | None = None, message: str | None = None,
        gateway: str | None = None,
    ) -> None:
        """Fails unless the gateway's rules applied exactly ``count`` faults (of ``action``,
        to ``message``). The gateway's event log and protocol trace list each one."""
        name, handle = self.ctx.gateway(gateway)
        faults = self._faults(name, handle)
        got = faults.count(action, message) if faults is not None else 0
        if got != int(count):
            applied = faults.applied() if faults is not None else []
            raise AssertionError(f"expected {count} message faults applied on {name}, got {got}:"
                                 f" {[(f.action, f.message, f.ordinal) for f in applied]}")
