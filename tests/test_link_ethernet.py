"""The bridge's Ethernet framing (bench.link.ethernet), without an emulator: a stand-in
device speaks the firmware's frames (firmware/ports/mps2-an385/eth.h) over QEMU's
socket-netdev wire format."""

from __future__ import annotations

import asyncio

import pytest
from test_bridge import HELLO as CLIENT_HELLO
from test_bridge import LinkEvents, Upstream

from wasmbed_hil.bench.link.bridge import Bridge
from wasmbed_hil.bench.link.ethernet import (
    CREDIT,
    DATA,
    HELLO,
    LENGTH,
    MAX_PAYLOAD,
    EthernetProtocolError,
    Frame,
    FrameReader,
    encode,
    open_ethernet,
    parse,
)
from wasmbed_hil.bench.link.impairments import Bandwidth


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_frame_survives_encoding_and_what_is_not_ours_is_refused():
    frame = Frame(DATA, 0xDEADBEEF, 7, b"tls bytes")
    wire = encode(frame)
    assert LENGTH.unpack_from(wire)[0] == len(wire) - 4 == 23 + 9
    assert parse(wire[4:]) == frame
    assert parse(encode(Frame(CREDIT, 1, 12))[4:]) == Frame(CREDIT, 1, 12)
    other_type = bytearray(wire[4:])
    other_type[12:14] = b"\x08\x00"  # IPv4
    assert parse(bytes(other_type)) is None
    assert parse(wire[4:20]) is None  # shorter than our header
    empty_data = bytearray(encode(Frame(CREDIT, 1, 2))[4:])
    empty_data[14] = DATA  # DATA without payload
    assert parse(bytes(empty_data)) is None
    with pytest.raises(ValueError):
        encode(Frame(DATA, 1, 0, bytes(MAX_PAYLOAD + 1)))


def test_frames_are_cut_out_of_a_stream_split_anywhere_and_bad_lengths_refused():
    frames = [encode(Frame(DATA, 5, i, bytes([i]) * (i + 1))) for i in range(5)]
    stream = b"".join(frames)
    reader = FrameReader()
    got = []
    for i in range(0, len(stream), 3):
        got += reader.feed(stream[i:i + 3])
    assert [parse(f) for f in got] == [Frame(DATA, 5, i, bytes([i]) * (i + 1)) for i in range(5)]
    with pytest.raises(EthernetProtocolError):
        list(FrameReader().feed(LENGTH.pack(0)))
    with pytest.raises(EthernetProtocolError):
        list(FrameReader().feed(LENGTH.pack(70_000)))


class Device:
    """The device's side of the wire: sends frames, reads what the bridge sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader()
        self.got: list[Frame] = []

    def send(self, kind: int, nonce: int, value: int, payload: bytes = b"") -> None:
        self.writer.write(encode(Frame(kind, nonce, value, payload)))

    async def receive(self, count: int) -> list[Frame]:
        while len(self.got) < count:
            chunk = await self.reader.read(65536)
            assert chunk, "the bridge closed"
            self.got += [f for raw in self.frames.feed(chunk) if (f := parse(raw))]
        out, self.got = self.got[:count], self.got[count:]
        return out

    async def quiet(self) -> bool:
        """Nothing more arrives within 0.2 s (used only where nothing must come)."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), 0.2)
        except TimeoutError:
            return True
        return not chunk


async def _pair():
    got: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    ready = asyncio.Event()

    async def accept(reader, writer):
        got.append((reader, writer))
        ready.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    await ready.wait()
    restarts: list[int] = []
    stream, port = await open_ethernet(*got[0], on_restart=lambda: restarts.append(1))
    return server, Device(reader, writer), stream, port, restarts


def test_the_bridge_sends_only_what_the_credits_allow_and_a_hello_forgets_the_old_boot():
    async def scenario():
        server, dev, stream, port, restarts = await _pair()
        try:
            port.write(b"before any hello")  # no boot yet: dropped, nothing is sent
            dev.send(HELLO, 0x1111, 2)
            dev.send(DATA, 0x1111, 0, b"client hello")
            assert await stream.readexactly(12) == b"client hello"
            assert restarts == [1]
            burst = bytes(range(256)) * 20  # 5,120 bytes: four frames
            port.write(burst)
            first = await dev.receive(2)  # the limit: two frames
            assert [(f.kind, f.nonce, f.value) for f in first] == [(DATA, 0x1111, 0),
                                                                  (DATA, 0x1111, 1)]
            assert await dev.quiet()
            assert port.stats.max_pending == len(burst) - 2 * MAX_PAYLOAD
            drained = asyncio.ensure_future(port.drain())
            await asyncio.sleep(0)
            assert not drained.done()  # the writer waits for credits
            dev.send(CREDIT, 0x9999, 100)  # another nonce: not this boot's credit
            dev.send(CREDIT, 0x1111, 10)
            rest = await dev.receive(2)
            await drained
            assert b"".join(f.payload for f in first + rest) == burst
            assert [f.value for f in rest] == [2, 3]
            # The device boots again: what was held for the old boot goes, numbering restarts
            dev.send(CREDIT, 0x1111, 10)
            port.write(b"stale")  # sent: credit left
            await dev.receive(1)
            dev.send(HELLO, 0x2222, 1)
            dev.send(DATA, 0x1111, 1, b"old boot")  # the old nonce: not delivered
            dev.send(DATA, 0x2222, 0, b"new")
            assert await stream.readexactly(3) == b"new"
            assert port.stats.stale_frames_up == 1 and restarts == [1, 1]
            port.write(b"x")
            (frame,) = await dev.receive(1)
            assert (frame.nonce, frame.value, frame.payload) == (0x2222, 0, b"x")
        finally:
            dev.writer.close()
            port.close()
            await port.wait_closed()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_a_bridge_link_with_ethernet_framing_reaches_the_gateway_and_keeps_impairments():
    """Through Bridge.open_link(framing=open_ethernet): the device's ClientHello in a DATA
    frame dials the gateway, the answer comes back in DATA frames, and a bandwidth
    impairment on the link still paces the byte stream above the frames."""

    async def scenario():
        upstream = Upstream()
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        bridge = Bridge()
        events = LinkEvents()
        link = await bridge.open_link("dev", server.sockets[0].getsockname()[:2], events,
                                      framing=open_ethernet)
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        dev = Device(reader, writer)
        try:
            dev.send(HELLO, 7, 50)
            await events.wait("device restarted")
            dev.send(DATA, 7, 0, CLIENT_HELLO)
            echoed = b""
            while len(echoed) < 5 + len(CLIENT_HELLO):
                echoed += b"".join(f.payload for f in await dev.receive(1))
            assert echoed == b"echo:" + CLIENT_HELLO
            assert upstream.connections == 1 and link.stats.bytes_up == len(CLIENT_HELLO)
            line = Bandwidth(2000)
            link.impairments.add(line)
            record = b"\x17\x03\x03\x03\xe8" + bytes(1000)
            loop = asyncio.get_running_loop()
            begun = loop.time()
            dev.send(DATA, 7, 1, record)
            echoed = b""
            while len(echoed) < 5 + len(record):
                echoed += b"".join(f.payload for f in await dev.receive(1))
            assert echoed == b"echo:" + record
            assert loop.time() - begun >= (len(record) + 5) / 2000 * 0.9
        finally:
            writer.close()
            await bridge.close()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_qemu_gets_the_lan9118_on_a_socket_netdev_and_a_null_link_uart(tmp_path):
    from wasmbed_hil.bench.machines.qemu import qemu_command

    uart = qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 4321)
    eth = qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 4321, link="ethernet")
    assert "-nic" not in uart and "tcp:127.0.0.1:4321,nodelay=on" in uart
    nic = eth[eth.index("-nic") + 1]
    assert nic.startswith("socket,model=lan9118,") and nic.endswith("connect=127.0.0.1:4321")
    serials = [eth[i + 1] for i, a in enumerate(eth) if a == "-serial"]
    assert serials == ["chardev:uart0", "null"]
    with pytest.raises(ValueError):
        qemu_command(tmp_path / "fw.elf", tmp_path / "b.bin", 1, link="wifi")


def test_our_image_gets_ethernet_a_given_one_the_uart_and_the_choice_can_be_forced(
    tmp_path, monkeypatch
):
    from wasmbed_hil.bench.backends.qemu import QEMU_LINK_ENV, QemuBackend, link_choice
    from wasmbed_hil.bench.firmware.blob import LINK_ETHERNET
    from wasmbed_hil.bench.loop import LoopThread

    monkeypatch.delenv(QEMU_LINK_ENV, raising=False)
    monkeypatch.delenv("WASMBED_HIL_FIRMWARE", raising=False)
    loop = LoopThread("eth-choice")
    try:
        backend = QemuBackend(loop, tmp_path)
        assert backend.link_of("ours") == "ethernet"
        assert backend.link_config("ours") == {"link": LINK_ETHERNET}
        backend._images["theirs"] = tmp_path / "their.elf"  # a device given firmware=
        assert backend.link_of("theirs") == "uart" and backend.link_config("theirs") == {}
        backend._links["ours"] = "uart"  # link="uart"
        assert backend.link_of("ours") == "uart"
        monkeypatch.setenv(QEMU_LINK_ENV, "ethernet")
        assert backend.link_of("theirs") == "ethernet"
        monkeypatch.setenv(QEMU_LINK_ENV, "serial")
        with pytest.raises(ValueError, match="--qemu-link"):
            link_choice()
    finally:
        loop.close()
