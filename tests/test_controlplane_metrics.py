"""The controllers' Prometheus metrics on their own: a reconcile pass is counted, timed and,
when it fails (raises, or says so), counted as an error; a cancelled pass is no error; the
objects gauge reads the phase readers at scrape time."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from wasmbed_hil.bench.scrape import Scrape, parse
from wasmbed_hil.controlplane.metrics import CONTROLLERS, ControllerMetrics


def _scrape(m: ControllerMetrics) -> Scrape:
    return parse(generate_latest(m.registry).decode())


def _by_controller(s: Scrape, name: str) -> dict[str, float]:
    return s.by_label(name, "controller")


def test_every_controller_is_exported_from_zero() -> None:
    s = _scrape(ControllerMetrics())
    zero = dict.fromkeys(CONTROLLERS, 0.0)
    assert _by_controller(s, "wasmbed_controller_reconciles_total") == zero
    assert _by_controller(s, "wasmbed_controller_reconcile_errors_total") == zero
    assert s.types["wasmbed_controller_reconcile_duration_seconds"] == "histogram"


def test_passes_errors_and_durations() -> None:
    m = ControllerMetrics()
    with m.reconcile("application"):
        pass
    with m.reconcile("application") as one:
        one.failed()
    with pytest.raises(ZeroDivisionError), m.reconcile("gateway"):
        1 / 0  # noqa: B018

    async def cancelled() -> None:
        with m.reconcile("device"):
            await asyncio.Event().wait()

    async def cancel_one() -> None:
        task = asyncio.ensure_future(cancelled())
        await asyncio.sleep(0)  # let it enter the pass
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    s = _scrape(m)
    assert _by_controller(s, "wasmbed_controller_reconciles_total") == {
        "device": 1, "application": 2, "application_delete": 0, "gateway": 1}
    assert _by_controller(s, "wasmbed_controller_reconcile_errors_total") == {
        "device": 0, "application": 1, "application_delete": 0, "gateway": 1}
    counts = _by_controller(s, "wasmbed_controller_reconcile_duration_seconds_count")
    assert counts == {"device": 1, "application": 2, "application_delete": 0, "gateway": 1}
    with pytest.raises(ValueError, match="unknown controller"), m.reconcile("nope"):
        pass


def test_objects_by_kind_and_phase_are_read_at_scrape_time() -> None:
    m = ControllerMetrics()
    devices = ["Connected", "Connected", None]
    apps: list[str | None] = []
    m.watch_objects({"Device": lambda: list(devices), "Application": lambda: list(apps),
                     "Gateway": lambda: ["Running"]})

    def objects(s: Scrape) -> dict[tuple[str, str], float]:
        return {(dict(ls)["kind"], dict(ls)["phase"]): v for (n, ls), v in s.samples.items()
                if n == "wasmbed_controller_objects"}

    assert objects(_scrape(m)) == {("Device", "Connected"): 2, ("Device", "None"): 1,
                                   ("Gateway", "Running"): 1}
    devices[2] = "Disconnected"
    apps.append("Running")
    assert objects(_scrape(m)) == {("Device", "Connected"): 2, ("Device", "Disconnected"): 1,
                                   ("Application", "Running"): 1, ("Gateway", "Running"): 1}
