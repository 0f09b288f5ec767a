"""Serial ports the harness opens itself: the UART side of a link on a real board.

An emulator's UART dials the bridge; a board's link UART is a serial port the harness opens:
a tty (a USB serial adapter, or a stand-in board's pty) or a TCP port of ser2net, which is
how a labgrid exporter shares a serial port. Either way the bytes must arrive unchanged
(they are a TLS stream), so:

- a tty is put in raw mode (no echo, no CR/LF translation, no signals, 8 bits) and what
  earlier users left in its buffers is flushed;
- ser2net as labgrid's exporter runs it speaks telnet (RFC 2217 on top): the harness agrees
  to binary transmission both ways (RFC 856), refuses every other option, strips the
  negotiation and undoes the 0xFF (IAC) doubling, and doubles 0xFF in what it sends.

`open_pty` and `open_telnet` return an (asyncio.StreamReader, writer) pair the bridge's
Link takes exactly as it takes an emulator's connection (bench.link.bridge), so impairments
and counters work the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from typing import Any

from ...aio import cancel_and_wait

# Telnet (RFC 854) bytes and the options we accept.
IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
BINARY, SGA = 0, 3
ACCEPTED_OPTIONS = frozenset({BINARY, SGA})


def make_raw(fd: int) -> None:
    """Put the tty `fd` in raw mode and drop whatever waits in its buffers."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[2] |= termios.CLOCAL | termios.CREAD  # ignore modem lines, receive
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    termios.tcflush(fd, termios.TCIOFLUSH)


async def open_pty(path: str | os.PathLike[str]) -> tuple[asyncio.StreamReader, Any]:
    """Open the tty at `path` raw, as a (reader, writer) pair on the running loop."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConnectionError(f"cannot open serial port {os.fspath(path)}: {exc}") from exc
    try:
        if not os.isatty(fd):
            raise ConnectionError(f"{os.fspath(path)} is not a serial port (not a tty)")
        make_raw(fd)
        write_fd = os.dup(fd)
    except BaseException:
        os.close(fd)
        raise
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, _PtyWriter(writer, reader)


class _SerialWriter:
    """A StreamWriter's interface over an opened serial port, for the bridge's pump: what is
    written goes out as it is; subclasses say what writing and closing mean on their port."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self._writer.transport

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class _PtyWriter(_SerialWriter):
    """The writer of an opened tty; closing it also stops reading (one tty, two fds)."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        super().__init__(writer)
        self._reader = reader

    def close(self) -> None:
        super().close()
        read_transport = getattr(self._reader, "_transport", None)
        if read_transport is not None:
            read_transport.close()


class TelnetDecoder:
    """Telnet's framing taken off a received byte stream (sans I/O, across reads).

    `feed(data)` returns (payload, replies): the payload bytes with IAC IAC undone and
    every command, negotiation and sub-negotiation removed; the replies to send back to
    the peer (DO/WILL for binary and suppress-go-ahead, DONT/WONT for anything else, each
    option answered once per request)."""

    def __init__(self) -> None:
        self._state = "data"
        self._verb = 0
        self._answered: dict[tuple[int, int], int] = {}

    def _answer(self, verb: int, option: int) -> bytes:
        if verb in (DO, DONT):
            reply = WILL if verb == DO and option in ACCEPTED_OPTIONS else WONT
        else:
            reply = DO if verb == WILL and option in ACCEPTED_OPTIONS else DONT
        if self._answered.get((verb, option)) == reply:
            return b""  # already agreed: answering again would loop (RFC 854's rule)
        self._answered[(verb, option)] = reply
        return bytes((IAC, reply, option))

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        out = bytearray()
        replies = bytearray()
        for byte in data:
            state = self._state
            if state == "data":
                if byte == IAC:
                    self._state = "iac"
                else:
                    out.append(byte)
            elif state == "iac":
                if byte == IAC:
                    out.append(IAC)
                    self._state = "data"
                elif byte in (DO, DONT, WILL, WONT):
                    self._verb = byte
                    self._state = "option"
                elif byte == SB:
                    self._state = "sb"
                else:  # NOP, GA, BRK... carry nothing for a byte stream
                    self._state = "data"
            elif state == "option":
                replies += self._answer(self._verb, byte)
                self._state = "data"
            elif state == "sb":
                if byte == IAC:
                    self._state = "sb-iac"
            elif state == "sb-iac":
                self._state = "data" if byte == SE else "sb"
        return bytes(out), bytes(replies)


def telnet_escape(data: bytes) -> bytes:
    """Payload bytes as telnet sends them: every 0xFF doubled."""
    return data.replace(b"\xff", b"\xff\xff")


#: What the harness says first: binary both ways, no go-aheads.
TELNET_GREETING = bytes((IAC, WILL, BINARY, IAC, DO, BINARY, IAC, WILL, SGA, IAC, DO, SGA))


class _TelnetWriter(_SerialWriter):
    """Writes payload to a telnet connection (0xFF doubled); closing it ends the decoder."""

    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        super().__init__(writer)
        self._task = task

    def write(self, data: bytes) -> None:
        super().write(telnet_escape(data))

    def close(self) -> None:
        super().close()
        self._task.cancel()

    async def wait_closed(self) -> None:
        await cancel_and_wait([self._task])
        await super().wait_closed()


async def open_telnet(
    host: str, port: int, timeout: float = 5.0
) -> tuple[asyncio.StreamReader, Any]:
    """Connect to a serial port shared by ser2net in telnet mode (as labgrid's exporter
    runs it) and return a raw (reader, writer) pair."""
    try:
        raw_reader, raw_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot connect to serial port {host}:{port}: {exc}") from exc
    import socket

    with contextlib.suppress(OSError):
        raw_writer.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
    raw_writer.write(TELNET_GREETING)
    reader = asyncio.StreamReader(limit=1 << 20)
    decoder = TelnetDecoder()

    async def decode() -> None:
        try:
            while chunk := await raw_reader.read(16 * 1024):
                payload, replies = decoder.feed(chunk)
                if replies:
                    raw_writer.write(replies)
                if payload:
                    reader.feed_data(payload)
        except (OSError, ConnectionError) as exc:
            reader.set_exception(exc)
            return
        reader.feed_eof()

    task = asyncio.create_task(decode())
    return reader, _TelnetWriter(raw_writer, task)
