"""Message faults from the bench: rules installed on an in-process gateway for a `with` block.

    with gateway.message_faults(Drop("DeployChunk", nth=5)) as faults:
        dep = gateway.deploy(device, module, "app")
    assert faults.count("drop") == 1

The rules and their vocabulary are the gateway's (wasmbed_hil/gateway/msgfaults.py); this is
the synchronous handle the pytest fixtures and Robot keywords use.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from ..gateway.msgfaults import (
    AppliedFault,
    Corrupt,
    Delay,
    Drop,
    Duplicate,
    MessageFault,
    MessageInterceptor,
    Reorder,
)

if TYPE_CHECKING:
    from .gateway import GatewayHandle

__all__ = [
    "Corrupt", "Delay", "Drop", "Duplicate", "MessageFault", "MessageFaults", "Reorder",
    "fault_from_words",
]

ACTIONS: dict[str, type[MessageFault]] = {
    "drop": Drop, "delay": Delay, "duplicate": Duplicate, "reorder": Reorder, "corrupt": Corrupt,
}


def fault_from_words(action: str, message: str, **options: object) -> MessageFault:
    """A rule from an action name ("drop", "delay", ...) and options (Robot's form)."""
    cls = ACTIONS.get(action.lower())
    if cls is None:
        raise ValueError(f"unknown message fault action {action!r} (one of {sorted(ACTIONS)})")
    if message.lower().startswith("reply to "):
        return cls(reply_to=message[len("reply to "):].strip(), **options)  # type: ignore[arg-type]
    return cls(message, **options)  # type: ignore[arg-type]


class MessageFaults:
    """Rules installed on a gateway: a context manager that removes them on exit, and what
    they did so far."""

    def __init__(self, handle: GatewayHandle, rules: Iterable[MessageFault], seed: int) -> None:
        self._handle = handle
        self._rules = tuple(rules)
        self._seed = seed
        self._interceptor: MessageInterceptor | None = None
        self._gateway: object | None = None

    def install(self) -> MessageFaults:
        gateway = self._handle.gateway
        self._interceptor = self._handle.loop.call(gateway.faults.install, self._rules, self._seed)
        self._gateway = gateway
        return self

    def remove(self) -> None:
        """Remove the rules (frames a delay or reorder still holds are delivered as due)."""
        gateway, self._gateway = self._gateway, None
        handle = self._handle
        if gateway is not None and handle.running and handle.gateway is gateway \
                and handle.loop.alive:
            def remove_ours() -> None:
                if handle.gateway.faults.interceptor is self._interceptor:
                    handle.gateway.faults.remove()
            handle.loop.call(remove_ours)

    def __enter__(self) -> MessageFaults:
        return self if self._gateway is not None else self.install()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    @property
    def active(self) -> bool:
        """Whether the rules are still installed on a running gateway."""
        handle = self._handle
        return self._gateway is not None and handle.running and handle.gateway is self._gateway

    @property
    def seed(self) -> int:
        return self._seed

    def applied(self) -> list[AppliedFault]:
        """Every fault applied so far, oldest first."""
        interceptor = self._interceptor
        if interceptor is None:
            return []
        return self._handle.loop.call(lambda: list(interceptor.applied))

    def count(self, action: str | None = None, message: str | None = None) -> int:
        """How many faults were applied (of `action`, to `message`)."""
        return sum(1 for f in self.applied()
                   if (action is None or f.action == action)
                   and (message is None or f.message == message))
