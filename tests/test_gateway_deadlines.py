"""The gateway's DeadlineWheel: many deadlines on one loop timer, never early, at most one
resolution late (gateway/deadlines.py; the handlers' heartbeat liveness uses it)."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from wasmbed_hil.gateway.deadlines import DeadlineWheel


def _run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_a_callback_runs_at_its_deadline_never_before():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(resolution=0.02)
        ran: dict[int, float] = {}
        done = loop.create_future()
        wanted = {k: loop.time() + 0.01 + 0.013 * k for k in range(8)}

        def fired(k: int) -> None:
            ran[k] = loop.time()
            if len(ran) == len(wanted) and not done.done():
                done.set_result(None)

        handles = {k: wheel.call_at(when, lambda k=k: fired(k)) for k, when in wanted.items()}
        for k, when in wanted.items():  # rounded up to the resolution, never down
            assert when <= handles[k].when() < when + wheel.resolution
        await asyncio.wait_for(done, 10)
        for k, when in wanted.items():
            assert ran[k] >= handles[k].when() - 1e-6 >= when - 1e-6
        assert sorted(ran, key=ran.__getitem__) == sorted(wanted, key=wanted.__getitem__)
        assert len(wheel) == 0

    _run(scenario)


def test_many_deadlines_hold_one_loop_timer():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(resolution=0.01)
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        now = loop.time()
        for k in range(500):
            wheel.call_at(now + 30 + k * 0.003, lambda: None)
        assert len(loop._scheduled) == before + 1  # type: ignore[attr-defined]
        assert len(wheel) == 500
        # An earlier deadline moves the one timer earlier (the later one is cancelled).
        done = loop.create_future()
        wheel.call_at(now + 0.01, lambda: done.set_result(loop.time()))
        scheduled = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(scheduled) == before + 1
        assert await asyncio.wait_for(done, 10) >= now + 0.01 - 1e-6
        wheel.close()
        assert len(wheel) == 0
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(live) == before

    _run(scenario)


def test_a_cancelled_deadline_does_not_run_and_a_failing_callback_does_not_stop_others(caplog):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(resolution=0.01)
        ran: list[str] = []
        done = loop.create_future()
        when = loop.time() + 0.02

        def boom() -> None:
            raise RuntimeError("boom")

        wheel.call_at(when, boom)
        wheel.call_at(when, lambda: ran.append("cancelled")).cancel()
        wheel.call_at(when, lambda: ran.append("kept"))
        wheel.call_at(when + 0.05, lambda: done.set_result(None))
        await asyncio.wait_for(done, 10)
        assert ran == ["kept"]

    with caplog.at_level(logging.ERROR, logger="wasmbed_hil.gateway"):
        _run(scenario)
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_a_callback_may_schedule_the_next_deadline():
    """As the liveness callback does when a heartbeat moved its deadline on."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wheel = DeadlineWheel(resolution=0.01)
        times: list[float] = []
        done = loop.create_future()

        def again() -> None:
            times.append(loop.time())
            if len(times) < 3:
                wheel.call_at(loop.time() + 0.015, again)
            else:
                done.set_result(None)

        wheel.call_at(loop.time(), again)  # a deadline already passed runs at once
        await asyncio.wait_for(done, 10)
        assert all(b - a >= 0.015 - 1e-6 for a, b in itertools.pairwise(times))

    _run(scenario)


def test_a_wheel_serves_one_loop_and_checks_its_resolution():
    with pytest.raises(ValueError):
        DeadlineWheel(resolution=0)
    wheel = DeadlineWheel()

    async def schedule() -> None:
        wheel.call_at(asyncio.get_running_loop().time() + 60, lambda: None)

    asyncio.run(schedule())
    with pytest.raises(RuntimeError, match="loop"):
        asyncio.run(schedule())
    wheel.close()
    asyncio.run(schedule())  # emptied: it may move to another loop
    wheel.close()
