"""Monitoring: the gateway's Prometheus `/metrics`, scraped during a deployment to a small
fleet, agrees with what the fleet did (docs/monitoring.md).

Each figure is compared with the bench's own record of the same thing (the devices it made,
the deployments it submitted, the results the gateway stored), never with a constant the
gateway could drift to. The scrape is parsed with prometheus_client's parser.
"""

from __future__ import annotations

import pytest

from wasmbed_hil.bench.points import after_chunk_acked
from wasmbed_hil.bench.scrape import Scrape, scrape
from wasmbed_hil.gateway import RunRequest
from wasmbed_hil.protocol import DevicePhase, Outcome

pytestmark = pytest.mark.hil_gateway(metrics_port=0)

SIZE = 40_000  # ten 4 KiB frames: a transfer the power cut lands in the middle of


def _phases(s: Scrape) -> dict[str, float]:
    return s.by_label("wasmbed_gateway_devices", "phase")


def test_metrics_during_a_deployment_match_what_the_fleet_did(gateway, fleet, wasm):
    devices = fleet(3, prefix="mon", max_frame_size=4096)
    url = gateway.metrics_url
    first = scrape(url)
    assert first.types["wasmbed_gateway_heartbeats"] == "counter"
    assert first.types["wasmbed_gateway_devices"] == "gauge"
    assert _phases(first) == {p.value: (3.0 if p is DevicePhase.CONNECTED else 0.0)
                              for p in DevicePhase}
    assert first.value("wasmbed_gateway_enrollments_total", result="enrolled") == 3
    assert first.value("wasmbed_gateway_tls_handshakes_total") >= 3
    assert first.value("wasmbed_gateway_tls_handshake_failures_total") == 0
    assert first.value("wasmbed_gateway_connections_authenticated") == 3
    assert first.value("wasmbed_gateway_connections_open") == 3
    assert first.value("wasmbed_gateway_connections_unauthenticated") == 0
    assert first.value("wasmbed_gateway_deployments_in_progress") == 0
    assert {v for (_, labels) in first.samples for k, v in labels if k == "gateway"} == {
        gateway.config.name}

    # During: one device loses power after its first chunk, the others run their module.
    cut_dev, *others = devices
    cut = gateway.when(cut_dev, after_chunk_acked(1), "power_off")
    module = wasm.data(SIZE, seed=5)
    cut_dep = gateway.deploy(cut_dev, module, "data", run=RunRequest("checksum"), wait=False)
    cut.wait()
    gateway.wait_phase(cut_dev, DevicePhase.DISCONNECTED)
    during = scrape(url)
    assert _phases(during)["Disconnected"] == 1 and _phases(during)["Connected"] == 2
    assert during.value("wasmbed_gateway_deployments_submitted_total") == 1
    assert during.value("wasmbed_gateway_deployments_in_progress") == 1
    assert during.value("wasmbed_gateway_connections_authenticated") == 2
    assert during.value("wasmbed_gateway_deployment_chunks_acked_total") >= 1

    results = [gateway.run(others[0], wasm("add"), "adder", args=(40, 2)),
               gateway.run(others[1], wasm("trap"), "trapper")]
    cut_dev.power_on()
    gateway.wait_deployment(cut_dep, 60)
    assert cut_dep.state == "installed", cut_dep.error
    results.append(gateway.wait_result(cut_dev, "data", gateway.wait_run_started(cut_dep)))
    gateway.wait_phase(cut_dev, DevicePhase.CONNECTED)
    for dev in devices:  # every device beats twice more after the deployments
        gateway.wait_heartbeats(dev, 2)
    beats_before = sum(st.heartbeats for st in gateway.devices())
    after = scrape(url)

    assert _phases(after)["Connected"] == 3 and _phases(after)["Disconnected"] == 0
    assert after.value("wasmbed_gateway_deployments_submitted_total") == 3
    assert after.value("wasmbed_gateway_deployments_total", state="installed") == 3
    assert after.value("wasmbed_gateway_deployments_total", state="failed") == 0
    assert after.value("wasmbed_gateway_deployments_in_progress") == 0
    outcomes = after.by_label("wasmbed_gateway_results_total", "outcome")
    stored = [r.outcome for dev in devices for r in gateway.results(dev)]
    assert [r.outcome for r in results] == [Outcome.RETURNED, Outcome.TRAPPED, Outcome.RETURNED]
    assert outcomes == {o.name.lower(): float(stored.count(o)) for o in Outcome}
    # One enrollment each; the power-cut device came back with a second handshake.
    assert after.value("wasmbed_gateway_enrollments_total", result="enrolled") == 3
    assert after.value("wasmbed_gateway_tls_handshakes_total") >= 4
    disconnects = [x.value("wasmbed_gateway_phase_transitions_total", phase="Disconnected")
                   for x in (first, after)]
    assert disconnects[1] - disconnects[0] == 1  # the power cut, nothing else
    # Heartbeats only grow, and the counter holds at least every beat the devices' statuses
    # counted before the scrape (a beat may land between the two reads, never go missing).
    assert first.value("wasmbed_gateway_heartbeats_total") <= \
        during.value("wasmbed_gateway_heartbeats_total") < \
        after.value("wasmbed_gateway_heartbeats_total")
    assert after.value("wasmbed_gateway_heartbeats_total") >= beats_before
    # Three modules went out (the cut one at least partly twice): at least their bytes.
    modules = len(module) + len(wasm("add")) + len(wasm("trap"))
    sent = after.value("wasmbed_gateway_sent_bytes_total") - first.value(
        "wasmbed_gateway_sent_bytes_total")
    assert sent >= modules
    assert after.value("wasmbed_gateway_received_bytes_total") > first.value(
        "wasmbed_gateway_received_bytes_total")
