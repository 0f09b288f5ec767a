"""An emulated Kubernetes API server with Wasmbed's CRDs installed and its namespace made,
for tests that run the services (gateway, REST API, controllers) as processes against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.kube.client import KubeClient, KubeConfig, install_crds

NS = "wasmbed"


def emulated_kube(tmp_path: Path, hil_loop: LoopThread, *,
                  token: str) -> Iterator[tuple[Path, KubeClient]]:
    """Yield (kubeconfig path, client); the server and client are closed afterwards. Use it
    from a fixture: `yield from emulated_kube(tmp_path, hil_loop, token=...)`."""
    server = ApiServer(token=token)
    hil_loop.run(server.start())
    path = server.write_kubeconfig(tmp_path / "kubeconfig", NS)
    client = KubeClient(KubeConfig.from_kubeconfig(path))
    try:
        async def prepare() -> None:
            await install_crds(client)
            await client.ensure_namespace(NS)

        hil_loop.run(prepare())
        yield path, client
    finally:
        hil_loop.run(client.close())
        hil_loop.run(server.stop())
