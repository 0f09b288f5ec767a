"""ApiServer.stop() leaves no connection open, whatever its clients do with theirs.

The case that leaked: a client keeps an idle TLS keep-alive connection open after the server
stops. aiohttp closes it by sending close_notify and waiting (asyncio's ssl_shutdown_timeout,
30 s) for the peer's, untracked; once the loop was closed its socket went to the garbage
collector with an "unclosed transport" ResourceWarning, in whatever test ran next. The official
client does exactly that after a refused request (see ApiServer.stop).
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from leakcheck import own_garbage, resource_warnings

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread

TOKEN = "shutdown-test-token"


@contextmanager
def no_resource_warning() -> Iterator[None]:
    """Fail if a ResourceWarning is emitted inside the block (any thread, or the GC)."""
    with own_garbage() as caught:
        yield
    leaks = resource_warnings(caught)
    assert not leaks, leaks


def _refuse_401(api: k8s.ApiClient) -> None:
    api.configuration.api_key = {}  # no bearer token: the auth middleware refuses
    k8s.CoreV1Api(api).list_namespace()


def _refuse_404(api: k8s.ApiClient) -> None:
    k8s.CoreV1Api(api).read_namespace("no-such-namespace")


def _refuse_422(api: k8s.ApiClient) -> None:
    k8s.CoreV1Api(api).patch_namespace(  # a failed JSON-patch test op is 422 Invalid
        "default", [{"op": "test", "path": "/metadata/name", "value": "other"}])


@pytest.mark.parametrize(
    ("refuse", "status"), [(_refuse_401, 401), (_refuse_404, 404), (_refuse_422, 422)],
    ids=["401", "404", "422"],
)
def test_refused_request_of_the_official_client_leaves_no_socket(
    refuse: Callable[[k8s.ApiClient], None], status: int, tmp_path: Path
) -> None:
    with no_resource_warning():
        loop = LoopThread("apiserver-shutdown")
        server = ApiServer(token=TOKEN)
        loop.run(server.start())
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
            client_configuration=configuration)
        with k8s.ApiClient(configuration) as api:
            assert k8s.CoreV1Api(api).read_namespace("default").metadata.name == "default"
            with pytest.raises(ApiException) as refused:
                refuse(api)
            assert refused.value.status == status
        # `refused` (as pytest keeps it) holds the response, its pool and so the connection
        try:
            loop.run(server.stop())
        finally:
            loop.close()
        del refused


def test_idle_keep_alive_connection_is_closed_by_stop(tmp_path: Path) -> None:
    with no_resource_warning():
        loop = LoopThread("apiserver-shutdown")
        server = ApiServer(token=TOKEN)
        loop.run(server.start())
        assert server.ca_pem is not None
        context = ssl.create_default_context(cadata=server.ca_pem.decode())
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=20)
        try:
            connection.request("GET", "/api/v1/namespaces")  # no token: 401
            response = connection.getresponse()
            response.read()
            assert response.status == 401 and not response.will_close
            try:
                loop.run(server.stop())
            finally:
                loop.close()
            assert connection.sock is not None
            assert connection.sock.recv(1) == b""  # the server's end is closed
        finally:
            connection.close()
