"""Monitoring: the REST API's and the controllers' Prometheus `/metrics`, scraped while a
small fleet is created, deployed to and deleted through the REST API, agree with what
happened (docs/monitoring.md).

The REST figures are compared with the requests this test made (it is the REST API's only
caller; the harness waits through its own watch, not through REST), the controllers' with
the resources the harness watched. Parsed with prometheus_client's parser.
"""

from __future__ import annotations

import base64

import pytest

from wasmbed_hil.bench.scrape import Scrape, scrape

pytestmark = pytest.mark.hil_platform(metrics=True)

TIMEOUT = 30.0


def _requests(s: Scrape) -> dict[tuple[str, str, str], float]:
    return {(dict(ls)["route"], dict(ls)["method"], dict(ls)["status"]): v
            for (n, ls), v in s.samples.items() if n == "wasmbed_rest_requests_total"}


def _objects(s: Scrape) -> dict[tuple[str, str], float]:
    return {(dict(ls)["kind"], dict(ls)["phase"]): v for (n, ls), v in s.samples.items()
            if n == "wasmbed_controller_objects"}


def _reconciles(s: Scrape, name: str = "wasmbed_controller_reconciles_total"
                ) -> dict[str, float]:
    return s.by_label(name, "controller")


def _ran_everywhere(obj: dict) -> bool:
    status = obj.get("status") or {}
    rows = status.get("deviceStatuses") or []
    return status.get("phase") == "Running" and len(rows) == 2 and all(
        "outcome" in r for r in rows)


@pytest.mark.parametrize("layout", ["one-process", pytest.param(
    "as-deployed", marks=pytest.mark.hil_platform(apiserver_process=True,
                                                  controllers_process=True))])
def test_rest_and_controller_metrics_match_what_the_platform_did(control_plane, wasm, layout):
    """Also with the controllers in a process of their own: their /metrics is theirs."""
    cp = control_plane
    assert (cp.apiserver_process is not None) == (layout == "as-deployed")
    rest_url, ctl_url = cp.rest_metrics_url, cp.controller_metrics_url
    assert _requests(scrape(rest_url)) == {}  # nothing asked yet; a scrape is no request
    code, created = cp.request("POST", "/api/v1/devices", {
        "name": "mon", "count": 2, "emulation": {"backend": cp.backend}})
    assert code == 201, created
    names = [d["name"] for d in created["items"]]
    for name in names:
        cp.wait_phase("devices", name, "Connected", TIMEOUT)
    assert cp.request("GET", "/api/v1/devices", token="wrong")[0] == 401
    assert cp.request("GET", f"/api/v1/devices/{names[0]}")[0] == 200
    code, app = cp.request("POST", "/api/v1/applications", {
        "name": "adder", "wasmBytes": base64.b64encode(wasm("add")).decode(),
        "targetDevices": {"deviceNames": names}, "args": [40, 2]})
    assert code == 201, app
    cp.wait("applications", "adder", _ran_everywhere, "Running with both results", TIMEOUT)

    rest, ctl = scrape(rest_url), scrape(ctl_url)
    assert _requests(rest) == {
        ("/api/v1/devices", "POST", "201"): 1,
        ("/api/v1/devices", "GET", "401"): 1,
        ("/api/v1/devices/{name}", "GET", "200"): 1,
        ("/api/v1/applications", "POST", "201"): 1,
    }
    assert rest.value("wasmbed_rest_auth_failures_total", reason="invalid_token") == 1
    assert rest.value("wasmbed_rest_request_duration_seconds_count",
                      route="/api/v1/applications", method="POST") == 1
    # The controllers wrote Running, so their view holds it and both devices Connected.
    objects = _objects(ctl)
    assert objects[("Application", "Running")] == 1
    assert objects[("Device", "Connected")] == 2
    assert objects[("Gateway", "Running")] == len(cp.gateways)
    assert sum(v for (kind, _), v in objects.items() if kind == "Device") == 2
    passes = _reconciles(ctl)
    assert passes["device"] >= 2  # each emulated Device's machine started
    assert passes["application"] >= 1 and passes["gateway"] >= 1
    assert _reconciles(ctl, "wasmbed_controller_reconcile_errors_total") == dict.fromkeys(
        passes, 0.0)
    assert _reconciles(ctl, "wasmbed_controller_reconcile_duration_seconds_count") == \
        passes

    assert cp.request("DELETE", "/api/v1/applications/adder")[0] == 202
    cp.wait_gone("applications", "adder", TIMEOUT)
    after = scrape(ctl_url)
    # The finalizer went only after the deletion pass ended: the Application is gone there.
    assert not [k for k in _objects(after) if k[0] == "Application"]
    # At least one deletion pass (kopf may run the handler again before the finalizer's
    # removal reaches it), none failed.
    assert _reconciles(after)["application_delete"] >= 1
    assert _reconciles(after, "wasmbed_controller_reconcile_errors_total")[
        "application_delete"] == 0
    assert _reconciles(after)["application"] >= passes["application"]
    assert scrape(rest_url).value("wasmbed_rest_requests_total", route=(
        "/api/v1/applications/{name}"), method="DELETE", status="202") == 1
