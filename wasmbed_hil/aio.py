"""asyncio helpers shared by the gateway, the devices and the harness."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], patience: float = 1.0) -> None:
    """Cancel tasks and wait until each has really ended.

    One cancel() is not always enough: on Python 3.11 `asyncio.wait_for` can swallow a
    cancellation that races with its inner future finishing, and a task may then carry on.
    So cancellation is repeated until the task is done.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
