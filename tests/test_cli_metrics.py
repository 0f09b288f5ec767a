"""The services' command lines off 127.0.0.1 and with metrics: `apiserver --host` on another
address writes a kubeconfig a client verifies; `rest` and `controllers` with `--metrics-port`
announce the port on their ready line and serve what happened there."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.process import ServiceProcess
from wasmbed_hil.bench.scrape import scrape
from wasmbed_hil.kube.client import KubeClient, KubeConfig

CLI = [sys.executable, "-m", "wasmbed_hil"]
WAIT = 60.0


async def _ensure_namespace(path: Path) -> None:
    async with KubeClient(KubeConfig.from_kubeconfig(path)) as kube:
        await kube.ensure_namespace("wasmbed")


def _metrics_url(service: ServiceProcess) -> str:
    assert service.ready is not None
    port = int(service.ready.string.rsplit("metrics_port=", 1)[1].split()[0])
    return f"http://127.0.0.1:{port}/metrics"


def test_services_off_loopback_address_and_with_metrics(tmp_path: Path,
                                                        hil_loop: LoopThread) -> None:
    logs, kubeconfig = tmp_path / "logs", tmp_path / "kubeconfig"
    (tmp_path / "token").write_text("cli-token")
    apiserver = ServiceProcess("apiserver", [
        *CLI, "apiserver", "--host", "127.0.0.2", "--kubeconfig", str(kubeconfig), "--crds"],
        logs)
    kube = ["--kubeconfig", str(kubeconfig)]
    metrics = ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]
    controllers = ServiceProcess("controllers", [*CLI, "controllers", *kube, *metrics], logs)
    rest = ServiceProcess("rest", [*CLI, "rest", *kube, "--host", "127.0.0.1", "--port", "0",
                                   "--token-file", str(tmp_path / "token"), *metrics], logs)
    with apiserver:
        assert apiserver.ready is not None
        assert apiserver.ready.string.startswith("ready apiserver https://127.0.0.2:")
        # The certificate names 127.0.0.2, the address in the kubeconfig: the client verifies.
        hil_loop.run(_ensure_namespace(kubeconfig))
        with controllers, rest:
            assert rest.ready is not None
            url = rest.ready.string.split()[2]
            request = urllib.request.Request(url + "/api/v1/devices",
                                             headers={"Authorization": "Bearer wrong"})
            try:
                urllib.request.urlopen(request, timeout=WAIT)
                raise AssertionError("a wrong token was accepted")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
            rest_scrape = scrape(_metrics_url(rest))
            assert rest_scrape.value("wasmbed_rest_auth_failures_total",
                                     reason="invalid_token") == 1
            assert rest_scrape.value("wasmbed_rest_requests_total", route="/api/v1/devices",
                                     method="GET", status="401") == 1
            ctl = scrape(_metrics_url(controllers))
            assert ctl.types["wasmbed_controller_objects"] == "gauge"
            assert ctl.value("wasmbed_controller_reconcile_errors_total",
                             controller="gateway") == 0
            assert ctl.value("process_resident_memory_bytes") > 0
            assert rest.terminate() == 0 and controllers.terminate() == 0
