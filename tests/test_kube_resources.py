"""Device, Application and Gateway models and the CRDs generated from them."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmbed_hil.gateway.config import GatewayConfig
from wasmbed_hil.kube import crdgen
from wasmbed_hil.kube.resources import (
    API_VERSION,
    MAX_MODULE_SIZE,
    RESOURCES,
    Application,
    ApplicationPhase,
    ApplicationStatistics,
    DeploymentPhase,
    Device,
    DeviceAppStatus,
    Gateway,
    GatewayPhase,
    LabelSelector,
    LabelSelectorRequirement,
    Resource,
    ResourceError,
    SelectorOperator,
    TargetDevices,
    rfc3339,
)
from wasmbed_hil.kube.schema import enum_values, hints, json_name, unwrap_optional
from wasmbed_hil.pki import device_identity
from wasmbed_hil.protocol.messages import Limits
from wasmbed_hil.protocol.types import AppState, DevicePhase, Outcome

REGENERATE = "regenerate with: .venv/bin/python -m wasmbed_hil.kube.crdgen"
WASM = b"\x00asm\x01\x00\x00\x00"
NOW = "2025-01-02T03:04:05Z"


def _spki() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


SPKI = _spki()
SPKI_B64 = base64.b64encode(SPKI).decode()
IDENTITY = device_identity(SPKI)


def condition(**over: Any) -> dict[str, Any]:
    return {"type": "Ready", "status": "True", "reason": "Connected",
            "lastTransitionTime": NOW, "message": "ok", "observedGeneration": 2, **over}


def device_full() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": "dev-1", "namespace": "fleet", "labels": {"room": "lab"},
                     "generation": 2, "creationTimestamp": NOW, "resourceVersion": "7",
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {
            "publicKey": SPKI_B64,
            "identity": IDENTITY,
            "deviceType": "sensor",
            "mcuType": "cortex-m3",
            "architecture": "armv7m",
            "preferredGateway": "gw-1",
            "emulation": {"backend": "qemu", "board": "mps2-an385"},
            "revoked": False,
        },
        "status": {
            "phase": "Connected",
            "deviceId": "0123456789abcdef0123456789abcdef",
            "gateway": {"name": "gw-1", "endpoint": "gw-1.fleet:4423", "connectedAt": NOW},
            "connectedSince": NOW,
            "lastHeartbeat": NOW,
            "uptimeMs": 12345,
            "memoryFree": 65536,
            "apps": [{"appId": "blink", "digest": hashlib.sha256(WASM).hexdigest(),
                      "state": "RUNNING", "application": "blink", "deployment": "Running",
                      "runs": 3, "runId": 7, "outcome": "RETURNED", "values": [42],
                      "lastUpdated": "2025-01-02T03:04:05Z"}],
            "conditions": [condition()],
            "observedGeneration": 2,
        },
    }


def application_full() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {"name": "blink", "namespace": "fleet"},
        "spec": {
            "wasmBytes": base64.b64encode(WASM).decode(),
            "targetDevices": {"selector": {
                "matchLabels": {"room": "lab"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "broken", "operator": "DoesNotExist"}],
            }, "allDevices": False},
            "name": "Blink",
            "description": "blinks a LED",
            "digest": hashlib.sha256(WASM).hexdigest(),
            "entry": "run",
            "args": [1, 2.5, -3],
            "limits": {"memoryBytes": 65536, "fuel": 0, "timeoutMs": 250},
            "config": {"env": {"A": "1"}, "nested": [1, {"x": None}]},
        },
        "status": {
            "phase": "PartiallyRunning",
            "deviceStatuses": [
                {"device": "dev-1", "phase": "Running", "runId": 3, "outcome": "RETURNED",
                 "values": [42, 0.5], "lastUpdated": NOW},
                {"device": "dev-2", "phase": "Failed", "outcome": "OUT_OF_FUEL",
                 "error": "fuel", "lastUpdated": NOW},
            ],
            "statistics": {"targets": 2, "deployed": 1, "running": 1, "failed": 1,
                           "stopped": 0},
            "lastUpdated": NOW,
            "error": "one device failed",
            "conditions": [condition(type="Deployed", status="False", reason="DeviceFailed")],
            "observedGeneration": 1,
        },
    }


def gateway_full() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": "gw-1", "namespace": "fleet"},
        "spec": {
            "endpoint": "gw-1.fleet",
            "port": 8080,
            "tlsPort": 4423,
            "maxDevices": 50,
            "config": {"heartbeatIntervalSeconds": 10, "heartbeatTimeoutSeconds": 40,
                       "enrollmentTimeoutSeconds": 120, "connectionTimeoutSeconds": 300,
                       "pairingMode": True, "pairingTimeoutSeconds": 60},
        },
        "status": {"phase": "Running", "connectedDevices": 3, "enrolledDevices": 5,
                   "lastHeartbeat": NOW, "conditions": [condition()],
                   "observedGeneration": 1},
    }


def minimal(kind: type[Resource]) -> dict[str, Any]:
    spec = {
        Device: {"identity": IDENTITY},
        Application: {"wasmBytes": base64.b64encode(WASM).decode(),
                      "targetDevices": {"allDevices": True}},
        Gateway: {"endpoint": "gw"},
    }[kind]
    return {"apiVersion": API_VERSION, "kind": kind.KIND, "metadata": {"name": "x"},
            "spec": spec}


FULL = {Device: device_full, Application: application_full, Gateway: gateway_full}


# ----------------------------------------------------------------------------- generated YAML


def test_crd_files_are_up_to_date() -> None:
    stale = crdgen.stale_crds()
    assert not stale, f"deploy/crds is out of date with the models ({stale}): {REGENERATE}"
    for name, crd in crdgen.all_crds().items():
        docs = list(yaml.safe_load_all((crdgen.DEFAULT_OUT / name).read_text()))
        assert docs == [crd], f"{name}: {REGENERATE}"


def test_crd_directory_holds_only_generated_files() -> None:
    on_disk = {p.name for p in crdgen.DEFAULT_OUT.glob("*.yaml")}
    assert on_disk == set(crdgen.all_crds()), REGENERATE


def test_crdgen_check_and_write(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    path = tmp_path / "gateways.wasmbed.github.io.yaml"
    path.write_text(path.read_text().replace("maxDevices", "maxdevices"))
    assert crdgen.stale_crds(tmp_path) == [path.name]


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        (Device, "wbdev", ["Phase", "Gateway", "Device ID", "Age"]),
        (Application, "wbapp", ["Phase", "Targets", "Running", "Age"]),
        (Gateway, "wbgw", ["Phase", "Connected", "Enrolled", "Age"]),
    ],
)
def test_crd_shape(kind: type[Resource], short: str, columns: list[str]) -> None:
    crd = crdgen.crd_for(kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{kind.PLURAL}.wasmbed.github.io"
    assert spec["group"] == "wasmbed.github.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind.KIND
    assert spec["names"]["plural"] == kind.KIND.lower() + "s"
    assert spec["names"]["singular"] == kind.KIND.lower()
    assert spec["names"]["shortNames"] == [short]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata"):
            continue
        node = schema  # every printer column points at a declared field of that type
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == column["type"], column


def test_only_free_form_config_preserves_unknown_fields() -> None:
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("x-kubernetes-preserve-unknown-fields"):
                found.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for kind in RESOURCES:
        walk(crdgen.openapi_schema(kind), kind.KIND)
    assert found == ["Application/properties/spec/properties/config"]


def test_schema_is_structural() -> None:
    """Every node has a type, objects declare properties (or are maps / free-form)."""

    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, path
        if node["type"] == "object" and not path.endswith("metadata"):
            assert ("properties" in node or "additionalProperties" in node
                    or node.get("x-kubernetes-preserve-unknown-fields")), path
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")
        for key in node.get("x-kubernetes-list-map-keys", []):
            item = node["items"]
            assert key in item.get("required", []) or "default" in item["properties"][key]

    for kind in RESOURCES:
        walk(crdgen.openapi_schema(kind), kind.KIND)


# ----------------------------------------------------------------------------- models <-> schema


def model_paths(cls: Any, prefix: str) -> set[str]:
    paths: set[str] = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{json_name(f.name)}"
        paths.add(path)
        tp, _ = unwrap_optional(hints(cls)[f.name])
        if typing.get_origin(tp) is list:
            (tp,) = typing.get_args(tp)
            path += "[]"
        if dataclasses.is_dataclass(tp):
            paths |= model_paths(tp, path)
    return paths


def schema_paths(node: dict[str, Any], prefix: str) -> set[str]:
    paths: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}"
        paths.add(path)
        if sub["type"] == "array":
            sub, path = sub["items"], path + "[]"
        paths |= schema_paths(sub, path)
    return paths


@pytest.mark.parametrize("kind", RESOURCES, ids=lambda k: k.KIND)
def test_every_model_field_is_in_the_schema_and_back(kind: type[Resource]) -> None:
    schema = crdgen.openapi_schema(kind)
    for part, cls in (("spec", kind.SPEC), ("status", kind.STATUS)):
        in_models = model_paths(cls, part)
        in_schema = schema_paths(schema["properties"][part], part)
        assert in_models - in_schema == set(), "fields missing from the CRD: " + REGENERATE
        assert in_schema - in_models == set(), "CRD fields with no model field: " + REGENERATE


REQUIRED_FIELDS = {
    Device: """spec.publicKey spec.identity spec.deviceType spec.mcuType spec.architecture
        spec.preferredGateway spec.emulation.backend spec.emulation.board spec.revoked
        status.phase
        status.deviceId status.gateway.name status.gateway.endpoint status.gateway.connectedAt
        status.connectedSince status.lastHeartbeat status.uptimeMs status.memoryFree
        status.apps[].appId status.apps[].digest status.apps[].state status.conditions[].type
        status.conditions[].status status.conditions[].reason status.conditions[].message
        status.conditions[].lastTransitionTime status.conditions[].observedGeneration
        status.observedGeneration""",
    Application: """spec.name spec.description spec.wasmBytes spec.digest spec.entry spec.args
        spec.limits.memoryBytes spec.limits.fuel spec.limits.timeoutMs
        spec.targetDevices.deviceNames spec.targetDevices.selector.matchLabels
        spec.targetDevices.selector.matchExpressions[].operator spec.targetDevices.allDevices
        spec.config status.phase status.deviceStatuses[].device status.deviceStatuses[].phase
        status.deviceStatuses[].runId status.deviceStatuses[].outcome
        status.deviceStatuses[].values status.deviceStatuses[].error
        status.deviceStatuses[].lastUpdated status.statistics.targets
        status.statistics.deployed status.statistics.running status.statistics.failed
        status.statistics.stopped status.lastUpdated status.error status.conditions[].type
        status.observedGeneration""",
    Gateway: """spec.endpoint spec.port spec.tlsPort spec.maxDevices
        spec.config.heartbeatIntervalSeconds spec.config.heartbeatTimeoutSeconds
        spec.config.enrollmentTimeoutSeconds spec.config.connectionTimeoutSeconds
        spec.config.pairingMode spec.config.pairingTimeoutSeconds status.phase
        status.connectedDevices status.enrolledDevices status.conditions[].type
        status.lastHeartbeat status.observedGeneration""",
}


@pytest.mark.parametrize("kind", RESOURCES, ids=lambda k: k.KIND)
def test_the_required_fields_exist(kind: type[Resource]) -> None:
    schema = crdgen.openapi_schema(kind)
    have = schema_paths(schema, "").union(p.lstrip(".") for p in schema_paths(schema, ""))
    missing = set(REQUIRED_FIELDS[kind].split()) - have
    assert not missing


def _prop(kind: type[Resource], path: str) -> dict[str, Any]:
    node = crdgen.openapi_schema(kind)
    for part in path.split("."):
        if part.endswith("[]"):
            node = node["properties"][part[:-2]]["items"]
        else:
            node = node["properties"][part]
    return node


@pytest.mark.parametrize(
    ("kind", "path", "values"),
    [
        (Device, "status.phase", [p.value for p in DevicePhase]),
        (Device, "status.apps[].state", [s.name for s in AppState]),
        (Application, "status.phase", [p.value for p in ApplicationPhase]),
        (Application, "status.deviceStatuses[].outcome", [o.name for o in Outcome]),
        (Application, "status.deviceStatuses[].phase", [p.value for p in DeploymentPhase]),
        (Gateway, "status.phase", [p.value for p in GatewayPhase]),
        (Gateway, "status.conditions[].status", ["True", "False", "Unknown"]),
    ],
)
def test_schema_enums_equal_python_enums(kind: type[Resource], path: str,
                                         values: list[str]) -> None:
    assert _prop(kind, path)["enum"] == values


def test_emulation_backend_is_a_name_resolved_by_the_bench() -> None:
    """The product does not list the bench's backends (it cannot import the bench): the
    schema takes a DNS label, and every backend of the registry is one."""
    from wasmbed_hil.bench.backends import backend_names

    schema = _prop(Device, "spec.emulation.backend")
    assert "enum" not in schema and schema["maxLength"] == 63
    assert {"virtual", "qemu", "renode"} <= set(backend_names())
    for name in backend_names():
        assert crdgen.schema_errors(name, schema) == [], name
    for bad in ("", "QEMU", "qemu.arm", "-qemu", "x" * 64):
        assert crdgen.schema_errors(bad, schema) != [], bad


def test_phases_follow_upstream() -> None:
    assert enum_values(DevicePhase) == ["Pending", "Enrolling", "Enrolled", "Connected",
                                        "Disconnected", "Unreachable"]
    assert enum_values(ApplicationPhase) == ["Creating", "Deploying", "Running",
                                             "PartiallyRunning", "Failed", "Stopping",
                                             "Stopped", "Deleting"]
    assert enum_values(GatewayPhase) == ["Pending", "Running", "Failed", "Stopped"]
    for state in AppState:
        assert DeploymentPhase.from_app_state(state).name == state.name


def test_defaults_match_the_platform() -> None:
    app = Application.from_dict(minimal(Application))
    wire = Limits()
    limits = app.spec.limits
    assert (limits.memory_bytes, limits.fuel, limits.timeout_ms) == (1 << 20, 50_000_000, 1000)
    assert limits.to_wire() == wire
    assert app.spec.entry == "main" and app.spec.args == []
    gw = Gateway.from_dict(minimal(Gateway))
    assert gw.spec.max_devices == 100 == GatewayConfig().max_devices
    c = gw.spec.config
    assert (c.heartbeat_interval_seconds, c.heartbeat_timeout_seconds,
            c.enrollment_timeout_seconds, c.connection_timeout_seconds, c.pairing_mode,
            c.pairing_timeout_seconds) == (30, 90, 300, 600, False, 300)
    # the schema carries the same defaults, so that the API server fills them in
    assert _prop(Gateway, "spec.maxDevices")["default"] == 100
    assert _prop(Gateway, "spec.config")["default"] == {}
    assert _prop(Gateway, "spec.config.heartbeatTimeoutSeconds")["default"] == 90
    assert _prop(Application, "spec.limits.fuel")["default"] == wire.fuel
    assert _prop(Application, "spec.entry")["default"] == "main"
    assert _prop(Device, "status.phase")["default"] == "Pending"
    assert _prop(Application, "spec.wasmBytes")["maxLength"] == 1_398_104
    assert len(base64.b64encode(bytes(MAX_MODULE_SIZE))) == 1_398_104


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", RESOURCES, ids=lambda k: k.KIND)
def test_round_trip(kind: type[Resource]) -> None:
    for raw in (FULL[kind](), minimal(kind)):
        obj = kind.from_dict(copy.deepcopy(raw))
        assert kind.from_dict(obj.to_dict()) == obj
        assert obj.validate() == obj
        again = obj.to_dict()
        assert kind.from_dict(again).to_dict() == again
    full = FULL[kind]()
    assert kind.from_dict(full).to_dict() == full  # the full samples are already canonical


def test_to_dict_shape() -> None:
    dev = Device.from_dict(minimal(Device))
    out = dev.to_dict()
    assert list(out) == ["apiVersion", "kind", "metadata", "spec"]  # no status yet
    assert out["metadata"] == {"name": "x"}
    assert out["spec"] == {"identity": IDENTITY}
    app = Application.from_dict(application_full())
    assert app.spec.target_devices.selector is not None
    assert app.status is not None
    assert app.status.device_statuses[1].outcome is Outcome.OUT_OF_FUEL
    assert app.status.phase is ApplicationPhase.PARTIALLY_RUNNING
    assert app.spec.config == {"env": {"A": "1"}, "nested": [1, {"x": None}]}
    assert app.spec.module == WASM
    dev = Device.from_dict(device_full())
    assert dev.status is not None and dev.status.apps[0].state is AppState.RUNNING
    assert dev.metadata.extra == {"managedFields": [{"manager": "kubectl"}]}
    assert dev.spec.device_identity == IDENTITY
    assert Device.from_dict({**minimal(Device), "spec": {"publicKey": SPKI_B64}}
                            ).spec.device_identity == IDENTITY


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kind", RESOURCES, ids=lambda k: k.KIND)
def test_valid_samples_pass_the_schema(kind: type[Resource]) -> None:
    schema = crdgen.openapi_schema(kind)
    for raw in (FULL[kind](), minimal(kind), kind.from_dict(minimal(kind)).to_dict()):
        assert crdgen.schema_errors(raw, schema) == []


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = raw
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return raw


# 1 MiB + 1 has the same base64 length as 1 MiB: only Python sees it; + 3 is longer.
BIG = base64.b64encode(bytes(MAX_MODULE_SIZE + 3)).decode()
JUST_TOO_BIG = base64.b64encode(bytes(MAX_MODULE_SIZE + 1)).decode()

# (kind, field path, bad value, path in the ResourceError); all are refused by the schema too.
INVALID = [
    (Device, "status.phase", "Online", "status.phase"),
    (Device, "status.phase", 3, "status.phase"),
    (Device, "status.deviceId", "0123", "status.deviceId"),
    (Device, "status.apps[0].state", "Running", "status.apps[0].state"),
    (Device, "status.apps[0].digest", "z" * 64, "status.apps[0].digest"),
    (Device, "status.uptimeMs", -1, "status.uptimeMs"),
    (Device, "status.uptimeMs", 1.5, "status.uptimeMs"),
    (Device, "status.lastHeartbeat", "yesterday", "status.lastHeartbeat"),
    (Device, "status.conditions[0].status", "Yes", "status.conditions[0].status"),
    (Device, "status.conditions", [condition(), condition()], "status.conditions[1].type"),
    (Device, "spec.identity", "ABCDEF" * 10 + "ABCD", "spec.identity"),
    (Device, "spec.publicKey", "not base64!", "spec.publicKey"),
    # A well-formed but unknown name ("bochs") passes here; the device manager refuses it
    # (tests/test_controlplane_parts.py). A malformed one is refused by both.
    (Device, "spec.emulation", {"backend": "Bochs PC"}, "spec.emulation.backend"),
    (Device, "spec.emulation", {"backend": "x" * 64}, "spec.emulation.backend"),
    (Device, "spec.emulation", {"board": "mps2-an385"}, "spec.emulation.backend"),
    (Device, "spec.deviceType", ["sensor"], "spec.deviceType"),
    (Device, "spec.colour", "red", "spec.colour"),
    (Application, "spec.digest", "xyz", "spec.digest"),
    (Application, "spec.wasmBytes", "@@@@", "spec.wasmBytes"),
    (Application, "spec.wasmBytes", BIG, "spec.wasmBytes"),
    (Application, "spec.args", ["1"], "spec.args[0]"),
    (Application, "spec.args", [True], "spec.args[0]"),
    (Application, "spec.args", list(range(17)), "spec.args"),
    (Application, "spec.entry", "", "spec.entry"),
    (Application, "spec.limits.fuel", -5, "spec.limits.fuel"),
    (Application, "spec.limits.memoryBytes", 2**32, "spec.limits.memoryBytes"),
    (Application, "spec.targetDevices.allDevices", "yes", "spec.targetDevices.allDevices"),
    (Application, "spec.targetDevices.selector.matchExpressions[0].operator", "Like",
     "spec.targetDevices.selector.matchExpressions[0].operator"),
    (Application, "status.phase", "Done", "status.phase"),
    (Application, "status.deviceStatuses[0].outcome", "Returned",
     "status.deviceStatuses[0].outcome"),
    (Application, "status.statistics.running", -1, "status.statistics.running"),
    (Application, "status.deviceStatuses[1].device", "dev-1", "status.deviceStatuses[1].device"),
    (Gateway, "spec.maxDevices", -1, "spec.maxDevices"),
    (Gateway, "spec.maxDevices", "100", "spec.maxDevices"),
    (Gateway, "spec.port", 70000, "spec.port"),
    (Gateway, "spec.config.pairingMode", 1, "spec.config.pairingMode"),
    (Gateway, "spec.config.heartbeatIntervalSeconds", 0, "spec.config.heartbeatIntervalSeconds"),
    (Gateway, "status.phase", "Connected", "status.phase"),
    (Gateway, "status.connectedDevices", -2, "status.connectedDevices"),
    (Gateway, "spec", "gw", "spec"),
]


@pytest.mark.parametrize(
    ("kind", "path", "value", "error_path"), INVALID,
    ids=[f"{k.KIND}-{p}-{v!r:.20}" for k, p, v, _ in INVALID],
)
def test_invalid_input_is_refused_by_both(kind: type[Resource], path: str, value: Any,
                                          error_path: str) -> None:
    raw = _set(FULL[kind](), path, value)
    assert crdgen.schema_errors(raw, crdgen.openapi_schema(kind)) != []
    with pytest.raises(ResourceError) as info:
        kind.from_dict(raw)
    assert info.value.path == error_path
    assert str(info.value).startswith(error_path + ":")


# Rules the schema cannot say: from_dict alone refuses these, the schema lets them through.
PYTHON_ONLY = [
    (Application, "spec.targetDevices", {"deviceNames": ["a"], "allDevices": True},
     "spec.targetDevices", "exactly one"),
    (Application, "spec.targetDevices", {"deviceNames": ["a"], "selector": {}},
     "spec.targetDevices", "exactly one"),
    (Application, "spec.targetDevices", {}, "spec.targetDevices", "exactly one"),
    (Application, "spec.targetDevices", {"allDevices": False}, "spec.targetDevices",
     "exactly one"),
    (Application, "spec.targetDevices", {"deviceNames": ["a", "a"]},
     "spec.targetDevices.deviceNames", "duplicate"),
    (Application, "spec.digest", "0" * 64, "spec.digest", "SHA-256"),
    (Application, "spec.wasmBytes", JUST_TOO_BIG, "spec.wasmBytes", "1048576 bytes"),
    (Application, "spec.targetDevices.selector.matchExpressions[0].values", [],
     "spec.targetDevices.selector.matchExpressions[0].values", "needs values"),
    (Device, "spec.identity", "0" * 64, "spec.identity", "SHA-256"),
    (Device, "spec.publicKey", base64.b64encode(b"not a key").decode(), "spec.publicKey",
     "SubjectPublicKeyInfo"),
    (Device, "spec", {"deviceType": "sensor"}, "spec", "publicKey"),
    (Gateway, "spec.config.heartbeatTimeoutSeconds", 10,
     "spec.config.heartbeatTimeoutSeconds", "must exceed"),
]


@pytest.mark.parametrize(
    ("kind", "path", "value", "error_path", "words"), PYTHON_ONLY,
    ids=[f"{k.KIND}-{p}-{v!r:.20}" for k, p, v, _, _ in PYTHON_ONLY],
)
def test_cross_field_rules(kind: type[Resource], path: str, value: Any, error_path: str,
                           words: str) -> None:
    raw = _set(FULL[kind](), path, value)
    assert crdgen.schema_errors(raw, crdgen.openapi_schema(kind)) == []
    with pytest.raises(ResourceError, match=words) as info:
        kind.from_dict(raw)
    assert info.value.path == error_path


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({**minimal(Device), "apiVersion": "wasmbed.github.io/v1alpha1"}, "apiVersion"),
        ({**minimal(Device), "kind": "Gateway"}, "kind"),
        ({**minimal(Device), "metadata": {}}, "metadata.name"),
        ({**minimal(Device), "metadata": {"name": "Bad_Name"}}, "metadata.name"),
        ({**minimal(Device), "metadata": {"name": "x", "labels": {"a": 1}}}, "metadata.labels.a"),
        ({k: v for k, v in minimal(Device).items() if k != "spec"}, "spec"),
        ({**minimal(Device), "extra": 1}, "extra"),
        ([], ""),
    ],
)
def test_envelope_errors(raw: Any, path: str) -> None:
    with pytest.raises(ResourceError) as info:
        Device.from_dict(raw)
    assert info.value.path == path


def test_null_optional_fields_are_absent() -> None:
    raw = minimal(Application)
    raw["spec"]["digest"] = None
    raw["spec"]["entry"] = None  # Kubernetes prunes nulls: the default applies
    app = Application.from_dict(raw)
    assert app.spec.digest is None and app.spec.entry == "main"
    raw["spec"]["wasmBytes"] = None
    with pytest.raises(ResourceError, match=r"spec\.wasmBytes: must not be null"):
        Application.from_dict(raw)


# ----------------------------------------------------------------------------- helpers


def test_targeting_and_selectors() -> None:
    sel = LabelSelector(
        match_labels={"room": "lab"},
        match_expressions=[
            LabelSelectorRequirement("tier", SelectorOperator.IN, ["a"]),
            LabelSelectorRequirement("broken", SelectorOperator.DOES_NOT_EXIST),
            LabelSelectorRequirement("zone", SelectorOperator.NOT_IN, ["x"]),
            LabelSelectorRequirement("room", SelectorOperator.EXISTS),
        ],
    )
    assert sel.matches({"room": "lab", "tier": "a"})
    assert not sel.matches({"room": "lab", "tier": "b"})
    assert not sel.matches({"room": "lab", "tier": "a", "broken": "1"})
    assert not sel.matches({"room": "lab", "tier": "a", "zone": "x"})
    assert LabelSelector().matches({})
    assert TargetDevices(selector=sel).selects("d", {"room": "lab", "tier": "a"})
    assert TargetDevices(device_names=["d"]).selects("d")
    assert not TargetDevices(device_names=["d"]).selects("e")
    assert TargetDevices(all_devices=True).selects("e")
    with pytest.raises(ResourceError, match="exactly one"):
        TargetDevices()


def test_statistics_count() -> None:
    statuses = [DeviceAppStatus(device=f"d{i}", phase=p) for i, p in enumerate(
        [DeploymentPhase.RUNNING, DeploymentPhase.RUNNING, DeploymentPhase.FAILED,
         DeploymentPhase.STOPPED, DeploymentPhase.PENDING, DeploymentPhase.INSTALLED])]
    assert ApplicationStatistics.count(statuses) == ApplicationStatistics(
        targets=6, deployed=4, running=2, failed=1, stopped=1
    )


def test_gateway_config_from_resource() -> None:
    gw = Gateway.from_dict(gateway_full())
    config = gw.gateway_config()
    assert config.name == "gw-1"
    assert (config.heartbeat_interval_s, config.heartbeat_timeout_s) == (10.0, 40.0)
    assert (config.pairing, config.pairing_timeout_s, config.max_devices) == (True, 60.0, 50)
    assert gw.gateway_config(max_frame_size=32 * 1024).max_frame_size == 32 * 1024


def test_timestamps() -> None:
    stamp = rfc3339()
    raw = device_full()
    raw["status"]["lastHeartbeat"] = stamp
    assert Device.from_dict(raw).status.last_heartbeat == stamp  # type: ignore[union-attr]
    assert crdgen.schema_errors(raw, crdgen.openapi_schema(Device)) == []
    raw["status"]["lastHeartbeat"] = "2025-01-02T03:04:05"  # no zone
    with pytest.raises(ResourceError, match=r"status\.lastHeartbeat"):
        Device.from_dict(raw)
    assert crdgen.schema_errors(raw, crdgen.openapi_schema(Device)) != []
