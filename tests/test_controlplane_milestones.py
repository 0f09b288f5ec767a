"""The Application controller coalesces status writes over a window that grows with the
number of targets (2 ms a row: 2 s at 1,000 devices), but a milestone (the phase changes, or
the last target reports its result) is written at once (controllers.py `aggregate`)."""

from __future__ import annotations

import time

import pytest

from wasmbed_hil.controlplane.controllers import ControllerSettings

# Two targets, 30 s a row: a 60 s window between writes, far beyond the waits below.
WIDE = ControllerSettings(window_per_row_s=30.0)


def _all_reported(n: int):
    def check(obj):
        st = obj.get("status") or {}
        rows = st.get("deviceStatuses") or []
        return (st.get("phase") == "Running" and len(rows) == n
                and all("outcome" in r for r in rows))
    return check


@pytest.mark.hil_platform(rest=False, controller_settings=WIDE)
def test_milestones_end_the_coalescing_window(control_plane, wasm):
    cp = control_plane
    for name in ("dev-a", "dev-b"):
        cp.create_device(name, backend=cp.backend)
    for name in ("dev-a", "dev-b"):
        cp.wait_phase("devices", name, "Connected", 30)
    start = time.monotonic()
    cp.create_application("adder", wasm("add"), all_devices=True, args=[40, 2])
    app = cp.wait("applications", "adder", _all_reported(2), "to report every result",
                  timeout=20)
    assert time.monotonic() - start < 20  # not the 60 s window
    rows = {r["device"]: r for r in app["status"]["deviceStatuses"]}
    assert {r["values"][0] for r in rows.values()} == {42}
    assert app["status"]["statistics"]["running"] == 2
