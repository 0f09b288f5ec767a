"""The aiohttp application: authentication, path routing, verbs and watch streaming."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import discovery
from .errors import ApiError, bad_request
from .objects import ObjectApi
from .patch import APPLY_PATCH
from .registry import ResourceType
from .selectors import object_filter
from .watch import watch_batches

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 3 * 1024 * 1024
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json"
    )


@dataclass(frozen=True)
class Target:
    """A parsed resource path."""

    group: str
    version: str
    namespace: str | None
    plural: str
    name: str | None
    subresource: str | None
    watch: bool  # the legacy /watch/ prefix


def parse_resource_path(group: str, version: str, rest: list[str]) -> Target | None:
    """Parse the segments after /api/{version} or /apis/{group}/{version}; None if no resource.

    ``namespaces/{name}/status`` and ``.../finalize`` are a namespace's subresources, any other
    ``namespaces/{ns}/{plural}...`` a namespaced resource.
    """
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        return None
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    return Target(group, version, namespace, plural, name, subresource, watch)


class ApiApplication:
    """Builds the aiohttp app around an ObjectApi."""

    def __init__(
        self,
        api: ObjectApi,
        token: str,
        *,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.api = api
        self._token = token
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        # kube-apiserver accepts request bodies up to 3 MB (MaxRequestBodyBytes); an
        # Application carrying a 1 MiB module is about 1.4 MB of JSON.
        self.app = web.Application(middlewares=[self._errors, self._auth],
                                   client_max_size=MAX_REQUEST_BODY)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # -- middlewares ------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.body(), exc.code)
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug here must still answer like the real server
            log.exception("internal error on %s %s", request.method, request.path)
            return json_response(
                ApiError(500, "InternalError", f"an error on the server: {exc!r}").body(), 500
            )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in UNAUTHENTICATED_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            # aiohttp decodes header bytes that are not UTF-8 as lone surrogates
            # (surrogateescape): give those bytes back, so such a token is merely wrong (401)
            # rather than a failed encode (500), as in the REST API's middleware.
            try:
                presented = given.strip().encode("utf-8", "surrogateescape")
            except UnicodeError:
                presented = b""
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented, self._token.encode()
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    # -- routing ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        registry = self.api.registry
        if path in UNAUTHENTICATED_PATHS:
            return web.Response(text="ok")
        if request.method == "GET" and path == "/openapi/v2" and "protobuf" in request.headers.get(
            "Accept", ""
        ):
            # An empty protobuf message is an empty OpenAPI document: no schema, no validation.
            return web.Response(body=b"", content_type=discovery.OPENAPI_V2_PROTOBUF)
        if request.method == "GET":
            document = self._discovery(path, parts)
            if document is not None:
                return json_response(document)
        target = None
        if parts and parts[0] == "api" and len(parts) >= 3:
            target = parse_resource_path("", parts[1], parts[2:])
        elif parts and parts[0] == "apis" and len(parts) >= 4:
            target = parse_resource_path(parts[1], parts[2], parts[3:])
        if target is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = registry.lookup(target.group, target.version, target.plural)
        return await self._resource(request, rtype, target)

    def _discovery(self, path: str, parts: list[str]) -> dict[str, Any] | None:
        registry = self.api.registry
        if path == "/version":
            return discovery.VERSION_INFO
        if path == "/api":
            return discovery.api_versions()
        if path == "/apis":
            return discovery.api_group_list(registry)
        if path == "/api/v1":
            return discovery.api_resource_list(registry, "", "v1")
        if path == "/openapi/v2":
            return discovery.openapi_v2()
        if path == "/openapi/v3":
            return discovery.openapi_v3_root()
        if parts and parts[0] == "apis" and len(parts) == 2:
            found = discovery.api_group(registry, parts[1])
            if found is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return found
        if parts and parts[0] == "apis" and len(parts) == 3:
            found = discovery.api_resource_list(registry, parts[1], parts[2])
            if found is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return found
        return None

    # -- verbs ------------------------------------------------------------------------------

    async def _resource(
        self, request: web.Request, rtype: ResourceType, target: Target
    ) -> web.StreamResponse:
        if target.namespace is not None and not rtype.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "status" and not rtype.status_subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query = request.query
        dry_run = "All" in query.getall("dryRun", [])
        method = request.method
        api, version, ns = self.api, target.version, target.namespace
        status = target.subresource == "status"
        if target.name is None:  # collection
            matches = object_filter(
                query.get("labelSelector"), query.get("fieldSelector"), rtype.selectable_fields
            )
            if method == "GET" and (target.watch or _truthy(query.get("watch"))):
                return await self._watch(request, rtype, target, matches)
            if method == "GET":
                limit = _int_param(query.get("limit"), "limit")
                listed = api.list(rtype, version, ns, matches, limit, query.get("continue"))
                if _wants_table(request):
                    return json_response(_table(rtype, version, listed))
                return json_response(listed)
            if method == "POST":
                body = await _json_body(request)
                return json_response(api.create(rtype, version, ns, body, dry_run), 201)
            if method == "DELETE":
                return json_response(api.delete_collection(rtype, version, ns, matches, dry_run))
            raise _not_allowed(method)
        if target.watch:
            matches = object_filter(None, f"metadata.name={target.name}", None)
            return await self._watch(request, rtype, target, matches)
        name = target.name
        if method == "GET":
            obj = api.get(rtype, version, ns, name)
            if _wants_table(request) and not status:
                return json_response(_table(rtype, version, {"items": [obj], "metadata": {}}))
            return json_response(obj)
        if method == "PUT":
            body = await _json_body(request)
            return json_response(api.replace(rtype, version, ns, name, body, status, dry_run))
        if method == "PATCH":
            content_type = request.content_type
            if content_type == APPLY_PATCH:
                raise ApiError(415, "UnsupportedMediaType",
                               "server-side apply is not supported by this server")
            body = await _json_body(request)
            return json_response(
                api.patch(rtype, version, ns, name, content_type, body, status, dry_run)
            )
        if method == "DELETE" and not status:
            options = await _json_body(request, optional=True)
            return json_response(api.delete(rtype, version, ns, name, options, dry_run))
        raise _not_allowed(method)

    async def _watch(
        self,
        request: web.Request,
        rtype: ResourceType,
        target: Target,
        matches: Callable[[dict[str, Any]], bool],
    ) -> web.StreamResponse:
        query = request.query
        timeout = _int_param(query.get("timeoutSeconds"), "timeoutSeconds")
        batches = watch_batches(
            self.api.store,
            rtype,
            target.version,
            target.namespace,
            matches,
            query.get("resourceVersion"),
            bookmarks=_truthy(query.get("allowWatchBookmarks")),
            timeout=float(timeout) if timeout is not None else self.default_watch_timeout,
            bookmark_interval=self.bookmark_interval,
            send_initial_events=_truthy(query.get("sendInitialEvents")),
        )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for batch in batches:  # one write (one chunk) per batch
                await response.write(
                    "".join(json.dumps(event) + "\n" for event in batch).encode())
            await response.write_eof()
        except ConnectionError:  # the client went away (aiohttp's reset error is one too)
            pass
        finally:
            await batches.aclose()
        return response


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _int_param(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f"invalid {name}: {value!r}") from exc


def _not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method ({method}) "
                                             "on the requested resource")


async def _json_body(request: web.Request, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"the body of the request is not valid JSON: {exc}") from exc


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _json_path(obj: Any, path: str) -> Any:
    for part in path.strip().lstrip(".").split("."):
        if not part:
            continue
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _table(rtype: ResourceType, version: str, listed: dict[str, Any]) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table for kubectl's default output: name, printer columns, age."""
    columns = rtype.printer_columns.get(version) or []
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name",
                    "priority": 0}]
    definitions += [
        {"name": c.get("name", ""), "type": c.get("type", "string"), "format": "",
         "description": c.get("description", ""), "priority": c.get("priority", 0)}
        for c in columns
    ]
    definitions.append({"name": "Age", "type": "date", "format": "", "description": "Age",
                        "priority": 0})
    rows = []
    for obj in listed["items"]:
        meta = obj["metadata"]
        cells = [meta["name"], *(_json_path(obj, c.get("jsonPath", "")) for c in columns),
                 _age(meta.get("creationTimestamp"))]
        partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": meta}
        rows.append({"cells": cells, "object": partial})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": listed["metadata"].get("resourceVersion", "")},
        "columnDefinitions": definitions,
        "rows": rows,
    }
