"""A lean link for virtual devices by the thousand (the fleet workers' `link="lean"`).

asyncio's TLS layer costs a Python protocol object, a transport, a 32-256 KiB read buffer and
several calls per message on each connection, and the reference device adds a task and a
timer per heartbeat: one fleet worker held about 5,000 devices at 1 Hz before its loop
saturated (docs/fleets.md). This module keeps what a device says and hears the same, and
takes the per-heartbeat cost out of the event loop:

- `LeanHub`, one per event loop: an epoll of its own over every lean link (the loop watches
  that one descriptor, so a burst of ready links costs one loop callback), and a heartbeat
  wheel (`every`): one timer for all devices, in 1 ms slots (empty ones skipped), instead of
  a task and a timer per device;
- `LeanLink`, one device's connection: a non-blocking `ssl.SSLSocket` (OpenSSL reads and
  writes the socket itself, no memory BIOs), opened and handshaken on the loop, then driven by
  the hub. It splits the byte stream into frames; once the device says its session is
  established, a frame that is exactly a HeartbeatAck (`ack_id`) is handed to `on_ack` at
  once, every other frame goes to `read()` (the device's session, as over asyncio);
- the device's heartbeats are encoded by hand (`protocol.shortform.heartbeat_frame`,
  byte-identical to the protocol's own encoder; tests/test_protocol_shortform.py checks it).

Nothing else changes: the device (bench/virtual/device.py) still runs its session, answers
deployments, runs modules and reconnects exactly as over asyncio's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from ...protocol.framing import HEADER
from ...protocol.shortform import ack_id

# Heartbeats are sent at most this late (one wheel slot). Fine enough that the heartbeats of
# devices that joined apart do not bunch up at the gateway: 10,000 at 1 Hz are 10 a slot.
WHEEL_TICK_S = 0.001
READ_SIZE = 65536
# ====================================================================== the hub
@dataclass(eq=False)
class Ticket:
    """One periodic call on the wheel; `cancel()` ends it."""

    fn: Callable[[], bool]
    interval: float
    due: float
    alive: bool = True

    def cancel(self) -> None:
        self.alive = False


class LeanHub:
    """The lean links of one event loop: their readiness and their heartbeat wheel."""

    def __init__(self, tick: float = WHEEL_TICK_S) -> None:
        self.loop = asyncio.get_running_loop()
        self.tick = tick
        self._epoll = select.epoll()
        self._links: dict[int, LeanLink] = {}
        self._slots: dict[int, list[Ticket]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0  # the slot the timer is set for
        self._next_slot = 0  # the first slot not yet run
        self.closed = False
        self.loop.add_reader(self._epoll.fileno(), self._ready)

    def __len__(self) -> int:
        return len(self._links)

    # -- readiness ---------------------------------------------------------------------------
    def watch(self, link: LeanLink, events: int) -> None:
        fd = link.fileno
        if fd in self._links:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)
            self._links[fd] = link

    def forget(self, link: LeanLink) -> None:
        if self._links.get(link.fileno) is link:
            del self._links[link.fileno]
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(link.fileno)

    def _ready(self) -> None:
        links = self._links
        for fd, events in self._epoll.poll(0):
            link = links.get(fd)
            if link is not None:
                link.on_events(events)

    # -- the wheel ---------------------------------------------------------------------------
    def every(self, interval: float, fn: Callable[[], bool]) -> Ticket:
        """Call `fn` every `interval` seconds from now + interval, within one tick of each
        due time, until it returns False, raises (reported to the loop's exception handler)
        or the ticket is cancelled. A late tick does not
        bunch calls up: each due time is the previous one plus the interval (skipping what
        was missed)."""
        if not interval > 0:
            raise ValueError(f"interval {interval!r} must be positive")
        ticket = Ticket(fn, interval, self.loop.time() + interval)
        self._place(ticket)
        return ticket

    def _slot(self, when: float) -> int:
        return -int(-when // self.tick)  # the first tick at or after `when`

    def _place(self, ticket: Ticket) -> None:
        if self.closed:
            raise RuntimeError("the hub is closed")
        if self._timer is None:  # the wheel was idle
            self._next_slot = self._slot(self.loop.time())
        slot = max(self._slot(ticket.due), self._next_slot)
        self._slots.setdefault(slot, []).append(ticket)
        if self._timer is None or slot < self._timer_slot:
            self._arm(slot)

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = self.loop.call_at(slot * self.tick, self._on_tick)

    def _on_tick(self) -> None:
        self._timer = None
        now = self.loop.time()
        last = self._slot(now)
        slots = self._slots
        for slot in range(self._next_slot, last + 1):
            for ticket in slots.pop(slot, ()):
                if not ticket.alive:
                    continue
                try:
                    again = ticket.fn()
                except Exception as exc:  # one device's bug must not stop everyone's wheel
                    self.loop.call_exception_handler({
                        "message": "a lean heartbeat raised; its ticket is cancelled",
                        "exception": exc})
                    again = False
                if not again:
                    ticket.alive = False
                    continue
                ticket.due += ticket.interval
                if ticket.due <= now:  # late by a whole interval: skip what was missed
                    ticket.due = now + ticket.interval
                slots.setdefault(max(self._slot(ticket.due), last + 1), []).append(ticket)
        self._next_slot = last + 1
        if slots and not self.closed:  # the next slot with something in it
            self._arm(self._next_slot if self._next_slot in slots else min(slots))

    def close(self) -> None:
        """Stop the wheel and stop watching; the links themselves are closed by their
        devices (power off)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()
        with contextlib.suppress(ValueError, RuntimeError):
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


# ====================================================================== one link
class LeanLink:
    """One device's TLS connection on a non-blocking SSLSocket, driven by a LeanHub.

    The device's side of it is the same as StreamLink's in device.py: `read()` (b"" at the
    end), `write()`, `is_closing()`, `abort()`, `close()`. `on_ack(message_id)` is called for
    HeartbeatAcks once `fast_acks` is set (the device sets it when its session is
    established); `on_bytes()` for any bytes received, whole TLS records or not (a device's
    proof of a live link).
    """

    def __init__(self, hub: LeanHub, tls: ssl.SSLSocket, max_frame: int,
                 on_ack: Callable[[int], None], on_bytes: Callable[[], None]) -> None:
        self.hub = hub
        self.fileno = tls.fileno()
        self.max_frame = max_frame
        self.fast_acks = False
        self._tls = tls
        self._on_ack = on_ack
        self._on_bytes = on_bytes
        self._in = bytearray()  # bytes of an incomplete frame
        self._other: list[bytes] = []  # whole frames for read()
        self._out = bytearray()  # what the socket did not take yet
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._closing = False
        hub.watch(self, select.EPOLLIN)

    @classmethod
    async def open(cls, hub: LeanHub, host: str, port: int, context: ssl.SSLContext,
                   server_hostname: str, max_frame: int, on_ack: Callable[[int], None],
                   on_bytes: Callable[[], None]) -> LeanLink:
        """Connect and complete the TLS handshake (the caller bounds the time); the link is
        then watched by the hub."""
        loop = hub.loop
        family, kind, proto, _, address = (await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        tls: ssl.SSLSocket | None = None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's streams
            await loop.sock_connect(sock, address)
            tls = context.wrap_socket(sock, server_hostname=server_hostname,
                                      do_handshake_on_connect=False)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await _ready(loop, tls.fileno(), write=False)
                except ssl.SSLWantWriteError:
                    await _ready(loop, tls.fileno(), write=True)
            return cls(hub, tls, max_frame, on_ack, on_bytes)
        except BaseException:
            (tls or sock).close()
            raise

    # -- the device's side -------------------------------------------------------------------
    async def read(self) -> bytes:
        """The next frames other than fast-path HeartbeatAcks; b"" once the link is down."""
        while not self._other and not self._eof:
            self._waiter = self.hub.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._other)
        self._other.clear()
        return data

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._out:  # the socket is full: queue behind what waits
            self._out += data
            return
        try:
            sent = self._tls.send(data)
        except ssl.SSLWantWriteError:
            sent = 0
        except (ssl.SSLError, OSError):
            self.abort()
            return
        if sent < len(data):
            self._out += data[sent:]
            self.hub.watch(self, select.EPOLLIN | select.EPOLLOUT)

    def is_closing(self) -> bool:
        return self._closing

    def abort(self) -> None:
        """Drop the connection now (no close_notify), as a lost link would."""
        if not self._closing:
            self._closing = True
            self.hub.forget(self)
            self._tls.close()
        self._end()

    async def close(self) -> None:
        """Close politely: what is queued is tried once more, then close_notify."""
        if self._closing:
            return
        self._closing = True
        self.hub.forget(self)
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            if self._out:
                self._tls.send(self._out)
            self._tls.unwrap()  # sends close_notify; does not wait for the peer's
        self._tls.close()
        self._end()

    # -- the hub's side ----------------------------------------------------------------------
    def on_events(self, events: int) -> None:
        if events & select.EPOLLOUT and self._out:
            self._flush()
        if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            self._receive()

    def _flush(self) -> None:
        try:
            sent = self._tls.send(self._out)
        except ssl.SSLWantWriteError:
            return
        except (ssl.SSLError, OSError):
            self.abort()
            return
        del self._out[:sent]
        if not self._out and not self._closing:
            self.hub.watch(self, select.EPOLLIN)

    def _receive(self) -> None:
        tls = self._tls
        got = False
        arrived = False  # bytes came, maybe part of a record only: the link is alive
        while not self._closing:
            try:
                data = tls.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                # OpenSSL took what the socket held (epoll said it held something) into
                # an incomplete record: bytes arrived all the same (rawbytes.py)
                arrived = True
                break
            except (ssl.SSLError, OSError):
                data = b""
            if not data:
                self._closing = True
                self.hub.forget(self)
                tls.close()
                self._end()
                break
            got = True
            self._in += data
            if not tls.pending():  # the kernel may hold more: epoll says so again
                break
        if got or arrived:
            self._on_bytes()
        if got:
            self._frames()

    def _frames(self) -> None:
        buf = self._in
        while len(buf) >= HEADER:
            size = int.from_bytes(buf[:HEADER], "big")
            if size == 0 or size > self.max_frame:  # the session reports the violation
                self._other.append(bytes(buf))
                buf.clear()
                break
            end = HEADER + size
            if len(buf) < end:
                break
            mid = ack_id(bytes(buf[HEADER:end])) if self.fast_acks else None
            if mid is not None:
                self._on_ack(mid)
            else:
                self._other.append(bytes(buf[:end]))
            del buf[:end]
        if self._other:
            self._wake()

    def _end(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Until `fd` is readable (or writable): the handshake's waits, on the loop itself."""
    future: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not future.done():
            future.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, done)
    try:
        await future
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)
