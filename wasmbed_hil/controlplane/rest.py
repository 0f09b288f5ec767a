"""The control plane's REST API: a thin, strictly validating facade over the Device,
Application and Gateway custom resources (wasmbed.github.io/v1), served with aiohttp.

Every request body is checked in full (types, ranges, patterns, cross-field rules of the
models in `wasmbed_hil.kube.resources`, unknown fields) before anything reaches the API
server, and every failure answers with one JSON shape::

    {"error": {"status": 422, "reason": "Invalid", "message": "...", "field": "spec.args"}}

`field` is the path of the offending value in the Kubernetes object (`spec.targetDevices`,
`metadata.name`) or, for what has no place there, the request's own field (`count`, `module`,
`enabled`). Routes, views and errors are described in docs/rest-api.md; the OpenAPI 3.1
document is `wasmbed_hil.controlplane.openapi` and is served at /openapi.json.

    api = RestApi(kube, namespace="wasmbed", token=token, provisioner=manager)
    await api.start()            # 127.0.0.1 on a port the OS picks; or start(sock)
    ... api.url ...
    await api.stop()

Deployed, the API listens on port 8080 (`DEFAULT_PORT`; `listen_socket()` binds it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from ..aio import AppServer, bound_socket
from ..gateway.metrics import MetricsEndpoint
from ..kube.client import Kind, KubeClient, KubeError
from ..kube.resources import (
    API_VERSION,
    DNS_SUBDOMAIN,
    MAX_MODULE_SIZE,
    Application,
    ApplicationSpec,
    Device,
    DeviceSpec,
    Gateway,
    GatewaySettings,
    ResourceError,
    json_name,
)
from .emulation import Provisioner
from .metrics import UNMATCHED, RestMetrics
from .openapi import API_PREFIX, MAX_COUNT, openapi_document

log = logging.getLogger(__name__)

CREATE_CONCURRENCY = 16  # creates in flight at once for one request (count > 1)

__all__ = [
    "DEFAULT_PORT", "Provisioner", "RestApi", "RestError", "application_view", "device_view",
    "from_kube_error", "gateway_view", "listen_socket", "pairing_view",
]

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY = 2 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_MESSAGE = 1000  # characters of an error message (input is echoed at most this much)
WASM_HEADER = b"\0asm\x01\0\0\0"  # magic and binary-format version 1
PUBLIC_PATHS = frozenset({"/health", "/ready"})
DRAIN_FACTOR = 16  # an unneeded body is read and dropped up to this many max_body
DRAIN_SECONDS = 10.0
BODY_TIMEOUT = 30.0  # seconds a request body may take to arrive (408 after)
INT64 = (-(2**63), 2**63 - 1)  # Kubernetes integers are int64

DEVICES = Kind.of(Device)
APPLICATIONS = Kind.of(Application)
GATEWAYS = Kind.of(Gateway)

_REST_ONLY = ("name", "labels", "count")
DEVICE_FIELDS = frozenset({"name", "labels", "count"}
                          | {json_name(f.name) for f in dataclasses.fields(DeviceSpec)})
# The spec's own `name` is a display name; the REST `name` is metadata.name.
APPLICATION_FIELDS = frozenset({json_name(f.name) for f in dataclasses.fields(ApplicationSpec)})
PAIRING_FIELDS = frozenset({"enabled", "timeoutSeconds"})
# Validation stand-in for a key the provisioner supplies later (never sent anywhere).
_PLACEHOLDER_IDENTITY = "0" * 64

_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN.strip("^$"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------------------- errors


class RestError(Exception):
    """A failed request: turned into the JSON error body by the error middleware."""

    def __init__(self, status: int, reason: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field
        self.headers = headers or {}
        super().__init__(f"{status} {reason}: {message}")

    def body(self) -> dict[str, Any]:
        message = self.message
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        return {"error": {"status": self.status, "reason": self.reason, "message": message,
                          "field": self.field}}

    def response(self) -> web.Response:
        return _json(self.body(), self.status, self.headers)


def invalid(field: str | None, message: str) -> RestError:
    return RestError(422, "Invalid", message, field)


def bad_request(message: str, field: str | None = None) -> RestError:
    return RestError(400, "BadRequest", message, field)


def _from_resource_error(exc: ResourceError) -> RestError:
    return invalid(exc.path or None, str(exc))


def from_kube_error(exc: KubeError) -> RestError:
    """What a refusal (or absence) of the API server becomes for the REST caller."""
    if exc.unreachable:
        return RestError(503, "ApiServerUnavailable",
                         f"the Kubernetes API server cannot be reached: {exc.message}")
    if exc.status == 401:  # the REST API's own credentials, not the caller's
        return RestError(502, "BadGateway",
                         f"the Kubernetes API server refused this service's credentials: "
                         f"{exc.message}")
    if 400 <= exc.status < 500:
        return RestError(exc.status, exc.reason or "Error", exc.message)
    return RestError(502, "BadGateway",
                     f"the Kubernetes API server failed: {exc.status} {exc.reason}: "
                     f"{exc.message}")


def _reason_of(status: int) -> str:
    try:
        return "".join(HTTPStatus(status).phrase.title().split())
    except ValueError:
        return "Error"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


def _unparsable(exc: BaseException) -> web.Response:
    """The error body for a request aiohttp's parser refused, before any route or middleware
    saw it. Nothing of the request is echoed (its bytes may hold the bearer token)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the"
        message = f"request line or header field over the limit of {limit} bytes"
    elif "too many headers" in str(getattr(exc, "message", "")).lower():
        message = "more request header fields than the server's limit"
    else:
        message = "not a well-formed HTTP/1.1 request"
    return RestError(400, "BadRequest", message).response()


# ----------------------------------------------------------------------------- input


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, finite floats, nesting at most MAX_JSON_DEPTH."""
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise bad_request(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise bad_request(f"malformed JSON: {exc}") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        if children and depth >= MAX_JSON_DEPTH:
            raise bad_request(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)
    return value


def _object(value: Any, what: str = "the request body", field: str | None = None
            ) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number")
        raise invalid(field, f"{what} must be a JSON object, got {kind}")
    return value


def _check_ints(value: Any, path: str) -> None:
    """Kubernetes integers are int64: refuse larger ones before they reach the API server."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, here = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{here}.{k}" if here else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{here}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and not (
                INT64[0] <= item <= INT64[1]):
            raise invalid(here, f"{here}: integer out of the int64 range")


def _check_labels(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid("metadata.labels", "metadata.labels: expected an object")
    for key, value in raw.items():
        field = f"metadata.labels.{key}"
        prefix, slash, name = key.rpartition("/")
        # "/a": a '/' says a prefix follows, and an empty one is no DNS subdomain (a real
        # API server refuses it; the emulated one would store it)
        if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            raise invalid(field, f"label key prefix {prefix[:60]!r} is not a DNS subdomain")
        if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            raise invalid(field, f"label key {key[:80]!r} is not a valid label name")
        if not isinstance(value, str):
            raise invalid(field, f"{field[:80]}: expected a string")
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise invalid(field, f"label value {value[:80]!r} is not a valid label value")
    return dict(raw)


def _unknown(body: dict[str, Any], allowed: frozenset[str], hint: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(unknown[0], f"{unknown[0][:80]}: unknown field{hint}")


def _object_name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if name is None:
        raise invalid("metadata.name", "name: required field is missing")
    if not isinstance(name, str):
        raise invalid("metadata.name", "name: expected a string")
    return name


def _valid_name(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def _resource(kind: str, name: str, labels: dict[str, str], spec: dict[str, Any]
              ) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def _check_wasm(module: bytes, field: str) -> None:
    if not 0 < len(module) <= MAX_MODULE_SIZE:
        raise invalid(field, f"{field}: module must be 1..{MAX_MODULE_SIZE} bytes, "
                      f"got {len(module)}")
    if module[:4] != WASM_HEADER[:4]:
        raise invalid(field, f"{field}: not a WebAssembly module (no \\0asm magic)")
    if module[4:8] != WASM_HEADER[4:]:
        raise invalid(field, f"{field}: unsupported WebAssembly binary version "
                      f"{module[4:8].hex() or 'missing'} (expected 1)")


# ----------------------------------------------------------------------------- views


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def device_view(obj: dict[str, Any]) -> dict[str, Any]:
    """{name, labels, phase, deviceId, gateway, lastHeartbeat, apps, spec} of a Device."""
    meta, status = _dict(obj.get("metadata")), _dict(obj.get("status"))
    return {
        "name": meta.get("name", ""),
        "labels": _dict(meta.get("labels")),
        "phase": status.get("phase") or "Pending",
        "deviceId": status.get("deviceId"),
        "gateway": _dict(status.get("gateway")).get("name"),
        "lastHeartbeat": status.get("lastHeartbeat"),
        "apps": status.get("apps") or [],
        "spec": _dict(obj.get("spec")),
    }


def _digest(spec: dict[str, Any]) -> str | None:
    if isinstance(spec.get("digest"), str):
        return str(spec["digest"])
    try:
        return hashlib.sha256(base64.b64decode(spec.get("wasmBytes") or "", validate=True)
                              ).hexdigest()
    except ValueError:
        return None


def application_view(obj: dict[str, Any]) -> dict[str, Any]:
    """{name, phase, statistics, deviceStatuses, digest, targetDevices, createdAt}."""
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    statistics = {"targets": 0, "deployed": 0, "running": 0, "failed": 0, "stopped": 0}
    statistics.update(_dict(status.get("statistics")))
    return {
        "name": meta.get("name", ""),
        "phase": status.get("phase") or "Creating",
        "statistics": statistics,
        "deviceStatuses": status.get("deviceStatuses") or [],
        "digest": _digest(spec),
        "targetDevices": _dict(spec.get("targetDevices")),
        "createdAt": meta.get("creationTimestamp"),
    }


_SETTINGS = GatewaySettings()


def gateway_view(obj: dict[str, Any]) -> dict[str, Any]:
    """{name, phase, endpoint, connectedDevices, enrolledDevices, pairingMode}."""
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    config = _dict(spec.get("config"))
    return {
        "name": meta.get("name", ""),
        "phase": status.get("phase") or "Pending",
        "endpoint": spec.get("endpoint", ""),
        "connectedDevices": status.get("connectedDevices", 0),
        "enrolledDevices": status.get("enrolledDevices", 0),
        "pairingMode": config.get("pairingMode", _SETTINGS.pairing_mode),
    }


def pairing_view(obj: dict[str, Any]) -> dict[str, Any]:
    """{name, pairingMode, pairingTimeoutSeconds} of a Gateway."""
    config = _dict(_dict(obj.get("spec")).get("config"))
    return {
        "name": _dict(obj.get("metadata")).get("name", ""),
        "pairingMode": config.get("pairingMode", _SETTINGS.pairing_mode),
        "pairingTimeoutSeconds": config.get("pairingTimeoutSeconds",
                                            _SETTINGS.pairing_timeout_seconds),
    }


def _deletion(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    meta = _dict(obj.get("metadata")) if obj.get("kind") != "Status" else {}
    return {"name": name, "pendingFinalizers": list(meta.get("finalizers") or [])}


# ----------------------------------------------------------------------------- server


def listen_socket(host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> socket.socket:
    """A bound TCP socket for `RestApi.start` (the deployment's port 8080 by default)."""
    return bound_socket(host, port)


class RestApi:
    """The REST API over one namespace of an API server.

    ``token`` is the bearer token callers present (compared in constant time, never logged).
    ``provisioner`` issues credentials when a Device asks for emulation without a key; none
    means such requests get 422. With one, a Device naming a backend the provisioner does
    not know gets 422 too (the resource only checks that it is a name). ``max_body`` bounds
    a request body (413 above it).
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        token: str,
        provisioner: Provisioner | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not token:
            raise ValueError("a bearer token is required")
        self.kube = kube
        self.namespace = namespace
        self.provisioner = provisioner
        self.max_body = max_body
        self.body_timeout = BODY_TIMEOUT
        self._token = token.encode()
        self._ssl_context = ssl_context
        self._url: str | None = None
        self.metrics = RestMetrics()
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.app = web.Application(middlewares=[self._measure, self._errors, self._auth],
                                   client_max_size=max_body)
        self._routes()
        # lingering_time=0: `_drain` reads what is left of a body instead; aiohttp's own
        # lingering read is not ended when the client goes, and outlives stop().
        self._server = AppServer(self.app, ssl_context=self._ssl_context, lingering_time=0,
                                 parse_error=_unparsable)

    def __repr__(self) -> str:  # never the token
        return f"RestApi(namespace={self.namespace!r}, url={self._url!r})"

    def _routes(self) -> None:
        add, p = self.app.router, API_PREFIX
        add.add_get("/health", self._health)
        add.add_get("/ready", self._ready)
        add.add_get("/openapi.json", self._openapi)
        add.add_get(f"{p}/devices", self._list_devices)
        add.add_post(f"{p}/devices", self._create_devices)
        add.add_get(f"{p}/devices/{{name}}", self._get_device)
        add.add_delete(f"{p}/devices/{{name}}", self._delete_device)
        add.add_post(f"{p}/devices/{{name}}/revoke", self._revoke_device)
        add.add_get(f"{p}/applications", self._list_applications)
        add.add_post(f"{p}/applications", self._create_application)
        add.add_get(f"{p}/applications/{{name}}", self._get_application)
        add.add_delete(f"{p}/applications/{{name}}", self._delete_application)
        add.add_get(f"{p}/gateways", self._list_gateways)
        add.add_get(f"{p}/gateways/{{name}}", self._get_gateway)
        add.add_get(f"{p}/gateways/{{name}}/pairing", self._get_pairing)
        add.add_post(f"{p}/gateways/{{name}}/pairing", self._set_pairing)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the REST API is not started")
        return self._url

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (bound, handed over) or on an OS-chosen port of 127.0.0.1."""
        if self._server.started:
            raise RuntimeError("the REST API is already started")
        self._url = await self._server.start(sock)

    async def stop(self) -> None:
        """Close the listener and the connections (the KubeClient stays the caller's), and
        the metrics endpoint if one was started."""
        await self._server.stop()
        if self._metrics_endpoint is not None:
            await self._metrics_endpoint.stop()
            self._metrics_endpoint = None

    async def serve_metrics(self, host: str, port: int) -> tuple[str, int]:
        """Serve `GET /metrics` (no token: see docs/monitoring.md) on a port of its own;
        returns the address bound (port 0: one the OS picks)."""
        if self._metrics_endpoint is not None:
            raise RuntimeError("the metrics endpoint is already started")
        endpoint = MetricsEndpoint(self.metrics.registry)
        address = await endpoint.start(host, port)
        self._metrics_endpoint = endpoint
        return address

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        endpoint = self._metrics_endpoint
        return endpoint.address if endpoint is not None else None

    async def __aenter__(self) -> RestApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count and time every answered request by its route's template (bounded labels).
        Outermost, so it sees the status the error middleware settled on."""
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect the error middleware lets through
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            template = route.canonical if route is not None else UNMATCHED
            self.metrics.observe(template, request.method, status, time.perf_counter() - start)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._respond(request, handler)
        await self._drain(request, response)
        return response

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RestError as exc:
            return exc.response()
        except KubeError as exc:
            return from_kube_error(exc).response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items()
                       if k.lower() not in ("content-type", "content-length")}
            if exc.status == 413:
                message = f"request body over the limit of {self.max_body} bytes"
            else:
                message = f"{exc.reason}: {request.method} {request.path}"
            return RestError(exc.status, _reason_of(exc.status), message,
                             headers=headers).response()
        except Exception:
            log.exception("REST API: internal error on %s %s", request.method, request.path)
            return RestError(500, "InternalError", "internal error; see the server's log"
                             ).response()

    async def _drain(self, request: web.Request, response: web.StreamResponse) -> None:
        """Read and drop what is left of a body the answer did not need (an early error).

        Closing with unread data would reset the connection under the client before it
        reads the answer, and aiohttp's own lingering read is off (see `start`). So the rest
        is read here, within bounds; past them, or if the client is gone, the connection is
        closed after the answer.
        """
        content = request.content
        if not request.body_exists or content.is_eof():
            return
        if response.status == 408:  # it came too slowly already
            response.force_close()
            return
        budget = DRAIN_FACTOR * self.max_body
        if request.content_length is not None and request.content_length > budget:
            response.force_close()
            return
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while not content.is_eof():
                    budget -= len(await content.readany())
                    if budget < 0:
                        raise TimeoutError
        except Exception:  # too slow, too much, gone or broken: close after the answer
            response.force_close()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="wasmbed"'}
        header = request.headers.get("Authorization")
        if not header:
            self.metrics.auth_failed("missing")
            raise RestError(401, "Unauthorized",
                            "missing credentials: send Authorization: Bearer <token>",
                            headers=challenge)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            self.metrics.auth_failed("scheme")
            raise RestError(401, "Unauthorized",
                            "unsupported authorization scheme: use Bearer", headers=challenge)
        try:
            presented = given.strip().encode("utf-8", "surrogateescape")
        except UnicodeError:
            presented = b""
        if not hmac.compare_digest(presented, self._token):
            self.metrics.auth_failed("invalid_token")
            raise RestError(401, "Unauthorized", "invalid bearer token", headers=challenge)
        return await handler(request)

    # -- request bodies -------------------------------------------------------------------

    def _too_large(self) -> RestError:
        return RestError(413, "PayloadTooLarge",
                         f"request body over the limit of {self.max_body} bytes")

    def _content_type(self, request: web.Request, allowed: tuple[str, ...]) -> str:
        if request.content_type not in allowed:
            raise RestError(415, "UnsupportedMediaType",
                            f"Content-Type {request.content_type!r} is not supported here; "
                            f"use {' or '.join(allowed)}")
        if request.content_length is not None and request.content_length > self.max_body:
            raise self._too_large()
        return request.content_type

    @contextlib.asynccontextmanager
    async def _receiving(self) -> AsyncIterator[None]:
        """Bound the time a body may take; a broken body is the client's error."""
        try:
            async with asyncio.timeout(self.body_timeout):
                yield
        except TimeoutError:
            raise RestError(408, "RequestTimeout", f"the request body did not arrive within "
                            f"{self.body_timeout:g} s") from None
        except HttpProcessingError as exc:
            raise bad_request(f"malformed request body: {exc.message}") from None
        except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip, not gzip
            detail = " ".join(str(exc).split()).removeprefix("400, message: ")
            raise bad_request(f"malformed request body: {detail}") from None
        except OSError as exc:
            raise bad_request(f"connection lost while reading the body: {exc}") from None

    async def _read(self, request: web.Request) -> bytes:
        async with self._receiving():
            try:
                return await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise self._too_large() from None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        self._content_type(request, ("application/json",))
        return _object(parse_json(await self._read(request)))

    async def _multipart(self, request: web.Request, names: tuple[str, ...]) -> dict[str, bytes]:
        """The named parts of a multipart/form-data body (each at most once, no others)."""
        async with self._receiving():
            return await self._parts(request, names)

    async def _parts(self, request: web.Request, names: tuple[str, ...]) -> dict[str, bytes]:
        parts: dict[str, bytes] = {}
        total = 0
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise bad_request("nested multipart bodies are not supported")
                name = part.name
                if name not in names:
                    raise invalid(name, f"unknown part {str(name)[:80]!r}: expected "
                                  f"{', '.join(names)}")
                if name in parts:
                    raise invalid(name, f"part {name!r} given twice")
                data = bytearray()
                while chunk := await part.read_chunk():
                    total += len(chunk)
                    if total > self.max_body:
                        raise self._too_large()
                    data += chunk
                parts[name] = bytes(data)
        except (RestError, web.HTTPException):
            raise
        except (ValueError, AssertionError, RuntimeError, LookupError) as exc:
            raise bad_request(f"malformed multipart body: {exc}") from None
        return parts

    def _name_or_404(self, request: web.Request, what: str) -> str:
        name = request.match_info["name"]
        if not _valid_name(name):  # no such object can exist; and keeps paths plain
            raise RestError(404, "NotFound", f"{what} {name[:80]!r} not found")
        return name

    def _query(self, request: web.Request, allowed: tuple[str, ...] = ()) -> None:
        for key in request.query:
            if key not in allowed:
                raise bad_request(f"unknown query parameter {key[:80]!r}", key)

    # -- handlers: health -----------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        try:
            await self.kube.request("GET", DEVICES.path(self.namespace), query={"limit": 1})
        except KubeError as exc:
            return RestError(503, "NotReady", f"the Kubernetes API server does not answer: "
                             f"{exc}").response()
        return _json({"status": "ready"})

    async def _openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    # -- handlers: generic ----------------------------------------------------------------

    async def _list(self, request: web.Request, kind: Kind,
                    view: Callable[[dict[str, Any]], dict[str, Any]]) -> web.Response:
        self._query(request, ("labelSelector",))
        selector = request.query.get("labelSelector") or None
        listed = await self.kube.list(kind, self.namespace, label_selector=selector)
        return _json({"items": [view(obj) for obj in listed.get("items") or []]})

    async def _get(self, request: web.Request, kind: Kind, what: str,
                   view: Callable[[dict[str, Any]], dict[str, Any]]) -> web.Response:
        self._query(request)
        name = self._name_or_404(request, what)
        return _json(view(await self.kube.get(kind, name, self.namespace)))

    async def _delete(self, request: web.Request, kind: Kind, what: str) -> web.Response:
        self._query(request)
        name = self._name_or_404(request, what)
        return _json(_deletion(name, await self.kube.delete(kind, name, self.namespace)), 202)

    async def _create_all(self, kind: Kind, objects: list[dict[str, Any]]
                          ) -> list[dict[str, Any]]:
        """Create them, CREATE_CONCURRENCY at a time; the created objects in the order
        given. On a failure, delete what this request created and raise the first failure
        in that order. One create after the other made a request of 100 Devices wait 100
        round trips on a busy loop: at 1,000 devices the fleet join was the REST API's pace
        (the last Device created 61 s in, everything else followed within a second)."""
        created: dict[int, dict[str, Any]] = {}
        limit = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(index: int, obj: dict[str, Any]) -> None:
            async with limit:
                created[index] = await self.kube.create(kind, obj, self.namespace)

        try:
            outcomes = await asyncio.gather(*(one(i, o) for i, o in enumerate(objects)),
                                            return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise failed[0]
        except BaseException:
            for obj in created.values():
                name = obj["metadata"]["name"]
                try:
                    await self.kube.delete(kind, name, self.namespace)
                except KubeError as exc:
                    log.warning("REST API: could not roll back %s %s: %s", kind.plural, name,
                                exc)
            raise
        return [created[i] for i in range(len(objects))]

    # -- handlers: devices ----------------------------------------------------------------

    async def _list_devices(self, request: web.Request) -> web.Response:
        return await self._list(request, DEVICES, device_view)

    async def _get_device(self, request: web.Request) -> web.Response:
        return await self._get(request, DEVICES, "Device", device_view)

    async def _delete_device(self, request: web.Request) -> web.Response:
        return await self._delete(request, DEVICES, "Device")

    async def _revoke_device(self, request: web.Request) -> web.Response:
        """spec.revoked = true (a merge patch); the gateways' agents revoke the identity.
        The body is optional: nothing or an empty JSON object."""
        self._query(request)
        name = self._name_or_404(request, "Device")
        if request.body_exists:
            _unknown(await self._json_body(request), frozenset())
        patched = await self.kube.patch(DEVICES, name, {"spec": {"revoked": True}},
                                        self.namespace)
        return _json(device_view(patched))

    async def _create_devices(self, request: web.Request) -> web.Response:
        self._query(request)
        body = await self._json_body(request)
        _unknown(body, DEVICE_FIELDS)
        count = body.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or not 1 <= count <= MAX_COUNT):
            raise invalid("count", f"count: must be an integer in 1..{MAX_COUNT}")
        name = _object_name(body)
        labels = _check_labels(body.get("labels"))
        spec = {k: v for k, v in body.items() if k not in _REST_ONLY}
        names = [name] if count is None else [f"{name}-{i}" for i in range(count)]
        provision = (spec.get("emulation") is not None and spec.get("publicKey") is None
                     and spec.get("identity") is None)
        probe = {**spec, "identity": _PLACEHOLDER_IDENTITY} if provision else spec
        devices: list[Device] = []
        for each in names:
            obj = _resource(Device.KIND, each, labels, probe)
            _check_ints(obj, "")
            try:
                devices.append(Device.from_dict(obj))
            except ResourceError as exc:
                raise _from_resource_error(exc) from None
        emulation = devices[0].spec.emulation if devices else None
        if emulation is not None and self.provisioner is not None:
            try:
                self.provisioner.check_backend(emulation.backend)
            except ValueError as exc:
                raise invalid("spec.emulation.backend",
                              f"spec.emulation.backend: {exc}") from None
        if provision:
            devices = [await self._provisioned(d, labels, spec) for d in devices]
        created = await self._create_all(DEVICES, [d.to_dict() for d in devices])
        views = [device_view(obj) for obj in created]
        return _json(views[0] if count is None else {"items": views}, 201)

    async def _provisioned(self, device: Device, labels: dict[str, str],
                           spec: dict[str, Any]) -> Device:
        emulation = device.spec.emulation
        assert emulation is not None
        if self.provisioner is None:
            raise invalid("spec.emulation",
                          "spec.emulation: this server has no provisioner to issue credentials "
                          "for emulated devices; give publicKey or identity")
        name = device.metadata.name
        try:
            key = await self.provisioner.provision(name, str(emulation.backend),
                                                   emulation.board)
        except ValueError as exc:
            raise invalid("spec.emulation", f"spec.emulation: cannot provision {name!r}: {exc}"
                          ) from None
        except Exception as exc:
            log.exception("REST API: provisioning %s failed", name)
            raise RestError(502, "ProvisioningFailed",
                            f"could not issue credentials for {name!r}: {exc}") from None
        try:
            return Device.from_dict(_resource(Device.KIND, name, labels,
                                              {**spec, "publicKey": key}))
        except ResourceError as exc:
            raise RestError(502, "ProvisioningFailed",
                            f"the provisioner returned an unusable public key for {name!r}: "
                            f"{exc}") from None

    # -- handlers: applications -----------------------------------------------------------

    async def _list_applications(self, request: web.Request) -> web.Response:
        return await self._list(request, APPLICATIONS, application_view)

    async def _get_application(self, request: web.Request) -> web.Response:
        return await self._get(request, APPLICATIONS, "Application", application_view)

    async def _delete_application(self, request: web.Request) -> web.Response:
        return await self._delete(request, APPLICATIONS, "Application")

    async def _create_application(self, request: web.Request) -> web.Response:
        self._query(request)
        content_type = self._content_type(request, ("application/json", "multipart/form-data"))
        if content_type == "application/json":
            body = await self._json_body(request)
            _unknown(body, APPLICATION_FIELDS)
            module_field = "spec.wasmBytes"
        else:
            parts = await self._multipart(request, ("module", "metadata"))
            for part in ("module", "metadata"):
                if part not in parts:
                    raise invalid(part, f"the {part} part is missing")
            body = _object(parse_json(parts["metadata"]), "the metadata part", "metadata")
            _unknown(body, APPLICATION_FIELDS - {"wasmBytes"},
                     " (the module goes in the module part)" if "wasmBytes" in body else "")
            _check_wasm(parts["module"], "module")
            body = {**body, "wasmBytes": base64.b64encode(parts["module"]).decode()}
            module_field = "module"
        name = _object_name(body)
        spec = {k: v for k, v in body.items() if k != "name"}
        obj = _resource(Application.KIND, name, {}, spec)
        _check_ints(obj, "")
        try:
            app = Application.from_dict(obj)
        except ResourceError as exc:
            raise _from_resource_error(exc) from None
        _check_wasm(app.spec.module, module_field)
        (created,) = await self._create_all(APPLICATIONS, [app.to_dict()])
        return _json(application_view(created), 201)

    # -- handlers: gateways ---------------------------------------------------------------

    async def _list_gateways(self, request: web.Request) -> web.Response:
        return await self._list(request, GATEWAYS, gateway_view)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return await self._get(request, GATEWAYS, "Gateway", gateway_view)

    async def _get_pairing(self, request: web.Request) -> web.Response:
        return await self._get(request, GATEWAYS, "Gateway", pairing_view)

    async def _set_pairing(self, request: web.Request) -> web.Response:
        self._query(request)
        name = self._name_or_404(request, "Gateway")
        body = await self._json_body(request)
        _unknown(body, PAIRING_FIELDS)
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise invalid("enabled", "enabled: required, a boolean" if enabled is None
                          else "enabled: expected a boolean")
        config: dict[str, Any] = {"pairingMode": enabled}
        timeout = body.get("timeoutSeconds")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int) or not (
                    1 <= timeout <= INT64[1]):
                raise invalid("timeoutSeconds", "timeoutSeconds: expected an integer > 0")
            config["pairingTimeoutSeconds"] = timeout
        patched = await self.kube.patch(GATEWAYS, name, {"spec": {"config": config}},
                                        self.namespace)
        return _json(pairing_view(patched))
