"""The generated CRDs (deploy/crds/) on the emulated API server: registered, served, and
validating objects the Python models produce, through the official client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.kube.resources import Application, Device

CRDS = Path(__file__).resolve().parent.parent / "deploy" / "crds"
GROUP, VERSION, NS = "wasmbed.github.io", "v1", "default"


@pytest.fixture
def custom(tmp_path: Path) -> Iterator[k8s.CustomObjectsApi]:
    loop = LoopThread("crds-served")
    server = ApiServer(token="t0ken")
    loop.run(server.start())
    try:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(server.write_kubeconfig(tmp_path / "kc")),
                                    client_configuration=configuration)
        with k8s.ApiClient(configuration) as api:
            ext = k8s.ApiextensionsV1Api(api)
            for path in sorted(CRDS.glob("*.yaml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if doc:
                        ext.create_custom_resource_definition(doc)
            yield k8s.CustomObjectsApi(api)
    finally:
        loop.run(server.stop())
        loop.close()


def test_models_round_trip_through_the_served_crds(custom: k8s.CustomObjectsApi) -> None:
    device = Device.from_dict({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Device",
        "metadata": {"name": "dev-1", "labels": {"fleet": "a"}},
        "spec": {"identity": "ab" * 32, "mcuType": "cortex-m3",
                 "emulation": {"backend": "qemu", "board": "mps2-an385"}},
    })
    created = custom.create_namespaced_custom_object(GROUP, VERSION, NS, "devices",
                                                     device.to_dict())
    assert created["metadata"]["resourceVersion"]
    again = Device.from_dict(custom.get_namespaced_custom_object(GROUP, VERSION, NS, "devices",
                                                                 "dev-1"))
    assert again.spec == device.spec

    wasm = base64.b64encode(modules.build("add")).decode()
    app = Application.from_dict({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Application",
        "metadata": {"name": "adder"},
        "spec": {"wasmBytes": wasm, "targetDevices": {"selector": {"matchLabels": {"fleet": "a"}}},
                 "args": [1, 2]},
    })
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "applications", app.to_dict())
    served = Application.from_dict(custom.get_namespaced_custom_object(
        GROUP, VERSION, NS, "applications", "adder"))
    assert served.spec.limits == app.spec.limits  # defaults filled the same way on both sides


def test_served_crds_refuse_what_the_models_refuse(custom: k8s.CustomObjectsApi) -> None:
    bad = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Device", "metadata": {"name": "bad"},
           "spec": {"identity": "not-hex"}}
    with pytest.raises(ValueError):
        Device.from_dict(bad)
    with pytest.raises(k8s.exceptions.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "devices", bad)
    assert refused.value.status == 422
    assert "identity" in refused.value.body


def test_an_application_with_a_module_near_the_limit_is_stored(
        custom: k8s.CustomObjectsApi) -> None:
    """A 1 MiB module is ~1.4 MB of JSON: above aiohttp's default body limit, within the
    3 MB that kube-apiserver accepts."""
    module = modules.data_module(1_040_000)
    assert 1_000_000 < len(module) <= 1024 * 1024
    app = Application.from_dict({
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Application", "metadata": {"name": "big"},
        "spec": {"wasmBytes": base64.b64encode(module).decode(),
                 "targetDevices": {"allDevices": True}},
    })
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, "applications", app.to_dict())
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "applications", "big")
    assert base64.b64decode(stored["spec"]["wasmBytes"]) == module
