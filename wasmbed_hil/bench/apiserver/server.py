"""ApiServer: the emulated kube-apiserver on a socket, with TLS from the fleet PKI and a
kubeconfig for clients."""

from __future__ import annotations

import base64
import secrets
import socket
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ...aio import AppServer
from ...pki import FleetCA
from ...pki._files import write_file
from .handlers import ApiApplication
from .objects import ObjectApi
from .registry import Registry
from .store import DEFAULT_HISTORY, Store

HOSTS = ("localhost", "127.0.0.1", "::1")


class ApiServer:
    """An in-process API server. ``await start()``, use ``url``/``write_kubeconfig``, ``stop()``.

    ``token`` is the bearer token clients must present (a random one when None). With
    ``tls`` (the default) it serves HTTPS with a certificate issued by ``ca`` (a fresh
    FleetCA when None); the certificate names `HOSTS`, the extra ``hosts`` (names or IP
    addresses clients use) and the address it is bound to when that is not a wildcard, so a
    client on another machine or network namespace can verify it. ``advertise`` is the host
    put in ``url`` and the kubeconfig instead of the bound one (needed when bound to
    0.0.0.0, which clients cannot dial; it is named in the certificate too).
    ``history_limit`` bounds the retained watch history; watches from an older
    resourceVersion get 410 Gone. ``bookmark_interval`` spaces BOOKMARK events.
    """

    def __init__(
        self,
        token: str | None = None,
        tls: bool = True,
        *,
        ca: FleetCA | None = None,
        history_limit: int = DEFAULT_HISTORY,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
        hosts: Sequence[str] = (),
        advertise: str | None = None,
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.tls = tls
        self._ca = ca
        self.hosts = tuple(hosts)
        self.advertise = advertise
        self.store = Store(history_limit)
        self.registry = Registry()
        self.api = ObjectApi(self.store, self.registry)
        self._application = ApiApplication(
            self.api,
            self.token,
            bookmark_interval=bookmark_interval,
            default_watch_timeout=default_watch_timeout,
        )
        self._server = AppServer(self._application.app)
        self._url: str | None = None
        self._ca_pem: bytes | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the API server is not started")
        return self._url

    @property
    def ca_pem(self) -> bytes | None:
        """PEM of the CA that signed the serving certificate (None over plain HTTP)."""
        return self._ca_pem

    def _ssl_context(self, bound: str | None) -> ssl.SSLContext:
        ca = self._ca or FleetCA.create("wasmbed-hil kube-apiserver CA")
        names = [*HOSTS, *self.hosts]
        if bound and bound not in ("0.0.0.0", "::"):
            names.append(bound)
        if self.advertise:
            names.append(self.advertise)
        credentials = ca.issue_gateway("kube-apiserver", tuple(dict.fromkeys(names)))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="wasmbed-apiserver-") as directory:
            cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
            write_file(cert, credentials.cert_pem)
            write_file(key, credentials.key_pem, 0o600)
            context.load_cert_chain(cert, key)
        self._ca_pem = ca.cert_pem
        return context

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (bound, handed over) or on an OS-chosen port of 127.0.0.1."""
        if self._server.started:
            raise RuntimeError("the API server is already started")
        bound = str(sock.getsockname()[0]) if sock is not None else None
        self._server.ssl_context = self._ssl_context(bound) if self.tls else None
        url = await self._server.start(sock)
        if self.advertise:
            scheme, _, rest = url.partition("://")
            host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
            url = f"{scheme}://{host}:{rest.rsplit(':', 1)[1]}"
        self._url = url

    async def stop(self) -> None:
        """End every watch, close the listener and the connections.

        Every connection is closed when this returns, whatever the clients do. aiohttp's
        cleanup closes an idle TLS connection by sending close_notify and then waiting up to
        asyncio's ssl_shutdown_timeout (30 s) for the peer's, with the socket still open and
        no longer tracked by aiohttp. A client that keeps its connection without reading it
        leaves that socket to the garbage collector once the loop is closed ("unclosed
        transport" ResourceWarning). The official client does so after a refused request:
        ``ApiClient.close()`` only drops urllib3's pools (urllib3 2 ``PoolManager.clear()``
        closes no connection; a pool's are closed when it is collected), and the
        ``ApiException``'s traceback keeps the response, hence its pool and connection,
        alive. So, as kube-apiserver (Go) does, send close_notify and close without waiting.
        """
        self.store.close()
        await self._server.stop()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kubeconfig(self, namespace: str = "default", server: str | None = None
                   ) -> dict[str, Any]:
        """A kubeconfig for this server; `server`: the URL clients dial instead of its own
        (a relay in front of it that passes its TLS through)."""
        cluster: dict[str, Any] = {"server": server or self.url}
        if self._ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "wasmbed-hil", "cluster": cluster}],
            "users": [{"name": "wasmbed-hil", "user": {"token": self.token}}],
            "contexts": [{
                "name": "wasmbed-hil",
                "context": {"cluster": "wasmbed-hil", "user": "wasmbed-hil",
                            "namespace": namespace},
            }],
            "current-context": "wasmbed-hil",
            "preferences": {},
        }

    def write_kubeconfig(self, path: Path | str, namespace: str = "default",
                         server: str | None = None) -> Path:
        """Write a kubeconfig (0600: it holds the token) for this server (dialled at
        `server`, as kubeconfig()); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.kubeconfig(namespace, server), sort_keys=False)
        write_file(path, text.encode(), 0o600)
        return path
