"""The platform's own asyncio kube client and Informer, against the emulated API server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.kube.client import (
    MERGE_PATCH,
    Informer,
    Kind,
    KubeClient,
    KubeConfig,
    KubeError,
    install_crds,
)
from wasmbed_hil.kube.resources import Application, Device

DEVICES = Kind.of(Device)
NS = "wb"


def device(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "wasmbed.github.io/v1", "kind": "Device",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"identity": "ab" * 32}}


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, KubeClient]]:
    server = ApiServer(token="s3cret", bookmark_interval=0.2)
    await server.start()
    config = KubeConfig.from_kubeconfig(server.write_kubeconfig(tmp_path / "kc", NS))
    kube = KubeClient(config)
    try:
        await install_crds(kube)
        await kube.ensure_namespace(NS)
        yield server, kube
    finally:
        await kube.close()
        await server.stop()
        gc.collect()


def test_kubeconfig_round_trip_hides_token(tmp_path: Path) -> None:
    text = (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ns1}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://h:6443/'}}]\n"
        "users: [{name: u, user: {token: tok123}}]\n"
    )
    (tmp_path / "kc").write_text(text)
    config = KubeConfig.from_kubeconfig(tmp_path / "kc")
    assert (config.server, config.token, config.namespace) == ("https://h:6443", "tok123", "ns1")
    assert "tok123" not in repr(config)
    with pytest.raises(ValueError, match="no context named 'x'"):
        KubeConfig.from_kubeconfig(tmp_path / "kc", context="x")
    (tmp_path / "bad").write_text("- a list\n")
    with pytest.raises(ValueError, match="not a kubeconfig"):
        KubeConfig.from_kubeconfig(tmp_path / "bad")


KUBECONFIG = (
    "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
    "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    "clusters: [{name: k, cluster: {server: 'https://h:6443/'}}]\n"
    "users: [{name: u, user: {token: tok123}}]\n"
)


def test_a_kubeconfig_that_is_not_yaml_is_refused_without_quoting_its_secrets(
        tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(KUBECONFIG.replace("{token: tok123}",
                                                    "\n    token: s3cr3t-t0ken: more"))
    with pytest.raises(ValueError) as info:
        KubeConfig.from_kubeconfig(tmp_path / "kc")
    assert "s3cr3t" not in str(info.value)  # PyYAML's own message quotes the line
    assert re.search(r"kc: cannot read kubeconfig: not valid YAML: .* at line 7, column 10$",
                     str(info.value))
    (tmp_path / "kc").write_bytes(KUBECONFIG.replace("tok123", "tok\xff").encode("latin-1"))
    with pytest.raises(ValueError, match=r"kc: cannot read kubeconfig: not UTF-8 text"):
        KubeConfig.from_kubeconfig(tmp_path / "kc")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("context: {cluster: k, user: u}", "context: oops", "context 'c' must be a mapping"),
    ("cluster: {server: 'https://h:6443/'}", "cluster: [1]", "cluster 'k' must be a mapping"),
    ("user: {token: tok123}", "user: 7", "user 'u' must be a mapping"),
    ("contexts: [", "contexts: {x: 1}\nz: [", "contexts must be a list"),
    ("user: u}", "user: [u]}", "context 'c'.user must be a string"),
    ("{token: tok123}", "{tokenFile: 5}", "user 'u'.tokenFile must be a string"),
    ("{token: tok123}", "{client-key-data: 12}", "user 'u'.client-key-data must be a string"),
    ("{token: tok123}", "{client-key-data: 'a'}", "user 'u'.client-key-data is not base64"),
])
def test_a_kubeconfig_with_a_wrong_type_is_refused_naming_the_key(
        tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in KUBECONFIG
    (tmp_path / "kc").write_text(KUBECONFIG.replace(old, new))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        KubeConfig.from_kubeconfig(tmp_path / "kc")
    assert str(tmp_path / "kc") in str(info.value)


def test_a_kubeconfigs_ca_may_be_der_and_unusable_tls_data_is_refused_naming_the_file(
        tmp_path: Path) -> None:
    import base64

    from wasmbed_hil.pki import FleetCA

    der = base64.b64encode(FleetCA.create("kube DER CA").cert_der).decode()
    cluster = "cluster: {server: 'https://h:6443/'}"
    (tmp_path / "kc").write_text(KUBECONFIG.replace(
        cluster, f"cluster: {{server: 'https://h:6443/', certificate-authority-data: {der}}}"))
    context = KubeConfig.from_kubeconfig(tmp_path / "kc").ssl_context()
    assert not isinstance(context, bool) and len(context.get_ca_certs()) == 1
    junk = base64.b64encode(b"no certificate at all").decode()
    (tmp_path / "kc").write_text(KUBECONFIG.replace(
        cluster, f"cluster: {{server: 'https://h:6443/', certificate-authority-data: {junk}}}"))
    with pytest.raises(ValueError, match="cannot be used") as info:
        KubeConfig.from_kubeconfig(tmp_path / "kc")
    assert str(tmp_path / "kc") in str(info.value)


def test_crud_and_errors(tmp_path: Path) -> None:
    asyncio.run(_crud_and_errors(tmp_path))


async def _crud_and_errors(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, kube):
        created = await kube.create(DEVICES, device("d1"))
        assert created["metadata"]["uid"]
        with pytest.raises(KubeError) as info:
            await kube.create(DEVICES, device("d1"))
        assert (info.value.status, info.value.reason) == (409, "AlreadyExists")
        patched = await kube.patch(DEVICES, "d1", {"status": {"phase": "Enrolled"}}, status=True)
        assert patched["status"]["phase"] == "Enrolled"
        with pytest.raises(KubeError) as info:
            await kube.patch(DEVICES, "d1", {"status": {"phase": "Nonsense"}}, status=True,
                             content_type=MERGE_PATCH)
        assert info.value.status == 422
        assert await kube.get_or_none(DEVICES, "nope") is None
        await kube.delete(DEVICES, "d1")
        assert (await kube.list(DEVICES))["items"] == []


def test_wrong_token_is_401(tmp_path: Path) -> None:
    asyncio.run(_wrong_token_is_401(tmp_path))


async def _wrong_token_is_401(tmp_path: Path) -> None:
    async with served(tmp_path) as (server, _):
        bad = KubeClient(KubeConfig(server.url, token="wrong", ca_pem=server.ca_pem))
        try:
            with pytest.raises(KubeError) as info:
                await bad.list(DEVICES, NS)
            assert info.value.status == 401
        finally:
            await bad.close()


def test_unreachable_server_is_status_0() -> None:
    asyncio.run(_unreachable())


async def _unreachable() -> None:
    server = ApiServer(tls=False)
    await server.start()
    url = server.url
    await server.stop()
    kube = KubeClient(KubeConfig(url), request_timeout=2)
    try:
        with pytest.raises(KubeError) as info:
            await kube.list(DEVICES, NS)
        assert info.value.unreachable
    finally:
        await kube.close()


def test_informer_follows_changes(tmp_path: Path) -> None:
    asyncio.run(_informer(tmp_path))


async def _informer(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, kube):
        seen: list[tuple[str, str]] = []
        changed = asyncio.Condition()

        async def on_change(kind: str, obj: dict[str, Any]) -> None:
            async with changed:
                seen.append((kind, obj["metadata"]["name"]))
                changed.notify_all()

        async def until(pred: Any) -> None:
            async with changed:
                await asyncio.wait_for(changed.wait_for(pred), 10)

        await kube.create(DEVICES, device("before"))
        informer = Informer(kube, DEVICES, NS, on_change=on_change)
        informer.start()
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            assert set(informer.objects) == {"before"}
            await kube.create(DEVICES, device("after", {"k": "v"}))
            await until(lambda: ("ADDED", "after") in seen)
            await kube.delete(DEVICES, "before")
            await until(lambda: ("DELETED", "before") in seen)
            assert set(informer.objects) == {"after"}
            assert informer.objects["after"]["metadata"]["labels"] == {"k": "v"}
        finally:
            await informer.stop()


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_large_bodies_are_streamed(tmp_path: Path) -> None:
    import base64

    from wasmbed_hil.bench import modules

    module = modules.data_module(1_000_000)

    async def main() -> None:
        async with served(tmp_path) as (_, kube):
            body = {"apiVersion": "wasmbed.github.io/v1", "kind": "Application",
                    "metadata": {"name": "big"},
                    "spec": {"wasmBytes": base64.b64encode(module).decode(),
                             "targetDevices": {"allDevices": True}}}
            created = await kube.create(Kind.of(Application), body)
            assert base64.b64decode(created["spec"]["wasmBytes"]) == module

    asyncio.run(main())


@pytest.mark.parametrize(("line", "status", "reason"), [
    (b'{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "old"}}',
     410, "Expired"),
    (b'{"type": "ERROR", "object": {"code": "abc", "reason": 5}}', 500, "Error"),
    (b'{"type": "ERROR", "object": {"code": 99999}}', 500, "Error"),
    (b'{"type": "ERROR", "object": "gone"}', 0, "BadWatchEvent"),
    (b'{"type": "ADDED", "object": [1, 2]}', 0, "BadWatchEvent"),
    (b'{"type": 5, "object": {}}', 0, "BadWatchEvent"),
    (b'{"type": "ADDED", "object": {"metadata": {"namespace": "wb"}}}', 0, "BadWatchEvent"),
    (b'{"type": "MODIFIED", "object": {"metadata": "x"}}', 0, "BadWatchEvent"),
    (b'{"type": "BOOKMARK", "object": {"metadata": 7}}', 0, "BadWatchEvent"),
])
def test_a_watch_event_of_the_wrong_shape_is_a_kube_error(line: bytes, status: int,
                                                          reason: str) -> None:
    """A misbehaving API server's watch line ends the watch with a KubeError (which the
    informers handle by watching again), not an AttributeError or a ValueError."""
    from aiohttp import web

    async def scenario() -> None:
        async def watch(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(line + b"\n")
            return response

        app = web.Application()
        app.router.add_get("/apis/wasmbed.github.io/v1/namespaces/wb/devices", watch)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = KubeClient(KubeConfig(server=f"http://127.0.0.1:{port}", namespace=NS))
        try:
            with pytest.raises(KubeError) as info:
                async for _event in kube.watch(DEVICES, NS, resource_version="1"):
                    pass
            assert (info.value.status, info.value.reason) == (status, reason)
        finally:
            await kube.close()
            await runner.cleanup()

    asyncio.run(scenario())
