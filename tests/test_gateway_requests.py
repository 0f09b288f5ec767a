"""DeviceConnection.request on a connection that is gone: the caller gets ConnectionLost, and
the reply future left behind is not reported by asyncio as "Future exception was never
retrieved" (the failover scenario logged it whenever a gateway died under a request)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from wasmbed_hil.gateway.connection import DeviceConnection
from wasmbed_hil.gateway.errors import ConnectionLost
from wasmbed_hil.protocol import DeviceInfoRequest


class FakeStream:
    def __init__(self) -> None:
        self.closing = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def write_buffer_size(self) -> int:
        return 0


def _connection() -> DeviceConnection:
    return DeviceConnection(FakeStream(), identity="ab" * 32, name="dev-0",  # type: ignore[arg-type]
                            max_frame_size=4096, write_buffer_limit=1 << 20, trace_limit=0)


def _unretrieved(run: Any) -> list[dict[str, Any]]:
    """The loop's exception-handler calls while `run` runs and its garbage is collected."""
    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        await run()
        gc.collect()

    asyncio.run(scenario())
    return [c for c in seen if "never retrieved" in str(c.get("message", ""))]


def test_a_request_on_a_closed_connection_raises_and_leaves_nothing_to_log() -> None:
    async def run() -> None:
        conn = _connection()
        conn.close("the device went away")
        with pytest.raises(ConnectionLost):
            await conn.request(("info", None), DeviceInfoRequest(), 5.0)
        assert conn.waiters == {}

    assert _unretrieved(run) == []

