"""Wait until a platform resource (a Device, an Application, a Gateway) reaches a state,
woken by an informer's events, never by polling on a timer.

For tests and suites that drive the services as separate processes and see the platform
only through the API server (the in-process platform has its own watcher,
`Platform.wait`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..kube.client import Informer, Kind, KubeClient
from ..kube.resources import Resource

__all__ = ["wait_resource"]


async def wait_resource(
    kube: KubeClient,
    resource: type[Resource],
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], Any],
    what: str,
    timeout: float,
) -> dict[str, Any]:
    """The object `name` once `predicate(object)` holds; AssertionError after `timeout`
    seconds, naming `what` was awaited. The informer lists first, so a state reached before
    the call counts."""
    changed = asyncio.Event()
    informer = Informer(kube, Kind.of(resource), namespace, on_change=lambda *_: changed.set())
    informer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                obj = informer.objects.get(name)
                if obj is not None and predicate(obj):
                    return obj
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {resource.__name__} {name} {what}"
        ) from None
    finally:
        await informer.stop()
