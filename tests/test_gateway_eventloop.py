"""`wasmbed-hil gateway --loop`: asyncio's loop by default, uvloop (the fast extra) on request,
a clear refusal when uvloop is asked for and not installed; a real gateway serves a device
under uvloop as under asyncio (gateway/eventloop.py, gateway/tlsstream.py). `--coalesce`:
asyncio's loop on a CoalescingSelector, which polls at most once per interval while busy."""

from __future__ import annotations

import asyncio
import selectors
import socket
import sys
from pathlib import Path

import pytest
from gateway_device import serve_one_device

from wasmbed_hil.cli import main, parser
from wasmbed_hil.cli.common import EXIT_ENVIRONMENT, EXIT_USAGE
from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.gateway.eventloop import (
    DEFAULT_COALESCE_S,
    DEFAULT_LOOP,
    MAX_COALESCE_S,
    CoalescingSelector,
    LoopUnavailable,
    loop_runner,
)
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


# ----------------------------------------------------------------------------- coalescing


class FakeTime:
    """The selector's clock and sleep: sleeping moves the clock, and says how long."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_after_a_poll_that_found_work_the_next_waits_out_the_interval(pair) -> None:
    a, b = pair
    t = FakeTime()
    with CoalescingSelector(0.002, clock=t.clock, sleep=t.sleep) as selector:
        selector.register(a, selectors.EVENT_READ)
        assert selector.select(0.05) == [] and t.slept == []  # nothing found: no wait after
        b.send(b"x")
        assert len(selector.select(None)) == 1 and t.slept == []  # idle: taken at once
        t.now += 0.0005
        assert len(selector.select(None)) == 1  # busy: waits until 2 ms after the last poll
        assert t.slept == [pytest.approx(0.0015)]
        t.now += 0.01
        assert len(selector.select(None)) == 1 and len(t.slept) == 1  # the interval passed


def test_ready_callbacks_and_the_loops_next_timer_are_never_delayed(pair) -> None:
    a, b = pair
    t = FakeTime()
    with CoalescingSelector(0.002, clock=t.clock, sleep=t.sleep) as selector:
        selector.register(a, selectors.EVENT_READ)
        b.send(b"x")
        assert len(selector.select(None)) == 1
        assert len(selector.select(0)) == 1 and t.slept == []  # select(0): callbacks wait
        assert len(selector.select(0.0005)) == 1  # a timer due in 0.5 ms: no later than that
        assert t.slept == [pytest.approx(0.0005)]


@pytest.mark.parametrize("interval", [0, -0.001, MAX_COALESCE_S * 2, float("nan"),
                                      float("inf")])
def test_an_interval_out_of_range_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="coalescing interval"):
        CoalescingSelector(interval)
    if interval:
        with pytest.raises(ValueError, match="coalescing interval"):
            loop_runner("asyncio", interval)


def test_the_loop_runs_on_the_coalescing_selector_and_serves_a_device(tmp_path: Path) -> None:
    ca = FleetCA.create("coalescing CA")
    ca.issue_gateway("gw", hosts=("localhost", "127.0.0.1")).write(tmp_path / "tls")
    gateway = Gateway(GatewayConfig.for_tests(), server_ssl_context(tmp_path / "tls"),
                      tmp_path / "state")

    async def scenario() -> float:
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        assert isinstance(selector, CoalescingSelector)
        await serve_one_device(gateway, ca, tmp_path / "flash", heartbeats=2)
        assert gateway.metrics["handshakes"] == 1 and gateway.metrics["heartbeats"] >= 2
        return float(selector.interval)

    assert loop_runner("asyncio", DEFAULT_COALESCE_S)(scenario()) == DEFAULT_COALESCE_S


def test_coalesce_options(capsys, tmp_path: Path) -> None:
    """Off with uvloop by default, refused there when asked for; out of range: usage."""
    assert parser().parse_args(["gateway", *REQUIRED]).coalesce is None
    assert parser().parse_args(["gateway", *REQUIRED, "--coalesce", "0"]).coalesce == 0
    for bad in ("0.5", "-1", "x", "nan"):
        with pytest.raises(SystemExit) as exc:
            parser().parse_args(["gateway", *REQUIRED, "--coalesce", bad])
        assert exc.value.code == 2
    with pytest.raises(ValueError, match="asyncio's loop"):
        loop_runner("uvloop", 0.002)
    code = main(["gateway", "--loop", "uvloop", "--coalesce", "0.002",
                 "--kubeconfig", str(tmp_path / "kc"), "--name", "gw",
                 "--state-dir", str(tmp_path / "st"), "--pki-dir", str(tmp_path / "nowhere")])
    assert code == EXIT_USAGE
    assert "--coalesce 0.002 with --loop uvloop" in capsys.readouterr().err
