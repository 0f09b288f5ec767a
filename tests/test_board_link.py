"""The link variant whose UART side the harness opens (a board's serial port): raw ttys,
ser2net's telnet framing, and the same pump path (impairments, counters) as an emulator's."""

from __future__ import annotations

import asyncio
import os
import tty

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_bridge import HELLO, LinkEvents, Upstream, _record

from wasmbed_hil.bench.link.bridge import Bridge
from wasmbed_hil.bench.link.impairments import Partition
from wasmbed_hil.bench.link.serial import (
    BINARY,
    DO,
    DONT,
    IAC,
    SB,
    SE,
    SGA,
    WILL,
    WONT,
    TelnetDecoder,
    open_pty,
    open_telnet,
    telnet_escape,
)

ECHO, COM_PORT = 1, 44


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


# ------------------------------------------------------------------------ telnet framing


def test_telnet_decoder_strips_negotiation_and_answers_it_once():
    decoder = TelnetDecoder()
    data, replies = decoder.feed(bytes([IAC, DO, BINARY, IAC, WILL, SGA, IAC, DO, ECHO,
                                        IAC, WILL, COM_PORT]) + b"abc")
    assert data == b"abc"
    assert replies == bytes([IAC, WILL, BINARY, IAC, DO, SGA, IAC, WONT, ECHO,
                             IAC, DONT, COM_PORT])
    # the same request again (e.g. the peer's answer to ours) is not answered again
    assert decoder.feed(bytes([IAC, DO, BINARY])) == (b"", b"")


def test_telnet_decoder_undoes_iac_doubling_and_skips_subnegotiation_across_reads():
    decoder = TelnetDecoder()
    stream = (b"\x16\x03" + bytes([IAC, IAC]) + b"x"
              + bytes([IAC, SB, COM_PORT, 101, IAC, IAC, 7, IAC, SE]) + b"\r\n\x00y")
    out = b"".join(decoder.feed(stream[i : i + 1])[0] for i in range(len(stream)))
    assert out == b"\x16\x03\xffx\r\n\x00y"


@given(st.binary(max_size=512), st.integers(min_value=1, max_value=64))
def test_telnet_escape_then_decode_is_the_identity(payload: bytes, cut: int):
    decoder = TelnetDecoder()
    wire = telnet_escape(payload)
    out = b"".join(decoder.feed(wire[i : i + cut])[0] for i in range(0, len(wire), cut))
    assert out == payload


# ------------------------------------------------------------------- links on serial ports


async def _gateway() -> tuple[Upstream, asyncio.Server, tuple[str, int]]:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    return upstream, server, server.sockets[0].getsockname()[:2]


def _board_side_pty() -> tuple[int, int, str]:
    """A pty whose master plays the board's UART (what the stand-in relays to QEMU)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


async def _read_master(master: int, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < count:
        ready = loop.create_future()
        loop.add_reader(master, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(master)
        got += os.read(master, 4096)
    return bytes(got)


def test_a_pty_link_carries_bytes_raw_both_ways():
    async def scenario():
        upstream, server, endpoint = await _gateway()
        master, slave, path = _board_side_pty()
        bridge = Bridge()
        try:
            link = await bridge.open_serial_link("board-dev", endpoint, lambda: open_pty(path))
            assert link.port == 0  # nothing dials in: the harness opened the UART
            # bytes a cooked tty would change: CR, LF, ^C, ^D, ^S, DEL, 0xff
            hello = HELLO + _record(0x17, b"\r\n\x03\x04\x13\x7f\xff")
            os.write(master, hello)
            echoed = await _read_master(master, 5 + len(hello))
            assert echoed == b"echo:" + hello
            assert upstream.received and b"".join(upstream.received) == hello
            assert link.stats.bytes_up == len(hello)
            assert link.stats.bytes_down == 5 + len(hello)
            assert link.stats.uart_connections == 1
        finally:
            await bridge.close()
            os.close(master)
            os.close(slave)
            server.close()
            await server.wait_closed()

    run(scenario())


def test_a_pty_link_obeys_impairments_like_an_emulator_link():
    async def scenario():
        upstream, server, endpoint = await _gateway()
        master, slave, path = _board_side_pty()
        bridge = Bridge()
        events = LinkEvents()
        try:
            link = await bridge.open_serial_link("board-dev", endpoint,
                                                 lambda: open_pty(path), on_event=events)
            with link.impairments.impair(Partition()):
                os.write(master, HELLO)
                await events.wait("partitioned")
            assert upstream.connections == 0
            os.write(master, HELLO)  # healed: the next handshake gets through
            assert await _read_master(master, 5 + len(HELLO)) == b"echo:" + HELLO
            assert upstream.connections == 1
        finally:
            await bridge.close()
            os.close(master)
            os.close(slave)
            server.close()
            await server.wait_closed()

    run(scenario())


def test_opening_a_missing_or_non_tty_port_says_which():
    async def scenario(path):
        with pytest.raises(ConnectionError, match=r"cannot open serial port .*nope"):
            await open_pty(path / "nope")
        (path / "plain").write_text("")
        with pytest.raises(ConnectionError, match="not a tty"):
            await open_pty(path / "plain")

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        run(scenario(Path(d)))


class FakeSer2net:
    """What labgrid's exporter runs: ser2net's telnet(rfc2217) accepter in front of a UART.
    It opens with its own negotiation, doubles 0xff, and records what the client sent."""

    def __init__(self) -> None:
        self.decoder = TelnetDecoder()
        self.uart = bytearray()  # payload that reached the "UART"
        self.replies = bytearray()  # the client's negotiation answers
        self.got = asyncio.Event()
        self.connected = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        writer.write(bytes([IAC, WILL, BINARY, IAC, DO, BINARY, IAC, DO, COM_PORT]))
        while data := await reader.read(1024):
            payload, _ = self.decoder.feed(data)
            self.uart += payload
            self.got.set()
        writer.close()


def test_a_ser2net_link_undoes_telnet_both_ways():
    async def scenario():
        upstream, server, endpoint = await _gateway()
        fake = FakeSer2net()
        uart_server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        host, port = uart_server.sockets[0].getsockname()[:2]
        bridge = Bridge()
        try:
            await bridge.open_serial_link("remote-dev", endpoint,
                                          lambda: open_telnet(host, port))
            await fake.connected.wait()
            assert fake.writer is not None
            hello = HELLO + _record(0x17, b"\xff\xff\x00\xff")
            fake.writer.write(telnet_escape(hello))  # the board sends through ser2net
            while len(b"".join(upstream.received)) < len(hello):
                upstream.got_data.clear()
                await upstream.got_data.wait()
            assert b"".join(upstream.received) == hello
            while len(fake.uart) < 5 + len(hello):  # the gateway's echo reaches the UART
                fake.got.clear()
                await fake.got.wait()
            assert bytes(fake.uart) == b"echo:" + hello
        finally:
            await bridge.close()
            uart_server.close()
            await uart_server.wait_closed()
            server.close()
            await server.wait_closed()

    run(scenario())
