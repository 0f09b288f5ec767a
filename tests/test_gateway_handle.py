"""GatewayHandle (bench.gateway): the lifecycle of its incarnations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from wasmbed_hil.bench.gateway import GatewayHandle
from wasmbed_hil.gateway import GatewayConfig


class HeldDeath(GatewayHandle):
    """An incarnation killed at a crash_when() point stops only once something waits for
    its death (the gate opens then): a stop that nobody waits for never completes."""

    gate: asyncio.Event

    def _die(self, gateway):  # type: ignore[override]
        stop = GatewayHandle._die(gateway)

        async def held() -> None:
            try:
                await self.gate.wait()
            except BaseException:
                stop.close()
                raise
            await stop

        return held()

    def _wait_dying(self) -> None:
        self.loop.call(self.gate.set)
        super()._wait_dying()


def test_a_restart_after_a_crash_point_waits_until_the_dead_incarnation_stopped(
    hil_loop, fleet_ca, tmp_path,
):
    # The test restarts the gateway after a crash_when() point fired, without crash():
    # the next incarnation must not start beside the one still stopping (same endpoint,
    # same local cache), nor may close() leave that stop running.
    handle = HeldDeath(hil_loop, fleet_ca, tmp_path / "gateway", GatewayConfig.for_tests())
    handle.gate = hil_loop.call(asyncio.Event)
    try:
        handle.start()
        old = handle.gateway
        fired = handle.crash_when("marker")
        with pytest.raises(concurrent.futures.CancelledError):  # the logging task dies
            hil_loop.call(old.events.emit, "marker")
        assert fired.done()

        handle.restart()
        assert handle.gateway is not old
        states = hil_loop.call(lambda: [e.data["state"] for e in old.events.events("gateway")])
        assert states == ["started", "stopped"], "the dead incarnation is still stopping"
    finally:
        hil_loop.call(handle.gate.set)  # the unfixed code never opened it
        handle.crash()
        handle.close()


class CrashInTheWindow(GatewayHandle):
    """When a crash_when() point fires, the test's thread calls crash() at the moment the
    handle moves the incarnation from serving to dying (the first _die call, on the loop)."""

    concurrent_crash_returned: bool | None = None

    def _die(self, gateway):  # type: ignore[override]
        if self.concurrent_crash_returned is None:
            other = threading.Thread(target=self.crash, name="concurrent-crash")
            other.start()
            # crash() must not return yet: the incarnation has not even begun to stop. With
            # the handle's state lock it waits (this join runs out); without it, it saw
            # neither a gateway nor a dying one and returned at once.
            other.join(0.5)
            self.concurrent_crash_returned = not other.is_alive()
            self.other = other
        return GatewayHandle._die(gateway)


def test_a_crash_during_a_crash_points_handover_waits_until_the_incarnation_stopped(
    hil_loop, fleet_ca, tmp_path,
):
    handle = CrashInTheWindow(hil_loop, fleet_ca, tmp_path / "gateway",
                              GatewayConfig.for_tests())
    try:
        handle.start()
        old = handle.gateway
        handle.crash_when("marker")
        with pytest.raises(concurrent.futures.CancelledError):
            hil_loop.call(old.events.emit, "marker")
        handle.other.join(30)  # the concurrent crash() has returned...
        assert not handle.other.is_alive()
        assert handle.concurrent_crash_returned is False
        # ...and only once the incarnation had stopped
        states = hil_loop.call(lambda: [e.data["state"] for e in old.events.events("gateway")])
        assert states == ["started", "stopped"]
    finally:
        handle.crash()
        handle.close()
