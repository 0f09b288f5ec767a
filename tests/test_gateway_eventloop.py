"""`wasmbed-hil gateway --loop`: asyncio's loop by default, uvloop (the fast extra) on request,
a clear refusal when uvloop is asked for and not installed; a real gateway serves a device
under uvloop as under asyncio (gateway/eventloop.py, gateway/tlsstream.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from gateway_device import serve_one_device

from wasmbed_hil.cli import main, parser
from wasmbed_hil.cli.common import EXIT_ENVIRONMENT
from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.gateway.eventloop import DEFAULT_LOOP, LoopUnavailable, loop_runner
from wasmbed_hil.pki import FleetCA, server_ssl_context

REQUIRED = ["--name", "gw", "--pki-dir", "pki", "--state-dir", "st"]


def test_asyncio_is_the_default_loop() -> None:
    args = parser().parse_args(["gateway", *REQUIRED])
    assert args.loop == DEFAULT_LOOP == "asyncio"
    assert loop_runner("asyncio") is asyncio.run


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        loop_runner("trio")
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["gateway", *REQUIRED, "--loop", "trio"])
    assert exc.value.code == 2


def test_uvloop_asked_for_but_not_installed_is_a_clear_error(monkeypatch, capsys,
                                                             tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(LoopUnavailable, match=r"wasmbed-hil\[fast\]"):
        loop_runner("uvloop")
    # before anything is bound or read: the missing PKI directory is never reached
    code = main(["gateway", "--loop", "uvloop", "--kubeconfig", str(tmp_path / "kc"),
                 "--name", "gw", "--state-dir", str(tmp_path / "st"),
                 "--pki-dir", str(tmp_path / "nowhere")])
    assert code == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "--loop uvloop" in err and "wasmbed-hil[fast]" in err


def test_a_gateway_serves_a_device_under_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")
    ca = FleetCA.create("uvloop CA")
    ca.issue_gateway("gw", hosts=("localhost", "127.0.0.1")).write(tmp_path / "tls")
    gateway = Gateway(GatewayConfig.for_tests(), server_ssl_context(tmp_path / "tls"),
                      tmp_path / "state")

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        await serve_one_device(gateway, ca, tmp_path / "flash", heartbeats=2)
        assert gateway.metrics["handshakes"] == 1

    loop_runner("uvloop")(scenario())
