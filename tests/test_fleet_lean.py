"""Lean links (bench/virtual/lean.py): the fleet workers' default for thousands of devices.

The wheel on a real loop; the links against the test's gateway, through fleet workers. (The
encoding shortcuts they use are protocol/shortform.py's, tested in test_protocol_shortform.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from wasmbed_hil.bench.fleet import FleetHandle
from wasmbed_hil.bench.message_faults import Drop
from wasmbed_hil.bench.virtual.lean import LeanHub
from wasmbed_hil.protocol import (
    DevicePhase,
    Outcome,
)


# ====================================================================== the wheel
def test_the_wheel_calls_each_ticket_every_interval_until_cancelled_or_false():
    async def main() -> tuple[list[float], list[float], int]:
        hub = LeanHub()
        loop = asyncio.get_running_loop()
        fast: list[float] = []
        slow: list[float] = []
        done = asyncio.Event()

        def tick_fast() -> bool:
            fast.append(loop.time())
            return len(fast) < 5  # False on the 5th call: no 6th

        def tick_slow() -> bool:
            slow.append(loop.time())
            if len(slow) == 3:
                done.set()
            return True

        start = loop.time()
        hub.every(0.02, tick_fast)
        ticket = hub.every(0.05, tick_slow)
        with pytest.raises(ValueError):
            hub.every(0, tick_slow)
        await asyncio.wait_for(done.wait(), 10)
        ticket.cancel()
        calls = len(slow)
        hub.close()
        return [t - start for t in fast], [t - start for t in slow], calls

    fast, slow, calls = asyncio.run(main())
    assert len(fast) == 5  # stopped by its False
    assert calls == 3
    tick = 0.001
    for times, interval in ((fast, 0.02), (slow, 0.05)):
        # never early by more than a tick; each due time is the last one plus the interval
        for k, t in enumerate(times, 1):
            assert t >= k * interval - tick - 1e-9


def test_a_stalled_loop_does_not_make_the_wheel_bunch_calls_up():
    async def main() -> list[float]:
        hub = LeanHub()
        loop = asyncio.get_running_loop()
        calls: list[float] = []
        done = asyncio.Event()

        def tick() -> bool:
            calls.append(loop.time())
            if len(calls) == 1:
                time.sleep(0.25)  # the loop stalls for five intervals (a simulated stall)
            if len(calls) == 4:
                done.set()
            return True

        hub.every(0.05, tick)
        await asyncio.wait_for(done.wait(), 10)
        hub.close()
        return calls

    calls = asyncio.run(main())
    # after the stall the missed calls are skipped, not made back to back
    assert calls[2] - calls[1] >= 0.05 - 0.002


def test_a_ticket_that_raises_is_reported_and_the_others_keep_going():
    async def main() -> tuple[int, int, list[str]]:
        hub = LeanHub()
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(repr(ctx["exception"])))
        calls = {"bad": 0, "good": 0}
        done = asyncio.Event()

        def bad() -> bool:
            calls["bad"] += 1
            raise RuntimeError("a device bug")

        def good() -> bool:
            calls["good"] += 1
            if calls["good"] == 4:
                done.set()
            return True

        hub.every(0.01, bad)
        hub.every(0.01, good)
        await asyncio.wait_for(done.wait(), 10)
        hub.close()
        return calls["bad"], calls["good"], reported

    bad, good, reported = asyncio.run(main())
    assert bad == 1 and good == 4
    assert reported == ["RuntimeError('a device bug')"]


# ====================================================================== links, via the fleet
def test_lean_devices_enroll_heartbeat_deploy_and_every_ack_is_accounted(fleet, gateway, wasm):
    handle = fleet(4, processes=2)  # link="lean" is the default
    assert handle.link == "lean"
    gateway.wait_heartbeats("fleet-3", 3)
    handle.mark()
    before = {n: gateway.device(n).heartbeats for n in handle.names}
    gateway.wait_heartbeats("fleet-0", 5)
    got = handle.collect()
    after = {n: gateway.device(n).heartbeats for n in handle.names}
    counted = sum(after[n] - before[n] for n in handle.names)
    # each acknowledged heartbeat is one the gateway counted (the window edges move a few)
    assert abs(len(got["rtts"]) - counted) <= 2 * len(handle)
    assert got["unacked_over_1s"] == 0 and got["unacked_devices"] == 0
    assert got["open_links"] == 4
    result = gateway.run("fleet-2", wasm("add"), app_id="adder", args=(20, 22))
    assert result.outcome is Outcome.RETURNED and result.values == (42,)
    assert handle.state("fleet-2").apps == {"adder": "INSTALLED"}
    # with an app installed its heartbeats carry the summary, still acknowledged
    n = gateway.device("fleet-2").heartbeats
    gateway.wait_heartbeats("fleet-2", 2)
    assert gateway.device("fleet-2").heartbeats >= n + 2
    assert [a.app_id for a in gateway.device("fleet-2").apps] == ["adder"]


def test_a_lean_device_that_misses_an_ack_is_reported(fleet, gateway):
    handle = fleet(2, processes=1)
    handle.mark()
    with gateway.message_faults(Drop(reply_to="Heartbeat", nth=2)):
        gateway.wait_heartbeats("fleet-0", 10)  # 2 s at 0.2 s: the dropped ack is 1 s late
        gateway.wait_heartbeats("fleet-1", 10)
    got = handle.collect()
    assert got["unacked_over_1s"] == 2 and got["unacked_devices"] == 2
    assert got["unacked_examples"] == ["fleet-0", "fleet-1"]
    # the other acks still arrived, the link stayed up
    assert handle.counts() == {"online": 2}
    assert got["connections"] == 2


def test_a_lean_device_drops_a_silent_link_and_reconnects(fleet, gateway):
    handle = fleet(1, processes=1)
    with gateway.message_faults(Drop(reply_to="Heartbeat", rate=1.0)):
        # nothing from the gateway for 3 intervals: the device drops the link (dead_link),
        # which the gateway sees closed, and connects again
        closed = gateway.wait_event("connection", lambda e: e.data.get("state") == "closed",
                                    timeout=10)
        gateway.wait_event("connection", lambda e: e.data.get("state") == "open", timeout=10,
                           since=closed.seq)
    handle.wait_online()
    gateway.wait_heartbeats("fleet-0", 2)
    assert handle.state("fleet-0").connections >= 2
    assert handle.collect()["open_links"] == 1  # the dropped one is gone


def test_power_off_closes_every_lean_link(fleet, gateway):
    handle = fleet(3, processes=1)
    handle.power_off(["fleet-1"])
    gateway.wait_phase("fleet-1", DevicePhase.DISCONNECTED)
    handle.mark()
    assert handle.collect()["open_links"] == 2
    handle.power_off()
    for name in handle.names:
        gateway.wait_phase(name, DevicePhase.DISCONNECTED)
    assert handle.collect()["open_links"] == 0


def test_stream_links_remain_available(fleet, gateway):
    handle = fleet(2, processes=1, link="stream")
    assert handle.link == "stream"
    gateway.wait_heartbeats("fleet-1", 2)
    handle.mark()
    assert handle.collect()["open_links"] is None


@pytest.mark.parametrize("bad", ["tcp", "", None, 1])
def test_link_is_validated(hil_scope, tmp_path, bad):
    with pytest.raises(ValueError, match="link="):
        FleetHandle(hil_scope.loop, hil_scope.ca, tmp_path, ("127.0.0.1", 1), 1, link=bad)
