"""The emulated API server off 127.0.0.1: its certificate names the address it is bound to
(and any extra `hosts`), and `advertise` is the address written into its URL and
kubeconfig, so a client elsewhere verifies and reaches it. 127.0.0.2 and 127.0.0.3 stand for
other machines' addresses (any 127/8 address is local on Linux, but none is 127.0.0.1)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from wasmbed_hil.bench.apiserver import ApiServer
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.kube.client import KubeClient, KubeConfig, KubeError


def _bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


async def _namespaces(path: Path) -> list[str]:
    async with KubeClient(KubeConfig.from_kubeconfig(path)) as kube:
        await kube.ensure_namespace("off-loopback")
        return ["off-loopback"]


@pytest.mark.parametrize(("bind", "advertise", "dialled"), [
    ("127.0.0.2", None, "127.0.0.2"),  # bound to one address: the certificate names it
    ("0.0.0.0", "127.0.0.3", "127.0.0.3"),  # bound to all: the advertised one
])
def test_a_client_verifies_and_reaches_the_address_it_is_given(
        tmp_path: Path, bind: str, advertise: str | None, dialled: str) -> None:
    loop = LoopThread("off-loopback")
    sock = _bound(bind)
    server = ApiServer(advertise=advertise)
    try:
        loop.run(server.start(sock))
        assert server.url.startswith(f"https://{dialled}:")
        path = server.write_kubeconfig(tmp_path / "kc")
        assert loop.run(_namespaces(path)) == ["off-loopback"]
    finally:
        loop.run(server.stop())
        sock.close()
        assert not loop.close()


def test_an_address_the_certificate_does_not_name_is_refused(tmp_path: Path) -> None:
    """The check above can fail: dialling 127.0.0.4 for a server that names 127.0.0.2 only
    fails TLS verification (the client does verify the SAN)."""
    loop = LoopThread("off-loopback")
    sock = _bound("0.0.0.0")
    server = ApiServer(advertise="127.0.0.2")
    try:
        loop.run(server.start(sock))
        port = server.url.rsplit(":", 1)[1]
        config = KubeConfig.from_kubeconfig(server.write_kubeconfig(tmp_path / "kc"))
        config = replace(config, server=f"https://127.0.0.4:{port}")

        async def attempt() -> None:
            async with KubeClient(config) as kube:
                await kube.ensure_namespace("refused")

        with pytest.raises((KubeError, OSError), match=r"(?i)certificate|hostname|IP address"):
            loop.run(attempt())
    finally:
        loop.run(server.stop())
        sock.close()
        assert not loop.close()
