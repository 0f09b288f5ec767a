"""The OpenAPI 3.1 document of the REST API (`wasmbed_hil.controlplane.rest`).

The resource parts (Device/Application/Gateway specs, statuses, target selection, limits)
are derived from the models through `wasmbed_hil.kube.crdgen`, so the document changes with
the CRDs. What is written here by hand is the REST layer only: the routes, the request
bodies' REST-only fields (name, labels, count, the multipart parts), the flat views and the
error body. tests/test_rest_api.py checks that every route served appears here and that every
path here is served.
"""

from __future__ import annotations

import copy
from typing import Any

from ..kube.crdgen import object_schema, openapi_schema
from ..kube.resources import (
    DNS_SUBDOMAIN,
    HEX64,
    MAX_MODULE_SIZE,
    Application,
    ApplicationSpec,
    ApplicationStatistics,
    ApplicationStatus,
    Device,
    DeviceApp,
    DeviceAppStatus,
    DeviceSpec,
    DeviceStatus,
    Gateway,
    GatewaySettings,
    GatewayStatus,
    TargetDevices,
)

OPENAPI_VERSION = "3.1.0"
API_PREFIX = "/api/v1"
MAX_COUNT = 100  # devices one POST may create (upstream's count)

__all__ = ["API_PREFIX", "MAX_COUNT", "OPERATIONS", "components", "openapi_document"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _prop(cls: type, name: str) -> dict[str, Any]:
    """One property schema of a model, as the CRD declares it."""
    return copy.deepcopy(object_schema(cls)["properties"][name])


def _strict(properties: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": required, "additionalProperties": False}


def _labels() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63},
            "description": "Kubernetes labels (keys and values in label syntax)."}


def _name(what: str) -> dict[str, Any]:
    return {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253,
            "description": f"metadata.name of the {what}: a lowercase RFC 1123 subdomain."}


def _device_create() -> dict[str, Any]:
    spec = object_schema(DeviceSpec)
    properties: dict[str, Any] = {
        "name": _name("Device (with count: the prefix of name-0..name-(count-1))"),
        "labels": _labels(),
        **copy.deepcopy(spec["properties"]),
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT,
                  "description": "Create this many devices, named name-0..name-(count-1)."},
    }
    return _strict(
        properties, ["name"],
        "A Device to create. The Device spec fields are given flat. One of publicKey and "
        "identity is required unless emulation is given: then the server's provisioner "
        "issues the credentials and supplies publicKey.",
    )


def _application_fields() -> dict[str, Any]:
    spec = object_schema(ApplicationSpec)
    properties = copy.deepcopy(spec["properties"])
    properties.pop("name")  # the display name: the REST name is metadata.name
    return {"name": _name("Application"), **properties}


def _application_create() -> dict[str, Any]:
    properties = _application_fields()
    properties["wasmBytes"]["description"] = (
        f"The module, base64: a WebAssembly binary (magic \\0asm, version 1) of at most "
        f"{MAX_MODULE_SIZE} bytes."
    )
    return _strict(properties, ["name", "wasmBytes", "targetDevices"],
                   "An Application to create, with its module inline (base64).")


def _application_metadata() -> dict[str, Any]:
    properties = _application_fields()
    properties.pop("wasmBytes")
    return _strict(properties, ["name", "targetDevices"],
                   "The multipart `metadata` part: an ApplicationCreate without wasmBytes.")


def _device_view() -> dict[str, Any]:
    properties = {
        "name": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "phase": _prop(DeviceStatus, "phase"),
        "deviceId": _nullable({"type": "string"}),
        "gateway": _nullable({"type": "string", "description": "Name of the connected Gateway."}),
        "lastHeartbeat": _nullable({"type": "string", "format": "date-time"}),
        "apps": {"type": "array", "items": object_schema(DeviceApp)},
        "spec": ref("DeviceSpec"),
    }
    return _strict(properties, list(properties),
                   "A Device, flat. phase is Pending while the Device has no status.")


def _application_view() -> dict[str, Any]:
    properties = {
        "name": {"type": "string"},
        "phase": _prop(ApplicationStatus, "phase"),
        "statistics": object_schema(ApplicationStatistics),
        "deviceStatuses": {"type": "array", "items": object_schema(DeviceAppStatus)},
        "digest": _nullable({"type": "string", "pattern": HEX64,
                             "description": "Hex SHA-256 of the module."}),
        "targetDevices": ref("TargetDevices"),
        "createdAt": _nullable({"type": "string", "format": "date-time"}),
    }
    return _strict(properties, list(properties),
                   "An Application, flat (without its module). phase is Creating while the "
                   "Application has no status.")


def _gateway_view() -> dict[str, Any]:
    properties = {
        "name": {"type": "string"},
        "phase": _prop(GatewayStatus, "phase"),
        "endpoint": {"type": "string"},
        "connectedDevices": _prop(GatewayStatus, "connectedDevices"),
        "enrolledDevices": _prop(GatewayStatus, "enrolledDevices"),
        "pairingMode": _prop(GatewaySettings, "pairingMode"),
    }
    return _strict(properties, list(properties),
                   "A Gateway, flat. phase is Pending while the Gateway has no status.")


def _pairing_view() -> dict[str, Any]:
    properties = {
        "name": {"type": "string"},
        "pairingMode": _prop(GatewaySettings, "pairingMode"),
        "pairingTimeoutSeconds": _prop(GatewaySettings, "pairingTimeoutSeconds"),
    }
    return _strict(properties, list(properties), "A Gateway's pairing settings.")


def _pairing_request() -> dict[str, Any]:
    properties = {
        "enabled": {"type": "boolean", "description": "spec.config.pairingMode"},
        "timeoutSeconds": {"type": "integer", "minimum": 1,
                           "description": "spec.config.pairingTimeoutSeconds"},
    }
    return _strict(properties, ["enabled"],
                   "Turn pairing mode on or off (a merge patch of spec.config).")


def _items(item: str) -> dict[str, Any]:
    return _strict({"items": {"type": "array", "items": ref(item)}}, ["items"],
                   f"A list of {item}s.")


def components() -> dict[str, Any]:
    """The `components` section: schemas and the bearer security scheme."""
    error = {
        "type": "object",
        "properties": {
            "status": {"type": "integer", "description": "The HTTP status."},
            "reason": {"type": "string", "description": "CamelCase reason, e.g. Invalid."},
            "message": {"type": "string"},
            "field": _nullable({"type": "string", "description": (
                "The offending field: its path in the Kubernetes object (spec.targetDevices, "
                "metadata.name) or the REST-only request field (count, module, enabled).")}),
        },
        "required": ["status", "reason", "message", "field"],
        "additionalProperties": False,
    }
    schemas: dict[str, Any] = {
        "Device": openapi_schema(Device),
        "Application": openapi_schema(Application),
        "Gateway": openapi_schema(Gateway),
        "DeviceSpec": object_schema(DeviceSpec),
        "TargetDevices": object_schema(TargetDevices),
        "DeviceCreate": _device_create(),
        "ApplicationCreate": _application_create(),
        "ApplicationMetadata": _application_metadata(),
        "ApplicationUpload": {
            "type": "object",
            "properties": {
                "module": {"type": "string", "contentMediaType": "application/wasm",
                           "description": f"The raw .wasm file (at most {MAX_MODULE_SIZE} "
                           "bytes)."},
                "metadata": ref("ApplicationMetadata"),
            },
            "required": ["module", "metadata"],
        },
        "DeviceView": _device_view(),
        "DeviceList": _items("DeviceView"),
        "ApplicationView": _application_view(),
        "ApplicationList": _items("ApplicationView"),
        "GatewayView": _gateway_view(),
        "GatewayList": _items("GatewayView"),
        "PairingView": _pairing_view(),
        "PairingRequest": _pairing_request(),
        "Deletion": _strict(
            {"name": {"type": "string"},
             "pendingFinalizers": {"type": "array", "items": {"type": "string"},
                                   "description": "Finalizers still to run; empty when the "
                                   "object is already gone."}},
            ["name", "pendingFinalizers"], "A deletion the API server accepted."),
        "Health": _strict({"status": {"type": "string", "const": "ok"}}, ["status"],
                          "The process is up."),
        "Ready": _strict({"status": {"type": "string", "const": "ready"}}, ["status"],
                         "The API server answers."),
        "Error": _strict({"error": error}, ["error"], "Every 4xx and 5xx body."),
    }
    return {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "The token the server was started with."}},
    }


# ----------------------------------------------------------------------------- operations

_ERRORS = {
    400: "Malformed request (JSON syntax, bad label selector).",
    401: "Missing or wrong bearer token.",
    404: "No such object.",
    408: "The request body did not arrive in time.",
    409: "The object already exists.",
    413: "Request body over the limit.",
    415: "Unsupported Content-Type.",
    422: "Unknown field or invalid value; `field` names it.",
    502: "The API server failed, or the provisioner did.",
    503: "The API server cannot be reached.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    op_id: str, summary: str, ok: tuple[int, dict[str, Any], str], *errors: int,
    body: dict[str, Any] | None = None, public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    status, schema, description = ok
    responses = {str(status): _json(schema, description)}
    codes = set(errors) | ({502, 503} if not public else set())
    if not public:
        codes.add(401)
    for code in sorted(codes):
        responses[str(code)] = _json(ref("Error"), _ERRORS[code])
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if public:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if parameters:
        op["parameters"] = parameters
    return op


def _revoke_op() -> dict[str, Any]:
    op = _op(
        "revokeDevice", "Revoke a Device's identity: sets spec.revoked to true (one-way); the "
        "gateways drop its session and refuse it from then on, across restarts.",
        (200, ref("DeviceView"), "The Device as now set."), 400, 404, 408, 413, 415, 422,
        body={"application/json": {"schema": _strict({}, [], "No fields; the body may be "
                                                      "left out.")}},
        parameters=_NAME)
    op["requestBody"]["required"] = False
    return op


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_SELECTOR = [{"name": "labelSelector", "in": "query", "required": False,
              "schema": {"type": "string"},
              "description": "Kubernetes label selector, e.g. `zone=a,tier in (x,y)`."}]
_CREATED_DEVICES = {"oneOf": [ref("DeviceView"), ref("DeviceList")],
                    "description": "The view; with count, {items: [views]}."}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): _op(
        "health", "Liveness: always ok.", (200, ref("Health"), "Up."), public=True),
    ("GET", "/ready"): _op(
        "ready", "Readiness: the API server answers a cheap request.",
        (200, ref("Ready"), "Ready."), 503, public=True),
    ("GET", "/openapi.json"): _op(
        "openapi", "This document.",
        (200, {"type": "object"}, "OpenAPI 3.1 document.")),
    ("GET", f"{API_PREFIX}/devices"): _op(
        "listDevices", "List Devices.", (200, ref("DeviceList"), "The Devices."), 400,
        parameters=_SELECTOR),
    ("POST", f"{API_PREFIX}/devices"): _op(
        "createDevices", "Create a Device (or count of them).",
        (201, _CREATED_DEVICES, "Created."), 400, 409, 408, 413, 415, 422,
        body={"application/json": {"schema": ref("DeviceCreate")}}),
    ("GET", f"{API_PREFIX}/devices/{{name}}"): _op(
        "getDevice", "One Device.", (200, ref("DeviceView"), "The Device."), 404,
        parameters=_NAME),
    ("DELETE", f"{API_PREFIX}/devices/{{name}}"): _op(
        "deleteDevice", "Delete a Device (finalizers run first).",
        (202, ref("Deletion"), "Deletion accepted."), 404, parameters=_NAME),
    ("POST", f"{API_PREFIX}/devices/{{name}}/revoke"): _revoke_op(),
    ("GET", f"{API_PREFIX}/applications"): _op(
        "listApplications", "List Applications.",
        (200, ref("ApplicationList"), "The Applications."), 400, parameters=_SELECTOR),
    ("POST", f"{API_PREFIX}/applications"): _op(
        "createApplication", "Create an Application (JSON with base64, or multipart upload).",
        (201, ref("ApplicationView"), "Created."), 400, 409, 408, 413, 415, 422,
        body={
            "application/json": {"schema": ref("ApplicationCreate")},
            "multipart/form-data": {
                "schema": ref("ApplicationUpload"),
                "encoding": {"module": {"contentType": "application/wasm, "
                                        "application/octet-stream"},
                             "metadata": {"contentType": "application/json"}},
            },
        }),
    ("GET", f"{API_PREFIX}/applications/{{name}}"): _op(
        "getApplication", "One Application.", (200, ref("ApplicationView"), "The Application."),
        404, parameters=_NAME),
    ("DELETE", f"{API_PREFIX}/applications/{{name}}"): _op(
        "deleteApplication", "Delete an Application (finalizers run first).",
        (202, ref("Deletion"), "Deletion accepted."), 404, parameters=_NAME),
    ("GET", f"{API_PREFIX}/gateways"): _op(
        "listGateways", "List Gateways.", (200, ref("GatewayList"), "The Gateways."), 400,
        parameters=_SELECTOR),
    ("GET", f"{API_PREFIX}/gateways/{{name}}"): _op(
        "getGateway", "One Gateway.", (200, ref("GatewayView"), "The Gateway."), 404,
        parameters=_NAME),
    ("GET", f"{API_PREFIX}/gateways/{{name}}/pairing"): _op(
        "getPairing", "A Gateway's pairing mode.", (200, ref("PairingView"), "Pairing."), 404,
        parameters=_NAME),
    ("POST", f"{API_PREFIX}/gateways/{{name}}/pairing"): _op(
        "setPairing", "Turn a Gateway's pairing mode on or off.",
        (200, ref("PairingView"), "Pairing as now set."), 400, 404, 408, 413, 415, 422,
        body={"application/json": {"schema": ref("PairingRequest")}}, parameters=_NAME),
}


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh copy each call)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = copy.deepcopy(op)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Wasmbed control plane REST API",
            "version": "1",
            "description": "A thin, strictly validating facade over the Device, Application "
                           "and Gateway custom resources (wasmbed.github.io/v1).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
