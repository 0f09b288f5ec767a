"""The bridge's end of an Ethernet link: the TLS byte stream in frames, with credits.

On qemu the device's link can be the MPS2-AN385's LAN9118 instead of UART1 (the UART model
moves one byte per QEMU main-loop iteration; the LAN9118 model takes whole frames). QEMU's
``-nic socket,connect=HOST:PORT`` dials the bridge's listener and sends each frame as a
4-byte big-endian length, then the frame. The framing is the firmware's
(firmware/ports/mps2-an385/eth.h):

    dst MAC (6) | src MAC (6) | EtherType 0x88B5 (2) | kind (1) | nonce (4, BE) | value (4, BE)
    | payload (DATA only, 1..1491 bytes)

kind 1 DATA (value: sequence number), 2 CREDIT and 3 HELLO (value: the limit, the number of
DATA frames the bridge may have sent this boot). QEMU's LAN9118 model drops a frame that
does not fit its receive FIFO (hw/net/lan9118.c, v7.2: ``lan9118_receive`` returns -1), so
the bridge never sends beyond the device's limit. HELLO starts a boot: the bridge forgets
what it held for the earlier boot, takes the new nonce, and drops what the gateway side
writes until the device's first DATA of the new boot (the device speaks first: its
ClientHello), so nothing of an old session reaches the new one; the Link is told
(`on_restart`) and closes the old upstream connection.

`open_ethernet(reader, writer, on_restart)` turns QEMU's connection into the (reader, writer)
pair that bench.link.bridge.Link pumps, like a UART's: impairments (``Bandwidth.uart``...)
and counters act on the byte stream above the frames, as on any link.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ...aio import cancel_and_wait

ETHERTYPE = 0x88B5
DATA, CREDIT, HELLO = 1, 2, 3
HEADER = struct.Struct(">6s6sHBII")  # 23 bytes
MAX_PAYLOAD = 1491  # frames of at most 1514 bytes
MAC_BRIDGE = bytes.fromhex("025742000002")
MAC_DEVICE = bytes.fromhex("025742000001")
LENGTH = struct.Struct(">I")
MAX_WIRE_FRAME = 65536  # what QEMU's socket netdev can carry; anything longer is not QEMU


class EthernetProtocolError(ConnectionError):
    """QEMU's side of the link sent something that is not a frame stream."""


@dataclass(frozen=True)
class Frame:
    kind: int
    nonce: int
    value: int
    payload: bytes = b""


def encode(frame: Frame) -> bytes:
    """A frame of ours with QEMU's socket-netdev length prefix."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes > {MAX_PAYLOAD}")
    body = HEADER.pack(MAC_DEVICE, MAC_BRIDGE, ETHERTYPE, frame.kind, frame.nonce,
                       frame.value) + frame.payload
    return LENGTH.pack(len(body)) + body


def parse(raw: bytes) -> Frame | None:
    """One Ethernet frame as QEMU delivered it: ours, or None (another EtherType, too short,
    an unknown kind). A DATA frame without payload is not ours either."""
    if len(raw) < HEADER.size:
        return None
    _dst, _src, ethertype, kind, nonce, value = HEADER.unpack_from(raw)
    payload = raw[HEADER.size:]
    if ethertype != ETHERTYPE or kind not in (DATA, CREDIT, HELLO):
        return None
    if (kind == DATA) != bool(payload) or len(payload) > MAX_PAYLOAD:
        return None
    return Frame(kind, nonce, value, bytes(payload))


class FrameReader:
    """QEMU's socket-netdev stream (length, frame, length, frame...) cut into frames, across
    reads (sans I/O)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while len(self._buf) >= LENGTH.size:
            (n,) = LENGTH.unpack_from(self._buf)
            if n == 0 or n > MAX_WIRE_FRAME:
                raise EthernetProtocolError(f"frame length {n} from QEMU's socket netdev")
            if len(self._buf) < LENGTH.size + n:
                return
            frame = bytes(self._buf[LENGTH.size:LENGTH.size + n])
            del self._buf[:LENGTH.size + n]
            yield frame


@dataclass
class EthernetStats:
    hellos: int = 0  # boots seen (HELLO frames)
    credits: int = 0  # CREDIT frames
    frames_up: int = 0  # DATA frames from the device
    frames_down: int = 0  # DATA frames to the device
    stale_frames_up: int = 0  # DATA of another nonce (an earlier boot)
    dropped_down: int = 0  # gateway-side bytes dropped: before the device's first DATA
    max_pending: int = 0  # most gateway-side bytes held back for want of credits
    foreign_frames: int = 0  # frames that are not ours (another EtherType...)


class EthernetPort:
    """Both directions of one QEMU connection; `stream` is what the Link reads, the port
    itself is what the Link writes to (a StreamWriter's interface)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_restart: Callable[[], None] | None = None) -> None:
        self._raw_reader = reader
        self._raw = writer
        self._on_restart = on_restart
        self.stream = asyncio.StreamReader(limit=1 << 20)
        self.stats = EthernetStats()
        self.nonce: int | None = None  # None until the device's HELLO
        self.limit = 0
        self.sent = 0
        self._pending = bytearray()
        self._accepting = False  # gateway-side bytes go to the device (after its first DATA)
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        #: Tests only: send without waiting for credits, to show that the emulator drops.
        self.ignore_credits = False
        self._task = asyncio.create_task(self._run())

    # -- the device's side ------------------------------------------------------------------
    async def _run(self) -> None:
        frames = FrameReader()
        try:
            while chunk := await self._raw_reader.read(64 * 1024):
                for raw in frames.feed(chunk):
                    self._on_frame(raw)
        except (OSError, ConnectionError) as exc:
            self.stream.set_exception(exc)
        else:
            self.stream.feed_eof()
        finally:
            self._closed = True
            self._drained.set()

    def _on_frame(self, raw: bytes) -> None:
        frame = parse(raw)
        if frame is None:
            self.stats.foreign_frames += 1
            return
        if frame.kind == HELLO:
            self.stats.hellos += 1
            self.nonce = frame.nonce
            self.sent = 0
            self.limit = frame.value
            self.stats.dropped_down += len(self._pending)
            self._pending.clear()
            self._accepting = False
            self._drained.set()
            if self._on_restart is not None:
                self._on_restart()
            return
        if frame.nonce != self.nonce:
            self.stats.stale_frames_up += frame.kind == DATA
            return
        if frame.kind == CREDIT:
            self.stats.credits += 1
            self.limit = max(self.limit, frame.value)
            self._flush()
            return
        self.stats.frames_up += 1
        self._accepting = True
        self.stream.feed_data(frame.payload)

    def _flush(self) -> None:
        if self.nonce is None or self._closed:
            return
        out = []
        while self._pending and (self.sent < self.limit or self.ignore_credits):
            chunk = bytes(self._pending[:MAX_PAYLOAD])
            del self._pending[:MAX_PAYLOAD]
            out.append(encode(Frame(DATA, self.nonce, self.sent, chunk)))
            self.sent += 1
        if out:
            self.stats.frames_down += len(out)
            self._raw.write(b"".join(out))
        if not self._pending:
            self._drained.set()

    # -- the Link's side (a StreamWriter's interface) -------------------------------------
    def write(self, data: bytes) -> None:
        if not self._accepting:
            self.stats.dropped_down += len(data)
            return
        self._pending += data
        self._drained.clear()
        self._flush()
        self.stats.max_pending = max(self.stats.max_pending, len(self._pending))

    async def drain(self) -> None:
        """Returns once the device has been sent everything (its credits allowed it)."""
        await self._drained.wait()
        if self._closed:
            raise ConnectionResetError("the emulator's Ethernet link closed")
        with contextlib.suppress(ConnectionError):
            await self._raw.drain()

    def is_closing(self) -> bool:
        return self._closed or self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self._raw.transport

    def close(self) -> None:
        self._raw.close()
        self._task.cancel()

    async def wait_closed(self) -> None:
        await cancel_and_wait([self._task])
        with contextlib.suppress(OSError, ConnectionError):
            await self._raw.wait_closed()


async def open_ethernet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        on_restart: Callable[[], None] | None = None
                        ) -> tuple[asyncio.StreamReader, EthernetPort]:
    """QEMU's socket-netdev connection as a byte-stream (reader, writer) pair."""
    port = EthernetPort(reader, writer, on_restart)
    return port.stream, port
