"""The control plane's REST API (wasmbed_hil.controlplane.rest) against a real emulated API
server over TLS, driven by an aiohttp client over the real socket.

Each test gets its own ApiServer, KubeClient and RestApi on a LoopThread; the tests are
synchronous and hand coroutines to that loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import io
import json
import logging
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leakcheck import own_garbage

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.controlplane.openapi import OPERATIONS, openapi_document
from wasmbed_hil.controlplane.rest import (
    APPLICATION_FIELDS,
    DEVICE_FIELDS,
    RestApi,
    from_kube_error,
)
from wasmbed_hil.kube.client import Kind, KubeClient, KubeConfig, KubeError, install_crds
from wasmbed_hil.kube.crdgen import object_schema, openapi_schema, schema_errors
from wasmbed_hil.kube.resources import (
    DNS_SUBDOMAIN,
    MAX_MODULE_SIZE,
    Application,
    Device,
    DeviceSpec,
    Gateway,
    GatewaySpec,
    ObjectMeta,
    TargetDevices,
)
from wasmbed_hil.pki import FleetCA, device_identity
from wasmbed_hil.pki.identity import public_spki_der

TOKEN = "rest-token-5f1c9a"
NS = "wb"
DEVICES, APPLICATIONS, GATEWAYS = Kind.of(Device), Kind.of(Application), Kind.of(Gateway)
WASM = b"\0asm\x01\0\0\0"  # the smallest valid module: header only
WASM_B64 = base64.b64encode(WASM).decode()
IDENTITY = "ab" * 32


def new_public_key() -> str:
    return base64.b64encode(public_spki_der(ec.generate_private_key(ec.SECP256R1()))).decode()


class FakeProvisioner:
    """Records calls; issues a fresh P-256 key, or raises `fail` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.keys: dict[str, str] = {}
        self.fail: Exception | None = None

    def check_backend(self, backend: str) -> None:
        from wasmbed_hil.bench.backends import BackendUnavailable
        from wasmbed_hil.bench.backends.registry import require_known

        try:
            require_known(backend)  # as the bench's device manager does
        except BackendUnavailable as exc:
            raise ValueError(str(exc)) from None

    async def provision(self, name: str, backend: str, board: str | None) -> str:
        self.calls.append((name, backend, board))
        if self.fail is not None:
            raise self.fail
        self.keys[name] = new_public_key()
        return self.keys[name]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    content_type: str


@dataclass
class Env:
    loop: LoopThread
    server: ApiServer
    kube: KubeClient
    api: RestApi
    http: aiohttp.ClientSession
    provisioner: FakeProvisioner
    server_stopped: bool = False
    extra: list[RestApi] = field(default_factory=list)

    async def _call(self, method: str, path: str, token: str | None, base: str | None,
                    kwargs: dict[str, Any]) -> Reply:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        async with self.http.request(method, (base or self.api.url) + path, headers=headers,
                                     **kwargs) as response:
            raw = await response.read()
            body = json.loads(raw) if response.content_type == "application/json" else raw
            return Reply(response.status, body, dict(response.headers), response.content_type)

    def call(self, method: str, path: str, *, token: str | None = TOKEN,
             base: str | None = None, **kwargs: Any) -> Reply:
        return self.loop.run(self._call(method, path, token, base, kwargs))

    def kube_list(self, kind: Kind) -> list[dict[str, Any]]:
        return self.loop.run(self.kube.list(kind, NS))["items"]


async def _up(tmp_path: Path, provisioner: FakeProvisioner
              ) -> tuple[ApiServer, KubeClient, RestApi, aiohttp.ClientSession]:
    server = ApiServer(token="kube-s3cret")
    await server.start()
    kube = KubeClient(KubeConfig.from_kubeconfig(server.write_kubeconfig(tmp_path / "kc", NS)))
    await install_crds(kube)
    await kube.ensure_namespace(NS)
    api = RestApi(kube, namespace=NS, token=TOKEN, provisioner=provisioner)
    await api.start()
    return server, kube, api, aiohttp.ClientSession()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    loop = LoopThread("rest-api-test")
    provisioner = FakeProvisioner()
    try:
        server, kube, api, http = loop.run(_up(tmp_path, provisioner))
    except BaseException:
        loop.close()
        gc.collect()
        raise
    state = Env(loop, server, kube, api, http, provisioner)
    # What the test and its teardown leave for the collector warns in this test.
    with own_garbage():
        try:
            yield state
        finally:
            async def down() -> None:
                await http.close()
                for extra in state.extra:
                    await extra.stop()
                await api.stop()
                await kube.close()
                if not state.server_stopped:
                    await server.stop()

            loop.run(down())
            leftovers = loop.close()
    assert not leftovers, f"tasks left on the loop: {leftovers}"


def assert_error(reply: Reply, status: int, field: str | type | None = object,
                 reason: str | None = None) -> dict[str, Any]:
    """A JSON error body of exactly the documented shape; returns its `error` member."""
    assert reply.status == status, reply.body
    assert reply.content_type == "application/json"
    assert set(reply.body) == {"error"}, reply.body
    error = reply.body["error"]
    assert set(error) == {"status", "reason", "message", "field"}, error
    assert error["status"] == status
    assert isinstance(error["reason"], str) and error["reason"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["field"] is None or isinstance(error["field"], str)
    assert "Traceback" not in error["message"]
    if field is not object:
        assert error["field"] == field, error
    if reason is not None:
        assert error["reason"] == reason, error
    return error


def device_body(name: str = "dev", **extra: Any) -> dict[str, Any]:
    return {"name": name, "identity": IDENTITY, **extra}


def app_body(name: str = "app", **extra: Any) -> dict[str, Any]:
    return {"name": name, "wasmBytes": WASM_B64, "targetDevices": {"deviceNames": ["d1"]},
            **extra}


def gateway_object(name: str) -> dict[str, Any]:
    return Gateway(metadata=ObjectMeta(name=name),
                   spec=GatewaySpec(endpoint="gw.example:4423")).to_dict()


# ----------------------------------------------------------------------------- auth


def test_health_and_ready_need_no_token(env: Env) -> None:
    assert (env.call("GET", "/health", token=None).body) == {"status": "ok"}
    reply = env.call("GET", "/ready", token=None)
    assert (reply.status, reply.body) == (200, {"status": "ready"})


def test_auth(env: Env) -> None:
    missing = env.call("GET", "/api/v1/devices", token=None)
    error = assert_error(missing, 401, None, "Unauthorized")
    assert "Bearer" in error["message"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(env.call("GET", "/api/v1/devices", token="wrong"), 401, reason="Unauthorized")
    assert_error(env.call("GET", "/api/v1/devices", token=TOKEN + "x"), 401)
    basic = env.call("GET", "/api/v1/devices", token=None,
                     headers={"Authorization": f"Basic {TOKEN}"})
    assert "scheme" in assert_error(basic, 401)["message"]
    bare = env.call("GET", "/api/v1/devices", token=None, headers={"Authorization": TOKEN})
    assert_error(bare, 401)
    # the scheme is case-insensitive, as in RFC 7235
    lower = env.call("GET", "/api/v1/devices", token=None,
                     headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status == 200
    for path in ("/openapi.json", "/api/v1/gateways", "/nowhere"):
        assert_error(env.call("GET", path, token=None), 401)
    assert_error(env.call("POST", "/api/v1/devices", token=None, json=device_body()), 401)
    assert env.kube_list(DEVICES) == []
    # with the token, unknown routes and methods get the same error body
    assert_error(env.call("GET", "/nowhere"), 404, None)
    not_allowed = env.call("PUT", "/api/v1/devices")
    assert_error(not_allowed, 405)
    assert "GET" in not_allowed.headers["Allow"]
    assert TOKEN not in repr(env.api)


# ----------------------------------------------------------------------------- OpenAPI


def _served_routes(api: RestApi) -> set[tuple[str, str]]:
    routes = set()
    for route in api.app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        routes.add((route.method, info.get("path") or info.get("formatter")))
    return routes


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_lists_every_route_and_nothing_else(env: Env) -> None:
    reply = env.call("GET", "/openapi.json")
    assert reply.status == 200
    doc = reply.body
    assert doc == json.loads(json.dumps(openapi_document()))
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items()
                  for method in ops}
    served = _served_routes(env.api)
    assert served == documented
    assert set(OPERATIONS) == documented
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    # the resource schemas come from the models, through crdgen
    assert schemas["Device"] == openapi_schema(Device)
    assert schemas["Application"] == openapi_schema(Application)
    assert schemas["Gateway"] == openapi_schema(Gateway)
    assert schemas["DeviceSpec"] == object_schema(DeviceSpec)
    assert schemas["TargetDevices"] == object_schema(TargetDevices)
    assert set(schemas["DeviceCreate"]["properties"]) == DEVICE_FIELDS
    assert set(schemas["ApplicationCreate"]["properties"]) == APPLICATION_FIELDS
    for (method, path), op in OPERATIONS.items():
        public = path in ("/health", "/ready")
        assert ("401" in op["responses"]) is not public, (method, path)
        assert op.get("security") == ([] if public else None)
        assert any(code.startswith("2") for code in op["responses"])
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}
        if method == "POST":
            assert op["requestBody"]["content"]


# ----------------------------------------------------------------------------- devices


def test_device_lifecycle(env: Env) -> None:
    key = new_public_key()
    reply = env.call("POST", "/api/v1/devices", json={
        "name": "d1", "labels": {"zone": "a", "example.com/tier": "edge"}, "publicKey": key,
        "deviceType": "sensor", "mcuType": "cortex-m3", "architecture": "armv7m",
        "preferredGateway": "gw1"})
    assert reply.status == 201, reply.body
    view = reply.body
    assert view == {
        "name": "d1", "labels": {"zone": "a", "example.com/tier": "edge"}, "phase": "Pending",
        "deviceId": None, "gateway": None, "lastHeartbeat": None, "apps": [],
        "spec": {"publicKey": key, "deviceType": "sensor", "mcuType": "cortex-m3",
                 "architecture": "armv7m", "preferredGateway": "gw1"},
    }
    assert schema_errors(view["spec"], object_schema(DeviceSpec)) == []
    assert env.call("POST", "/api/v1/devices", json=device_body("d2")).status == 201
    assert env.provisioner.calls == []

    listed = env.call("GET", "/api/v1/devices").body["items"]
    assert [d["name"] for d in listed] == ["d1", "d2"]
    selected = env.call("GET", "/api/v1/devices", params={"labelSelector": "zone=a"}).body
    assert [d["name"] for d in selected["items"]] == ["d1"]
    assert env.call("GET", "/api/v1/devices/d1").body == view

    status = {"phase": "Connected", "deviceId": "0f" * 16,
              "gateway": {"name": "gw1", "endpoint": "gw:4423"},
              "lastHeartbeat": "2025-01-02T03:04:05Z",
              "apps": [{"appId": "a1", "digest": "cd" * 32, "state": "RUNNING"}]}
    env.loop.run(env.kube.patch(DEVICES, "d1", {"status": status}, NS, status=True))
    shown = env.call("GET", "/api/v1/devices/d1").body
    assert {k: shown[k] for k in ("phase", "deviceId", "gateway", "lastHeartbeat")} == {
        "phase": "Connected", "deviceId": "0f" * 16, "gateway": "gw1",
        "lastHeartbeat": "2025-01-02T03:04:05Z"}
    (app,) = shown["apps"]  # as stored, schema defaults included
    assert app == {**app, "appId": "a1", "digest": "cd" * 32, "state": "RUNNING"}

    gone = env.call("DELETE", "/api/v1/devices/d2")
    assert (gone.status, gone.body) == (202, {"name": "d2", "pendingFinalizers": []})
    assert_error(env.call("GET", "/api/v1/devices/d2"), 404, reason="NotFound")

    # deletion through finalizers: 202 at once, the object stays until they are removed
    env.loop.run(env.kube.patch(DEVICES, "d1", {"metadata": {"finalizers": ["wasmbed/x"]}},
                                NS))
    pending = env.call("DELETE", "/api/v1/devices/d1")
    assert (pending.status, pending.body) == (202, {"name": "d1",
                                                    "pendingFinalizers": ["wasmbed/x"]})
    assert env.call("GET", "/api/v1/devices/d1").status == 200
    env.loop.run(env.kube.patch(DEVICES, "d1", {"metadata": {"finalizers": None}}, NS))
    assert_error(env.call("GET", "/api/v1/devices/d1"), 404)
    assert_error(env.call("DELETE", "/api/v1/devices/d1"), 404)


def test_emulated_device_gets_credentials_from_the_provisioner(env: Env) -> None:
    reply = env.call("POST", "/api/v1/devices", json={
        "name": "emu", "emulation": {"backend": "qemu", "board": "mps2-an385"}})
    assert reply.status == 201, reply.body
    assert env.provisioner.calls == [("emu", "qemu", "mps2-an385")]
    spec = reply.body["spec"]
    assert spec["publicKey"] == env.provisioner.keys["emu"]
    assert spec["emulation"] == {"backend": "qemu", "board": "mps2-an385"}
    device_identity(base64.b64decode(spec["publicKey"]))  # a real SubjectPublicKeyInfo

    # a given key or identity wins: nothing is provisioned
    given_identity = env.call("POST", "/api/v1/devices", json=device_body(
        "emu2", emulation={"backend": "virtual"}))
    assert given_identity.status == 201
    assert len(env.provisioner.calls) == 1

    # an invalid request provisions nothing
    bad = env.call("POST", "/api/v1/devices", json={
        "name": "emu3", "emulation": {"backend": "qemu"}, "deviceType": 5})
    assert_error(bad, 422, "spec.deviceType")
    bad_backend = env.call("POST", "/api/v1/devices", json={
        "name": "emu3", "emulation": {"backend": "bochs"}})
    error = assert_error(bad_backend, 422, "spec.emulation.backend")
    assert "unknown backend 'bochs'; available: " in error["message"]  # the registry's list
    assert len(env.provisioner.calls) == 1
    assert [d["metadata"]["name"] for d in env.kube_list(DEVICES)] == ["emu", "emu2"]


def test_provisioner_missing_or_failing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    body = {"name": "emu", "emulation": {"backend": "renode"}}
    env.provisioner.fail = ValueError("no such board")
    assert "no such board" in assert_error(
        env.call("POST", "/api/v1/devices", json=body), 422, "spec.emulation")["message"]
    env.provisioner.fail = RuntimeError("CA offline")
    with caplog.at_level(logging.DEBUG):
        failed = env.call("POST", "/api/v1/devices", json=body)
    assert_error(failed, 502, reason="ProvisioningFailed")
    assert TOKEN not in caplog.text

    class Broken(FakeProvisioner):
        async def provision(self, name: str, backend: str, board: str | None) -> str:
            return "bm90IGEga2V5"  # base64 of "not a key"

    env.api.provisioner = Broken()
    assert_error(env.call("POST", "/api/v1/devices", json=body), 502,
                 reason="ProvisioningFailed")
    env.api.provisioner = None
    error = assert_error(env.call("POST", "/api/v1/devices", json=body), 422, "spec.emulation")
    assert "provisioner" in error["message"]
    assert env.kube_list(DEVICES) == []


def test_count_creates_numbered_devices_and_rolls_back(env: Env) -> None:
    reply = env.call("POST", "/api/v1/devices", json={
        "name": "batch", "count": 3, "labels": {"fleet": "b"}, "emulation": {"backend": "virtual"}})
    assert reply.status == 201, reply.body
    names = [d["name"] for d in reply.body["items"]]
    assert names == ["batch-0", "batch-1", "batch-2"]
    assert [c[0] for c in env.provisioner.calls] == names
    keys = {d["spec"]["publicKey"] for d in reply.body["items"]}
    assert len(keys) == 3  # one key each
    assert all(d["labels"] == {"fleet": "b"} for d in reply.body["items"])

    one = env.call("POST", "/api/v1/devices", json=device_body("solo", count=1))
    assert [d["name"] for d in one.body["items"]] == ["solo-0"]

    for count in (0, 101, -1, True, "3", 2.5, [3]):
        assert_error(env.call("POST", "/api/v1/devices", json=device_body("c", count=count)),
                     422, "count")
    # a name that becomes too long with its suffix
    assert_error(env.call("POST", "/api/v1/devices", json=device_body("x" * 252, count=2)),
                 422, "metadata.name")

    # one collision: 409, and the devices this request created first are removed again
    env.call("POST", "/api/v1/devices", json=device_body("clash-2"))
    clash = env.call("POST", "/api/v1/devices", json=device_body("clash", count=4))
    assert_error(clash, 409, reason="AlreadyExists")
    remaining = sorted(d["metadata"]["name"] for d in env.kube_list(DEVICES))
    assert remaining == ["batch-0", "batch-1", "batch-2", "clash-2", "solo-0"]


def test_a_batch_of_devices_is_created_concurrently_in_order(env: Env) -> None:
    """The Devices of one request are created several at a time (one after the other, a
    request of 100 waited 100 round trips on a busy loop), and come back in their order."""
    original = env.api.kube.create
    in_flight = 0
    most = 0
    second = asyncio.Event()

    async def create(kind: Any, obj: Any, namespace: Any = None) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight >= 2:
            second.set()
        try:
            # the first create waits (at most 5 s) for a second one to be in flight
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second.wait(), 5)
            return await original(kind, obj, namespace)
        finally:
            in_flight -= 1

    env.api.kube.create = create  # type: ignore[method-assign]
    try:
        reply = env.call("POST", "/api/v1/devices", json=device_body("many", count=40))
    finally:
        env.api.kube.create = original  # type: ignore[method-assign]
    assert reply.status == 201, reply.body
    assert [d["name"] for d in reply.body["items"]] == [f"many-{i}" for i in range(40)]
    assert most > 1


# ----------------------------------------------------------------------------- applications


def test_application_json(env: Env) -> None:
    module = WASM + b"\x00\x01\x02"  # header plus bytes: only the header is checked here
    reply = env.call("POST", "/api/v1/applications", json={
        "name": "blink", "wasmBytes": base64.b64encode(module).decode(),
        "targetDevices": {"selector": {"matchLabels": {"zone": "a"},
                                       "matchExpressions": [{"key": "tier", "operator": "In",
                                                             "values": ["edge"]}]}},
        "entry": "run", "args": [1, 2.5], "limits": {"fuel": 1000},
        "description": "blinks", "config": {"period": 5, "nested": {"a": [1]}}})
    assert reply.status == 201, reply.body
    view = reply.body
    assert view["name"] == "blink"
    assert view["phase"] == "Creating"
    assert view["statistics"] == {"targets": 0, "deployed": 0, "running": 0, "failed": 0,
                                  "stopped": 0}
    assert view["deviceStatuses"] == []
    assert view["digest"] == hashlib.sha256(module).hexdigest()
    assert view["targetDevices"]["selector"]["matchLabels"] == {"zone": "a"}
    assert view["createdAt"]
    assert set(view) == {"name", "phase", "statistics", "deviceStatuses", "digest",
                         "targetDevices", "createdAt"}
    stored = env.loop.run(env.kube.get(APPLICATIONS, "blink", NS))
    assert stored["spec"]["entry"] == "run"
    assert stored["spec"]["limits"]["fuel"] == 1000
    assert stored["spec"]["config"] == {"period": 5, "nested": {"a": [1]}}

    assert env.call("POST", "/api/v1/applications", json=app_body("all", targetDevices={
        "allDevices": True})).status == 201
    assert [a["name"] for a in env.call("GET", "/api/v1/applications").body["items"]] == [
        "all", "blink"]
    assert env.call("GET", "/api/v1/applications/blink").body == view

    status = {"phase": "Running", "statistics": {"targets": 1, "deployed": 1, "running": 1},
              "deviceStatuses": [{"device": "d1", "phase": "Running"}]}
    env.loop.run(env.kube.patch(APPLICATIONS, "blink", {"status": status}, NS, status=True))
    shown = env.call("GET", "/api/v1/applications/blink").body
    assert shown["phase"] == "Running"
    assert shown["statistics"] == {"targets": 1, "deployed": 1, "running": 1, "failed": 0,
                                   "stopped": 0}
    assert shown["deviceStatuses"][0]["device"] == "d1"

    assert env.call("DELETE", "/api/v1/applications/blink").status == 202
    assert_error(env.call("GET", "/api/v1/applications/blink"), 404)
    assert_error(env.call("POST", "/api/v1/applications", json=app_body("all")), 409,
                 reason="AlreadyExists")


def _form(module: bytes | None, metadata: Any, **extra_parts: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    if module is not None:  # a file object: aiohttp warns about large raw bytes
        form.add_field("module", io.BytesIO(module), filename="app.wasm",
                       content_type="application/wasm")
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        form.add_field("metadata", text, content_type="application/json")
    for name, value in extra_parts.items():
        form.add_field(name, value, filename=name, content_type="application/octet-stream")
    return form


def test_application_multipart_upload(env: Env) -> None:
    module = WASM + bytes(range(256)) * 4  # binary content, CR/LF included
    metadata = {"name": "up", "targetDevices": {"deviceNames": ["d1", "d2"]}, "args": [7]}
    reply = env.call("POST", "/api/v1/applications", data=_form(module, metadata))
    assert reply.status == 201, reply.body
    assert reply.body["digest"] == hashlib.sha256(module).hexdigest()
    stored = env.loop.run(env.kube.get(APPLICATIONS, "up", NS))
    assert base64.b64decode(stored["spec"]["wasmBytes"]) == module
    assert stored["spec"]["args"] == [7]

    md = {"name": "up2", "targetDevices": {"allDevices": True}}
    post = env.call  # shorter lines below
    assert_error(post("POST", "/api/v1/applications", data=_form(None, md)), 422, "module")
    assert_error(post("POST", "/api/v1/applications", data=_form(module, None)), 422,
                 "metadata")
    assert_error(post("POST", "/api/v1/applications", data=_form(b"\x7fELF....", md)), 422,
                 "module")
    assert_error(post("POST", "/api/v1/applications", data=_form(b"\0asm\x02\0\0\0", md)), 422,
                 "module")
    assert_error(post("POST", "/api/v1/applications", data=_form(
        WASM + bytes(MAX_MODULE_SIZE), md)), 422, "module")
    assert_error(post("POST", "/api/v1/applications", data=_form(
        module, {**md, "wasmBytes": WASM_B64})), 422, "wasmBytes")
    assert_error(post("POST", "/api/v1/applications", data=_form(
        module, {**md, "colour": "red"})), 422, "colour")
    assert_error(post("POST", "/api/v1/applications", data=_form(module, "{not json")), 400)
    assert_error(post("POST", "/api/v1/applications", data=_form(module, "[1]")), 422,
                 "metadata")
    assert_error(post("POST", "/api/v1/applications", data=_form(
        module, {"name": "up2", "targetDevices": {}})), 422, "spec.targetDevices")
    assert_error(post("POST", "/api/v1/applications", data=_form(module, md, extra=b"x")), 422,
                 "extra")
    twice = _form(module, md)
    twice.add_field("module", module, filename="b.wasm")
    assert_error(post("POST", "/api/v1/applications", data=twice), 422, "module")
    garbled = post("POST", "/api/v1/applications", data=b"--nope\r\n\r\nxx",
                   headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert 400 <= garbled.status < 500
    assert_error(garbled, garbled.status)
    no_boundary = post("POST", "/api/v1/applications", data=b"x",
                       headers={"Content-Type": "multipart/form-data"})
    assert_error(no_boundary, 400)
    assert [a["metadata"]["name"] for a in env.kube_list(APPLICATIONS)] == ["up"]


def test_application_validation(env: Env) -> None:
    def post(body: Any) -> Reply:
        return env.call("POST", "/api/v1/applications", json=body)

    assert_error(post(app_body(wasmBytes=base64.b64encode(b"\x7fELF\x01\0\0\0").decode())),
                 422, "spec.wasmBytes")
    assert_error(post(app_body(wasmBytes=base64.b64encode(b"\0asm\x0d\0\0\0").decode())),
                 422, "spec.wasmBytes")
    assert_error(post(app_body(wasmBytes="not base64!")), 422, "spec.wasmBytes")
    assert_error(post(app_body(wasmBytes="AGFzbQ")), 422, "spec.wasmBytes")  # no padding
    too_big = json.dumps(app_body(wasmBytes=base64.b64encode(WASM + bytes(MAX_MODULE_SIZE))
                                  .decode())).encode()
    assert_error(env.call("POST", "/api/v1/applications", data=io.BytesIO(too_big),
                          headers={"Content-Type": "application/json"}), 422, "spec.wasmBytes")
    assert_error(post(app_body(targetDevices={"deviceNames": ["a"], "allDevices": True})), 422,
                 "spec.targetDevices")
    assert_error(post(app_body(targetDevices={"selector": {"matchExpressions": [
        {"key": "k", "operator": "Exists", "values": ["v"]}]}})), 422,
        "spec.targetDevices.selector.matchExpressions[0].values")
    assert_error(post(app_body(limits={"fuel": -1})), 422, "spec.limits.fuel")
    assert_error(post(app_body(limits={"fuel": 2**64})), 422, "spec.limits.fuel")
    assert_error(post(app_body(args=["one"])), 422, "spec.args[0]")
    assert_error(post(app_body(digest="00" * 32)), 422, "spec.digest")
    assert_error(post(app_body(unknown=1)), 422, "unknown")
    assert_error(post(app_body(name="Not_A_Name")), 422, "metadata.name")
    assert_error(post({"wasmBytes": WASM_B64, "targetDevices": {"allDevices": True}}), 422,
                 "metadata.name")
    assert env.kube_list(APPLICATIONS) == []


# ----------------------------------------------------------------------------- gateways


def test_revoking_a_device_sets_spec_revoked(env: Env) -> None:
    assert env.call("POST", "/api/v1/devices", json=device_body("d1")).status == 201
    assert "revoked" not in env.call("GET", "/api/v1/devices/d1").body["spec"]
    reply = env.call("POST", "/api/v1/devices/d1/revoke")  # no body needed
    assert reply.status == 200, reply.body
    assert reply.body["name"] == "d1" and reply.body["spec"]["revoked"] is True
    stored = env.loop.run(env.kube.get(DEVICES, "d1", NS))
    assert stored["spec"] == {"identity": IDENTITY, "revoked": True}  # merged, not replaced
    again = env.call("POST", "/api/v1/devices/d1/revoke", json={})  # idempotent
    assert again.status == 200 and again.body["spec"]["revoked"] is True
    assert_error(env.call("POST", "/api/v1/devices/d1/revoke", json={"revoked": False}), 422,
                 "revoked")
    assert_error(env.call("POST", "/api/v1/devices/d1/revoke", json=[1]), 422, None)
    assert_error(env.call("POST", "/api/v1/devices/nope/revoke"), 404)
    assert env.loop.run(env.kube.get_or_none(DEVICES, "nope", NS)) is None


def test_gateways_and_pairing(env: Env) -> None:
    env.loop.run(env.kube.create(GATEWAYS, gateway_object("gw1"), NS))
    env.loop.run(env.kube.create(GATEWAYS, gateway_object("gw2"), NS))
    env.loop.run(env.kube.patch(GATEWAYS, "gw2", {"status": {
        "phase": "Running", "connectedDevices": 3, "enrolledDevices": 5}}, NS, status=True))
    listed = env.call("GET", "/api/v1/gateways").body["items"]
    assert listed == [
        {"name": "gw1", "phase": "Pending", "endpoint": "gw.example:4423",
         "connectedDevices": 0, "enrolledDevices": 0, "pairingMode": False},
        {"name": "gw2", "phase": "Running", "endpoint": "gw.example:4423",
         "connectedDevices": 3, "enrolledDevices": 5, "pairingMode": False},
    ]
    assert env.call("GET", "/api/v1/gateways/gw2").body == listed[1]
    before = env.call("GET", "/api/v1/gateways/gw1/pairing").body
    assert before["pairingMode"] is False and before["name"] == "gw1"

    on = env.call("POST", "/api/v1/gateways/gw1/pairing",
                  json={"enabled": True, "timeoutSeconds": 60})
    assert (on.status, on.body) == (200, {"name": "gw1", "pairingMode": True,
                                          "pairingTimeoutSeconds": 60})
    stored = env.loop.run(env.kube.get(GATEWAYS, "gw1", NS))
    assert stored["spec"]["config"]["pairingMode"] is True
    assert stored["spec"]["config"]["heartbeatIntervalSeconds"]  # merged, not replaced
    assert stored["spec"]["endpoint"] == "gw.example:4423"
    off = env.call("POST", "/api/v1/gateways/gw1/pairing", json={"enabled": False})
    assert off.body == {"name": "gw1", "pairingMode": False, "pairingTimeoutSeconds": 60}
    assert env.call("GET", "/api/v1/gateways/gw1/pairing").body == off.body
    assert env.call("GET", "/api/v1/gateways/gw1").body["pairingMode"] is False

    def pair(body: Any) -> Reply:
        return env.call("POST", "/api/v1/gateways/gw1/pairing", json=body)

    assert_error(pair({}), 422, "enabled")
    assert_error(pair({"enabled": "yes"}), 422, "enabled")
    assert_error(pair({"enabled": 1}), 422, "enabled")
    for timeout in (0, -5, 1.5, True, "60", 2**63):
        assert_error(pair({"enabled": True, "timeoutSeconds": timeout}), 422, "timeoutSeconds")
    assert_error(pair({"enabled": True, "extra": 1}), 422, "extra")
    assert_error(pair([True]), 422, None)
    assert_error(env.call("POST", "/api/v1/gateways/nope/pairing", json={"enabled": True}),
                 404)
    assert_error(env.call("GET", "/api/v1/gateways/nope"), 404)
    assert_error(env.call("GET", "/api/v1/gateways/nope/pairing"), 404)
    assert env.loop.run(env.kube.get_or_none(GATEWAYS, "nope", NS)) is None


# ----------------------------------------------------------------------------- errors


def test_error_classes(env: Env) -> None:
    post = env.call
    # 400: malformed JSON, bad label selector (the API server's 400 passed on), bad query
    assert_error(post("POST", "/api/v1/devices", data=b"{", headers={
        "Content-Type": "application/json"}), 400, reason="BadRequest")
    assert_error(env.call("GET", "/api/v1/devices", params={"labelSelector": "a in (b"}), 400)
    assert_error(env.call("GET", "/api/v1/devices", params={"watch": "1"}), 400, "watch")
    # a body that is not what its Content-Encoding says (JSON and multipart alike)
    for encoding in ("gzip", "deflate"):
        error = assert_error(post("POST", "/api/v1/devices", json=device_body(), headers={
            "Content-Encoding": encoding}), 400, None, "BadRequest")
        assert error["message"] == ("malformed request body: Can not decode content-encoding: "
                                    f"{encoding}")
        assert_error(post("POST", "/api/v1/applications", data=_form(WASM, {"name": "x"}),
                          headers={"Content-Encoding": encoding}), 400, None, "BadRequest")
    assert env.kube_list(DEVICES) == [] and env.kube_list(APPLICATIONS) == []
    # 415: wrong content types
    assert_error(post("POST", "/api/v1/devices", data="name=x"), 415,
                 reason="UnsupportedMediaType")
    assert_error(post("POST", "/api/v1/devices", data=b"{}", headers={
        "Content-Type": "text/plain"}), 415)
    assert_error(post("POST", "/api/v1/applications", data=b"{}", headers={
        "Content-Type": "application/xml"}), 415)
    assert_error(post("POST", "/api/v1/gateways/g/pairing", data=b"{}"), 415)
    # 413: over the limit, by Content-Length and by a chunked body without one
    huge = json.dumps({"name": "x", "deviceType": "y" * (2 * 1024 * 1024)}).encode()
    assert_error(post("POST", "/api/v1/devices", data=io.BytesIO(huge), headers={
        "Content-Type": "application/json"}), 413, reason="PayloadTooLarge")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    assert_error(post("POST", "/api/v1/devices", data=chunks(), headers={
        "Content-Type": "application/json"}), 413)
    form = _form(WASM + bytes(3 * 1024 * 1024), {"name": "big"})
    assert_error(post("POST", "/api/v1/applications", data=form), 413)
    # 408: a body that stops arriving
    env.api.body_timeout = 0.2

    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"name": '
        await asyncio.Event().wait()  # never set: the server gives up first

    for path in ("/api/v1/devices", "/api/v1/applications"):
        assert_error(post("POST", path, data=stalls(), headers={
            "Content-Type": "application/json"}), 408, reason="RequestTimeout")
    assert_error(post("POST", "/api/v1/applications", data=stalls(), headers={
        "Content-Type": "multipart/form-data; boundary=b"}), 408)
    env.api.body_timeout = 30
    # 422: unknown fields and invalid values, with the field path
    assert_error(post("POST", "/api/v1/devices", json=device_body(colour="red")), 422, "colour",
                 reason="Invalid")
    assert_error(post("POST", "/api/v1/devices", json={"name": "x"}), 422, "spec")
    assert_error(post("POST", "/api/v1/devices", json=device_body(identity="AB" * 32)), 422,
                 "spec.identity")
    assert_error(post("POST", "/api/v1/devices", json=device_body(
        publicKey=new_public_key())), 422, "spec.identity")  # identity of another key
    assert_error(post("POST", "/api/v1/devices", json=device_body(labels={"a b": "c"})), 422,
                 "metadata.labels.a b")
    assert_error(post("POST", "/api/v1/devices", json=device_body(labels={"a": 1})), 422,
                 "metadata.labels.a")
    for key in ("/a", "a/", "example.com/"):  # an empty prefix or name around the '/'
        assert_error(post("POST", "/api/v1/devices", json=device_body(labels={key: "v"})),
                     422, f"metadata.labels.{key}")
    assert_error(post("POST", "/api/v1/devices", json=device_body(name="UPPER")), 422,
                 "metadata.name")
    assert_error(post("POST", "/api/v1/devices", json=[device_body()]), 422, None)
    # 404 for names no object can have (and that must not turn into other API paths)
    for name in ("..", "%2E%2E", "UPPER", "a" * 300):
        assert_error(env.call("GET", f"/api/v1/devices/{name}"), 404)
        assert_error(env.call("DELETE", f"/api/v1/devices/{name}"), 404)
    assert env.loop.run(env.kube.request("GET", f"/api/v1/namespaces/{NS}"))  # still there
    # 409
    assert env.call("POST", "/api/v1/devices", json=device_body("twice")).status == 201
    assert_error(env.call("POST", "/api/v1/devices", json=device_body("twice")), 409,
                 None, "AlreadyExists")
    assert [d["metadata"]["name"] for d in env.kube_list(DEVICES)] == ["twice"]


def test_api_server_errors_map_to_documented_statuses() -> None:
    cases = [
        (KubeError(0, "Unreachable", "refused"), 503, "ApiServerUnavailable"),
        (KubeError(404, "NotFound", "x not found"), 404, "NotFound"),
        (KubeError(409, "AlreadyExists", "x exists"), 409, "AlreadyExists"),
        (KubeError(422, "Invalid", "bad"), 422, "Invalid"),
        (KubeError(403, "Forbidden", "RBAC says no"), 403, "Forbidden"),
        (KubeError(413, "Error", "too big"), 413, "Error"),
        (KubeError(401, "Unauthorized", "Unauthorized"), 502, "BadGateway"),
        (KubeError(500, "InternalError", "boom"), 502, "BadGateway"),
        (KubeError(504, "Timeout", "slow"), 502, "BadGateway"),
    ]
    for exc, status, reason in cases:
        error = from_kube_error(exc).body()["error"]
        assert (error["status"], error["reason"]) == (status, reason)
        assert exc.message in error["message"]


def test_api_server_down_is_503(env: Env) -> None:
    env.loop.run(env.server.stop())
    env.server_stopped = True
    assert env.call("GET", "/health", token=None).status == 200
    assert_error(env.call("GET", "/ready", token=None), 503, None, "NotReady")
    for method, path, body in [
        ("GET", "/api/v1/devices", None),
        ("GET", "/api/v1/devices/d1", None),
        ("POST", "/api/v1/devices", device_body()),
        ("DELETE", "/api/v1/applications/a", None),
        ("POST", "/api/v1/applications", app_body()),
        ("GET", "/api/v1/gateways", None),
        ("POST", "/api/v1/gateways/g/pairing", {"enabled": True}),
    ]:
        assert_error(env.call(method, path, json=body), 503, None, "ApiServerUnavailable")
    # validation does not need the API server
    assert_error(env.call("POST", "/api/v1/devices", json={"name": 1}), 422)


# ----------------------------------------------------------------------------- garbage

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
            allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
not_string = json_values.filter(lambda v: v is not None and not isinstance(v, str))
not_object = json_values.filter(lambda v: v is not None and not isinstance(v, dict))
huge = st.integers(100_000, 600_000).map(lambda n: "x" * n)
not_base64 = st.text(min_size=1, max_size=60).filter(
    lambda s: any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
                  for c in s))


def _poison(base: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]]
            ) -> st.SearchStrategy[dict[str, Any]]:
    """The base body with one field replaced by a value that field can never take."""
    return st.one_of(*(strategy.map(lambda v, k=key: {**base, k: v})
                       for key, strategy in fields.items()))


_DEVICE_BASE = {"name": "dev", "identity": IDENTITY, "labels": {"a": "b"},
                "deviceType": "sensor"}
_unknown_key = st.text(min_size=1, max_size=20)
garbage_devices = st.one_of(
    not_object,
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    _poison(_DEVICE_BASE, {
        "name": st.one_of(not_string, st.text(max_size=30).filter(
            lambda s: not re.fullmatch(DNS_SUBDOMAIN.strip("^$"), s)), huge),
        "identity": st.one_of(not_string, st.text(max_size=63), huge),
        "publicKey": st.one_of(not_string, not_base64, huge,
                               st.binary(min_size=3, max_size=90).map(
                                   lambda b: base64.b64encode(b).decode())),
        "labels": st.one_of(not_object, st.dictionaries(st.text(max_size=8), not_string,
                                                        min_size=1, max_size=3)),
        "deviceType": st.one_of(not_string, huge),
        "mcuType": st.one_of(not_string, huge),
        "architecture": st.one_of(not_string, huge),
        "preferredGateway": st.one_of(not_string, huge),
        "emulation": st.one_of(not_object, st.fixed_dictionaries(
            {"backend": st.text(max_size=10).filter(
                lambda s: s not in ("virtual", "qemu", "renode"))})),
        "count": st.one_of(st.integers().filter(lambda n: not 1 <= n <= 100),
                           json_values.filter(lambda v: v is not None
                                              and not isinstance(v, int))),
    }),
    st.tuples(_unknown_key.filter(lambda k: k not in DEVICE_FIELDS), json_values).map(
        lambda kv: {**_DEVICE_BASE, kv[0]: kv[1]}),
)

_APP_BASE = app_body()
non_wasm_b64 = st.binary(max_size=64).filter(lambda b: not b.startswith(WASM)).map(
    lambda b: base64.b64encode(b).decode())
garbage_applications = st.one_of(
    not_object,
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    _poison(_APP_BASE, {
        "name": st.one_of(not_string, huge, st.just("")),
        "wasmBytes": st.one_of(not_string, not_base64, non_wasm_b64, huge, st.just("")),
        "targetDevices": st.one_of(not_object, st.just({}), st.just(
            {"deviceNames": ["a"], "allDevices": True}), st.just({"allDevices": False}),
            st.fixed_dictionaries({"deviceNames": not_object.filter(
                lambda v: not isinstance(v, list) or not v or not all(
                    isinstance(x, str) for x in v))})),
        "entry": st.one_of(not_string, huge, st.just("")),
        "args": st.one_of(not_object.filter(lambda v: not isinstance(v, list)),
                          st.lists(st.text(), min_size=1, max_size=3)),
        "limits": st.one_of(not_object, st.fixed_dictionaries(
            {"fuel": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63),
                               st.text())})),
        "description": st.one_of(not_string, huge),
        "config": not_object,
        "digest": st.one_of(not_string, st.text(max_size=63)),
    }),
    st.tuples(_unknown_key.filter(lambda k: k not in APPLICATION_FIELDS), json_values).map(
        lambda kv: {**_APP_BASE, kv[0]: kv[1]}),
)

RAW_GARBAGE = [
    b"", b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"a":' * 5_000, b"NaN", b'{"count": NaN}',
    b'{"name": "x", "args": [1e999]}', b"1" * 5000, b'{"name": "x"', b"null", b"true",
    b'"just a string"', b"{\"name\": \"\\ud800\"}",
]


def _garbage_checker(env: Env, path: str) -> Any:
    def check(body: Any, raw: bytes | None = None, content_type: str = "application/json"
              ) -> None:
        kwargs: dict[str, Any] = {"json": body} if raw is None else {
            "data": raw, "headers": {"Content-Type": content_type}}
        reply = env.call("POST", path, **kwargs)
        assert 400 <= reply.status < 500, (body if raw is None else raw[:200], reply.body)
        assert_error(reply, reply.status)

    return check


def test_garbage_device_bodies_get_4xx_json_errors(env: Env) -> None:
    check = _garbage_checker(env, "/api/v1/devices")
    for raw in RAW_GARBAGE:
        check(None, raw)

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=garbage_devices)
    def run(body: Any) -> None:
        check(body)

    run()

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(raw=st.binary(max_size=300))
    def run_raw(raw: bytes) -> None:
        check(None, raw)

    run_raw()
    assert env.kube_list(DEVICES) == []
    assert env.provisioner.calls == []


def test_garbage_application_bodies_get_4xx_json_errors(env: Env) -> None:
    check = _garbage_checker(env, "/api/v1/applications")
    for raw in RAW_GARBAGE:
        check(None, raw)

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=garbage_applications)
    def run(body: Any) -> None:
        check(body)

    run()

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(raw=st.binary(max_size=300), boundary=st.sampled_from(["b", "zz", "-"]))
    def run_multipart(raw: bytes, boundary: str) -> None:
        check(None, raw, f"multipart/form-data; boundary={boundary}")

    run_multipart()
    assert env.kube_list(APPLICATIONS) == []


# ----------------------------------------------------------------------------- serving


def _tls_context() -> tuple[ssl.SSLContext, bytes]:
    ca = FleetCA.create("rest test CA")
    credentials = ca.issue_gateway("rest-api", ("127.0.0.1", "localhost"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory) / "c.pem", Path(directory) / "k.pem"
        cert.write_bytes(credentials.cert_pem)
        key.write_bytes(credentials.key_pem)
        context.load_cert_chain(cert, key)
    return context, ca.cert_pem


def test_handed_over_socket_and_tls(env: Env) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server_context, ca_pem = _tls_context()
        api = RestApi(env.kube, namespace=NS, token="other-token", ssl_context=server_context)
        env.extra.append(api)
        env.loop.run(api.start(sock))
        assert api.url == f"https://127.0.0.1:{port}"
        with pytest.raises(RuntimeError):
            env.loop.run(api.start())
        client_context = ssl.create_default_context(cadata=ca_pem.decode())
        reply = env.call("GET", "/api/v1/devices", token="other-token", base=api.url,
                         ssl=client_context)
        assert (reply.status, reply.body) == (200, {"items": []})
        assert_error(env.call("GET", "/api/v1/devices", base=api.url, ssl=client_context),
                     401)
        env.loop.run(api.stop())
    finally:
        sock.close()
    with pytest.raises(ValueError):
        RestApi(env.kube, namespace=NS, token="")


# ----------------------------------------------------------------------------- not HTTP we take

SECRET = "Bearer " + TOKEN


def _raw_exchange(env: Env, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the REST API, read the answer until the server closes."""
    host, port = env.api.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


OVERLONG = {
    "request-line": f"GET /api/v1/devices?x={'a' * 9000} HTTP/1.1\r\nHost: h\r\n"
                    f"Authorization: {SECRET}\r\n\r\n",
    "header-value": f"GET /api/v1/devices HTTP/1.1\r\nHost: h\r\nAuthorization: {SECRET}\r\n"
                    f"X-Long: {'b' * 9000}\r\n\r\n",
    "header-name": f"GET /api/v1/devices HTTP/1.1\r\nHost: h\r\n{'c' * 9000}: 1\r\n\r\n",
    "too-many-headers": "GET /api/v1/devices HTTP/1.1\r\nHost: h\r\n"
                        + "".join(f"X-H{i}: {i}\r\n" for i in range(200)) + "\r\n",
    "authorization-too-long": f"GET /api/v1/devices HTTP/1.1\r\nHost: h\r\n"
                              f"Authorization: {SECRET}{'d' * 9000}\r\n\r\n",
    "not-http": "\x16\x03\x01 garbage\r\n\r\n",
}


@pytest.mark.parametrize("request_text", OVERLONG.values(), ids=OVERLONG.keys())
def test_a_request_aiohttp_cannot_parse_gets_the_json_error_body_and_no_traceback(
    env: Env, request_text: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = _raw_exchange(env, request_text.encode("latin-1"))
    reply = Reply(status, json.loads(body), headers, headers["content-type"].split(";")[0])
    error = assert_error(reply, 400, None, "BadRequest")
    for echoed in ("aaaa", "bbbb", "cccc", "dddd", TOKEN, "garbage"):
        assert echoed not in error["message"]  # nothing of the request comes back
    records = [r for r in caplog.records if r.name.startswith("aiohttp")
               or r.name.startswith("wasmbed_hil")]
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info], [
        r.getMessage() for r in records]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    # the server goes on serving
    assert env.call("GET", "/api/v1/devices").status == 200


# ----------------------------------------------------------------------------- metrics


def _rest_scrape(env: Env) -> Any:
    from prometheus_client import generate_latest

    from wasmbed_hil.bench.scrape import parse

    return parse(generate_latest(env.api.metrics.registry).decode())


def test_metrics_count_requests_by_route_template_method_and_status(env: Env) -> None:
    """Each answered request is one sample under its route's template (never the path sent,
    so names do not grow the series), its method and the status the error middleware settled
    on; the latency histogram counts the same."""
    assert env.call("POST", "/api/v1/devices", json=device_body("m1")).status == 201
    assert env.call("GET", "/api/v1/devices/m1").status == 200
    assert env.call("GET", "/api/v1/devices/nope").status == 404
    assert env.call("GET", "/api/v1/devices/m1", token=None).status == 401
    assert env.call("GET", "/api/v1/devices/m1", token="wrong").status == 401
    assert env.call("GET", "/api/v1/devices", headers={"Authorization": "Basic eDp5"}
                    ).status == 401
    assert env.call("GET", "/no/such/route").status == 404
    assert env.call("PUT", "/api/v1/devices").status == 405  # no such route for PUT
    assert env.call("GET", "/health", token=None).status == 200
    s = _rest_scrape(env)
    requests = {(dict(ls)["route"], dict(ls)["method"], dict(ls)["status"]): v
                for (n, ls), v in s.samples.items() if n == "wasmbed_rest_requests_total"}
    assert requests == {
        ("/api/v1/devices", "POST", "201"): 1,
        ("/api/v1/devices/{name}", "GET", "200"): 1,
        ("/api/v1/devices/{name}", "GET", "404"): 1,
        ("/api/v1/devices/{name}", "GET", "401"): 2,
        ("/api/v1/devices", "GET", "401"): 1,
        ("unmatched", "GET", "404"): 1,
        ("unmatched", "PUT", "405"): 1,
        ("/health", "GET", "200"): 1,
    }
    assert s.by_label("wasmbed_rest_auth_failures_total", "reason") == {
        "missing": 1, "scheme": 1, "invalid_token": 1}
    counts = {(dict(ls)["route"], dict(ls)["method"]): v for (n, ls), v in s.samples.items()
              if n == "wasmbed_rest_request_duration_seconds_count"}
    assert counts[("/api/v1/devices/{name}", "GET")] == 4
    assert sum(counts.values()) == sum(requests.values())
    assert s.value("wasmbed_rest_request_duration_seconds_sum", route="/api/v1/devices",
                   method="POST") > 0
    assert s.types["wasmbed_rest_request_duration_seconds"] == "histogram"
    assert s.value("process_resident_memory_bytes") > 0


def test_metrics_endpoint_is_served_on_its_own_port_without_a_token(env: Env) -> None:
    """`serve_metrics` answers `GET /metrics` on a port of its own (no token, as a
    Prometheus scrape in the cluster); the REST port does not serve /metrics, and a scrape
    is no REST request."""
    from wasmbed_hil.bench.scrape import scrape

    host, port = env.loop.run(env.api.serve_metrics("127.0.0.1", 0))
    assert port != int(env.api.url.rsplit(":", 1)[1])
    assert env.call("GET", "/metrics").status == 404  # authenticated, but no such route
    url = f"http://{host}:{port}/metrics"
    first = scrape(url)
    assert scrape(url).value("wasmbed_rest_requests_total", route="unmatched",
                             method="GET", status="404") == 1
    with pytest.raises(RuntimeError):
        env.loop.run(env.api.serve_metrics("127.0.0.1", 0))
    assert first.by_label("wasmbed_rest_auth_failures_total", "reason") == {
        "missing": 0, "scheme": 0, "invalid_token": 0}


def test_metrics_method_label_is_bounded() -> None:
    from wasmbed_hil.controlplane.metrics import METHODS, method_label

    assert {method_label(m) for m in METHODS} == METHODS
    assert method_label("PROPFIND") == method_label("get") == "other"
