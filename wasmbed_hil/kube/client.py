"""A small asyncio Kubernetes client for the platform's own components.

The gateways' control-plane agent and the REST API talk to the API server (the emulated one
or a real cluster) through this client. It covers what they need and nothing more: get,
list, create, merge/JSON patch (of the object or its status), delete and watch of the
Device/Application/Gateway resources and a few core kinds, plus `Informer`, a list+watch
cache that survives API server outages (it re-lists after 410 Gone and reconnects with
backoff). The kopf controllers use kopf's own client; the tests prove the emulated server
with the official `kubernetes` client and kubectl.

Configuration comes from a kubeconfig (server, bearer token, CA, client certificate) or from
the in-cluster service account (`KubeConfig.in_cluster()`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yaml

from .resources import GROUP, VERSION, Resource

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API: group ("" for core), version, plural, namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @classmethod
    def of(cls, resource: type[Resource]) -> Kind:
        return cls(GROUP, VERSION, resource.PLURAL)

    def path(self, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced: a namespace is required")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


NAMESPACES = Kind("", "v1", "namespaces", namespaced=False)
EVENTS = Kind("", "v1", "events")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text and where, without the text itself: PyYAML's own
    message quotes the offending line, which in a kubeconfig may be a token or a key."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"not valid YAML: {exc.problem or exc.context or 'syntax error'}{where}"
    return "not valid YAML"


class KubeError(Exception):
    """A request the API server refused (status >= 400), or that could not be made.

    ``status`` is the HTTP status (0 when the server could not be reached), ``reason`` the
    Status reason (NotFound, Conflict, Invalid, Expired...) and ``message`` its text.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")

    @property
    def unreachable(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class KubeConfig:
    """How to reach an API server. ``ca_pem`` None means the system trust store."""

    server: str
    token: str | None = None
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    namespace: str = "default"
    insecure: bool = False

    def __repr__(self) -> str:  # never print the token
        return f"KubeConfig(server={self.server!r}, namespace={self.namespace!r})"

    @classmethod
    def from_kubeconfig(cls, path: Path | str, context: str | None = None) -> KubeConfig:
        """Read a kubeconfig file (its current context unless ``context`` is given)."""
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ValueError(f"{path}: cannot read kubeconfig: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: cannot read kubeconfig: not UTF-8 text (byte "
                             f"{exc.start})") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: cannot read kubeconfig: {_yaml_problem(exc)}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: not a kubeconfig (expected a mapping)")

        def mapping(value: Any, what: str) -> dict[str, Any]:
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError(f"{path}: {what} must be a mapping, not {type(value).__name__}")
            return value

        def text(table: dict[str, Any], key: str, what: str) -> str | None:
            value = table.get(key)
            if value is None or isinstance(value, str):
                return value
            raise ValueError(f"{path}: {what}.{key} must be a string, not "
                             f"{type(value).__name__}")

        def named(section: str, name: str) -> dict[str, Any]:
            entries = doc.get(section) or []
            if not isinstance(entries, list):
                raise ValueError(f"{path}: {section} must be a list, not "
                                 f"{type(entries).__name__}")
            for entry in entries:
                if isinstance(entry, dict) and entry.get("name") == name:
                    return entry
            raise ValueError(f"{path}: no {section[:-1]} named {name!r}")

        ctx_name = context or doc.get("current-context")
        if not ctx_name:
            raise ValueError(f"{path}: no current-context and no context given")
        ctx = mapping(named("contexts", ctx_name).get("context"), f"context {ctx_name!r}")
        cluster_name = text(ctx, "cluster", f"context {ctx_name!r}") or ""
        user_name = text(ctx, "user", f"context {ctx_name!r}")
        cluster = mapping(named("clusters", cluster_name).get("cluster"),
                          f"cluster {cluster_name!r}")
        user = mapping(named("users", user_name).get("user"), f"user {user_name!r}"
                       ) if user_name else {}
        server = cluster.get("server")
        if not server:
            raise ValueError(f"{path}: cluster of context {ctx_name!r} has no server")

        def data(key: str) -> bytes | None:
            table, what = ((cluster, f"cluster {cluster_name!r}") if key.startswith(
                "certificate") else (user, f"user {user_name!r}"))
            raw = text(table, f"{key}-data", what)
            if raw:
                try:
                    return base64.b64decode(raw)
                except ValueError:  # its text is a certificate or key: never echoed
                    raise ValueError(f"{path}: {what}.{key}-data is not base64") from None
            file = text(table, key, what)
            if file:
                return (path.parent / file).read_bytes()
            return None

        token = text(user, "token", f"user {user_name!r}")
        token_file = text(user, "tokenFile", f"user {user_name!r}")
        if token is None and token_file:
            token = (path.parent / token_file).read_text().strip()
        config = cls(
            server=str(server).rstrip("/"),
            token=token,
            ca_pem=data("certificate-authority"),
            client_cert_pem=data("client-certificate"),
            client_key_pem=data("client-key"),
            namespace=text(ctx, "namespace", f"context {ctx_name!r}") or "default",
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        )
        try:  # here, naming the file, not at the first request (a 500, a failing pass)
            config.ssl_context()
        except (ssl.SSLError, ValueError) as exc:  # OpenSSL's reason only: no data quoted
            reason = exc.reason if isinstance(exc, ssl.SSLError) else type(exc).__name__
            raise ValueError(f"{path}: the certificate authority or client certificate and "
                             f"key of context {ctx_name!r} cannot be used ({reason})") from None
        return config

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        """The pod's service account (KUBERNETES_SERVICE_HOST/PORT and its mounted token)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
        if ":" in host:
            host = f"[{host}]"
        namespace_file = SERVICE_ACCOUNT / "namespace"
        return cls(
            server=f"https://{host}:{port}",
            token=(SERVICE_ACCOUNT / "token").read_text().strip(),
            ca_pem=(SERVICE_ACCOUNT / "ca.crt").read_bytes(),
            namespace=namespace_file.read_text().strip() if namespace_file.exists()
            else "default",
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        ca: str | bytes | None = self.ca_pem or None
        if ca and ca.lstrip().startswith(b"-----BEGIN"):
            ca = ca.decode("ascii", "replace")  # PEM; other bytes are taken as DER
        context = ssl.create_default_context(cadata=ca)
        if self.client_cert_pem and self.client_key_pem:
            with tempfile.TemporaryDirectory(prefix="wasmbed-kube-") as directory:
                cert, key = Path(directory) / "c.pem", Path(directory) / "k.pem"
                cert.write_bytes(self.client_cert_pem)
                key.touch(0o600)
                key.write_bytes(self.client_key_pem)
                context.load_cert_chain(cert, key)
        return context


class KubeClient:
    """Async requests to one API server. Use as ``async with KubeClient(config) as kube``."""

    def __init__(self, config: KubeConfig, *, request_timeout: float = 10.0) -> None:
        self.config = config
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "wasmbed-hil"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(
                self.config.server, headers=headers, connector=connector,
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, Any] | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body or raises KubeError."""
        url = path + ("?" + urlencode(query) if query else "")
        data: bytes | io.BytesIO | None = None if body is None else json.dumps(body).encode()
        if data is not None and len(data) > 512 * 1024:
            data = io.BytesIO(data)  # aiohttp warns about (and blocks on) large raw bytes
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._http().request(
                method, url, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{method} {path}: {exc!r}") from None
        return _decode(status, raw, method, path)

    # -- typed helpers ------------------------------------------------------------------

    def _ns(self, kind: Kind, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if kind.namespaced else None

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", kind.path(self._ns(kind, namespace), name))

    async def get_or_none(
        self, kind: Kind, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.get(kind, name, namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """The whole list (following continue tokens); returns the List object."""
        query: dict[str, Any] = {"limit": 500}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[dict[str, Any]] = []
        while True:
            page = await self.request("GET", kind.path(self._ns(kind, namespace)), query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                page["items"] = items
                return page
            query["continue"] = token

    async def create(
        self, kind: Kind, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("POST", kind.path(self._ns(kind, namespace)), body=body)

    async def patch(
        self, kind: Kind, name: str, patch: Any, namespace: str | None = None, *,
        status: bool = False, content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        path = kind.path(self._ns(kind, namespace), name, "status" if status else None)
        return await self.request("PATCH", path, body=patch, content_type=content_type)

    async def delete(
        self, kind: Kind, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("DELETE", kind.path(self._ns(kind, namespace), name))

    async def ensure_namespace(self, name: str) -> None:
        try:
            await self.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name}})
        except KubeError as exc:
            if exc.status != 409:
                raise

    async def watch(
        self, kind: Kind, namespace: str | None = None, *, resource_version: str,
        timeout_s: int = 300, label_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events after ``resource_version``: (type, object) pairs, BOOKMARKs included.

        Ends when the server closes the stream. An ERROR event raises KubeError with its
        code (410 when the version is too old: re-list and start again).
        """
        query: dict[str, Any] = {
            "watch": "true", "allowWatchBookmarks": "true",
            "resourceVersion": resource_version, "timeoutSeconds": timeout_s,
        }
        if label_selector:
            query["labelSelector"] = label_selector
        path = kind.path(self._ns(kind, namespace)) + "?" + urlencode(query)
        try:
            async with self._http().get(
                path, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout)
            ) as response:
                if response.status >= 400:
                    _decode(response.status, await response.read(), "WATCH", path)
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                        kind_name, obj = event["type"], event["object"]
                    except (ValueError, KeyError, TypeError) as exc:
                        raise KubeError(0, "BadWatchEvent", f"{line[:200]!r}: {exc}") from None
                    if not isinstance(kind_name, str) or not isinstance(obj, dict):
                        # the watchers index it as an object (an AttributeError there)
                        raise KubeError(0, "BadWatchEvent",
                                        f"{line[:200]!r}: type and object are not a string "
                                        "and an object")
                    if kind_name == "ERROR":
                        raise _watch_error(obj)
                    meta = obj.get("metadata")
                    if not isinstance(meta, dict) or (
                            kind_name != "BOOKMARK" and not isinstance(meta.get("name"), str)):
                        raise KubeError(0, "BadWatchEvent",
                                        f"{line[:200]!r}: an object without metadata.name")
                    yield kind_name, obj
        except (aiohttp.ClientError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"watch {kind.plural}: {exc!r}") from None


def _watch_error(obj: dict[str, Any]) -> KubeError:
    """A watch's ERROR event (a Status) as the KubeError it stands for; a code that is no
    HTTP status counts as 500."""
    code = obj.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        code = 500
    reason, message = obj.get("reason"), obj.get("message")
    return KubeError(code, reason if isinstance(reason, str) and reason else "Error",
                     message if isinstance(message, str) else "")


def _decode(status: int, raw: bytes, method: str, path: str) -> Any:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if status >= 400:
        if isinstance(body, dict) and body.get("kind") == "Status":
            raise KubeError(status, str(body.get("reason") or "Error"),
                            str(body.get("message") or ""))
        raise KubeError(status, "Error", f"{method} {path}: {raw[:300]!r}")
    if body is None:
        raise KubeError(status, "BadResponse", f"{method} {path}: body is not JSON")
    return body


Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]


class Informer:
    """A list+watch cache of one kind in one namespace.

    ``objects`` maps name to the latest object. ``on_change(type, obj)`` is called for every
    ADDED/MODIFIED/DELETED (also for the differences found by a re-list). While the API
    server is unreachable the cache keeps its last contents (``connected`` is False) and the
    informer retries with backoff; after 410 Gone it re-lists.
    """

    def __init__(
        self, kube: KubeClient, kind: Kind, namespace: str | None = None, *,
        on_change: Handler | None = None, watch_timeout_s: int = 60,
        backoff: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.objects: dict[str, dict[str, Any]] = {}
        self.on_change = on_change
        self.watch_timeout_s = watch_timeout_s
        self.backoff = backoff
        self.synced = asyncio.Event()
        self.connected = False
        self.last_error: KubeError | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"informer-{self.kind.plural}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            from ..aio import cancel_and_wait

            await cancel_and_wait([self._task])
            self._task = None

    async def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        if self.on_change is None:
            return
        try:
            result = self.on_change(kind, obj)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("informer %s handler failed", self.kind.plural)

    async def _relist(self) -> str:
        page = await self.kube.list(self.kind, self.namespace)
        fresh = {o["metadata"]["name"]: o for o in page["items"]}
        old, self.objects = self.objects, fresh
        for name, obj in fresh.items():
            before = old.get(name)
            if before is None:
                await self._emit("ADDED", obj)
            elif before["metadata"].get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"):
                await self._emit("MODIFIED", obj)
        for name, obj in old.items():
            if name not in fresh:
                await self._emit("DELETED", obj)
        return str(page["metadata"].get("resourceVersion", ""))

    async def _run(self) -> None:
        delay = self.backoff[0]
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                    self.connected = True
                    self.synced.set()
                async for kind, obj in self.kube.watch(
                    self.kind, self.namespace, resource_version=rv,
                    timeout_s=self.watch_timeout_s,
                ):
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if kind == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = obj
                    await self._emit(kind, obj)
                delay = self.backoff[0]
            except KubeError as exc:
                self.last_error = exc
                rv = None  # re-list: it also reports what changed while we were away
                if exc.status == 410:
                    continue
                self.connected = False
                log.debug("informer %s: %s; retrying in %.2fs", self.kind.plural, exc, delay)
                await asyncio.sleep(delay)  # backoff between reconnects, not a synchronisation
                delay = min(delay * 2, self.backoff[1])


CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)


async def install_crds(kube: KubeClient) -> None:
    """Create the Device/Application/Gateway CRDs (those already present are kept)."""
    from .crdgen import all_crds

    for crd in all_crds().values():
        try:
            await kube.create(CRDS, crd)
        except KubeError as exc:
            if exc.status != 409:
                raise
