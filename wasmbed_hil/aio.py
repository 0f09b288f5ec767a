"""asyncio helpers shared by the gateway, the devices and the harness."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# What answers a request aiohttp's HTTP parser refused (request line or header over its
# limits, not HTTP at all): given the exception, a response (aiohttp then closes the
# connection).
ParseErrorResponder = Callable[[BaseException], Any]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], patience: float = 1.0) -> None:
    """Cancel tasks and wait until each has really ended.

    One cancel() is not always enough: on Python 3.11 `asyncio.wait_for` can swallow a
    cancellation that races with its inner future finishing, and a task may then carry on.
    So cancellation is repeated until the task is done.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)


def die_with_parent(parent: int) -> None:
    """For `preexec_fn`, in the child before exec: SIGTERM when its parent dies, even by
    SIGKILL (Linux's PR_SET_PDEATHSIG; elsewhere nothing), and give up now if the parent
    already died between fork and here. Linux sends the signal when the *thread* that
    forked ends, so start such children from a thread that lives as long as they should."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def reuse_port_supported() -> str | None:
    """None when this OS offers SO_REUSEPORT for TCP, else why not."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this system has no SO_REUSEPORT"
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        return f"this system refuses SO_REUSEPORT ({exc.strerror or exc})"
    finally:
        probe.close()
    return None


def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (port 0: an OS-chosen one; IPv6 for a host with a
    colon), with SO_REUSEADDR, and SO_REUSEPORT if asked; not listening yet. OSError, and
    nothing left open, if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT and never listening: it holds the port
    (port 0: an OS-chosen one) for the processes, which join it, and the kernel never hands
    it a connection (only listening sockets receive any). OSError if it cannot be bound."""
    return bound_socket(host, port, reuse_port=True)


async def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of `proc` (started with start_new_session=True) unless it
    has ended already, and reap it: the way a power cut ends an emulator."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


class AppServer:
    """An aiohttp application served on a handed-over socket (its owner keeps it) or on an
    OS-chosen port of 127.0.0.1 (ours to close). Shared by the emulated API server and the
    REST API.

    `stop()` leaves no connection behind: aiohttp's cleanup closes an idle TLS connection by
    sending close_notify and waiting up to ssl_shutdown_timeout (30 s) for the peer's reply,
    untracked; a client that keeps its connection would leave that socket to the garbage
    collector. So what cleanup left is aborted, as a Go server does.
    """

    def __init__(self, app: Any, *, ssl_context: ssl.SSLContext | None = None,
                 parse_error: ParseErrorResponder | None = None,
                 **runner_options: Any) -> None:
        """``parse_error``: the answer to a request aiohttp cannot parse, instead of its
        plain-text 400 and an ERROR log with a traceback per such request (see
        `_parse_error_classes`)."""
        self.app = app
        self.ssl_context = ssl_context
        self.parse_error = parse_error
        self.runner_options = {"access_log": None, "shutdown_timeout": 5, **runner_options}
        self.url: str | None = None
        self._runner: Any = None
        self._own_socket: socket.socket | None = None

    @property
    def started(self) -> bool:
        return self._runner is not None

    async def start(self, sock: socket.socket | None = None) -> str:
        from aiohttp import web

        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self._own_socket = sock
        runner = web.AppRunner(self.app, **self.runner_options)
        await runner.setup()
        if self.parse_error is not None and runner.server is not None:
            server_class, _ = _parse_error_classes()
            runner.server.__class__ = server_class  # the same object, handing out our handler
            runner.server.parse_error = self.parse_error
        try:
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
        except BaseException:
            await runner.cleanup()
            self._close_own_socket()
            raise
        self._runner = runner
        host, port = sock.getsockname()[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in host:
            host = f"[{host}]"
        self.url = f"{'https' if self.ssl_context else 'http'}://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()  # no new connection from here on
            handlers = runner.server.connections if runner.server is not None else []
            transports = [h.transport for h in handlers if h.transport is not None]
            await runner.cleanup()
            for transport in transports:
                transport.abort()  # a no-op on one already closed
        self._close_own_socket()

    def _close_own_socket(self) -> None:
        own, self._own_socket = self._own_socket, None
        if own is not None:
            own.close()


@functools.cache
def _parse_error_classes() -> tuple[type, type]:
    """A web.Server whose connections' handlers answer parser errors with `parse_error`.

    aiohttp turns a request its parser refuses into a call of `RequestHandler.handle_error`
    (status 400), past the application and its middlewares: that logs the error with a
    traceback at ERROR level and answers in plain text. The subclass logs one line at DEBUG
    (the request's bytes are the client's: they are not logged, nor echoed) and answers with
    what `parse_error` makes of the exception; every other error keeps aiohttp's handling.
    Built on first use: the product's lower layers use this module without aiohttp.
    """
    from aiohttp import web, web_protocol
    from aiohttp.http_exceptions import HttpProcessingError

    class ParseErrorHandler(web_protocol.RequestHandler):
        parse_error: ParseErrorResponder

        def handle_error(self, request: Any, status: int = 500,
                         exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            if status != 400 or not isinstance(exc, HttpProcessingError):
                return super().handle_error(request, status, exc, message)
            log.debug("refused a request that is not well-formed HTTP from %s: %s",
                      request.remote, type(exc).__name__)
            if request.writer.output_size > 0:  # as aiohttp: too late for an answer
                raise ConnectionError("response already started, cannot answer the error")
            response = self.parse_error(exc)
            response.force_close()
            return response

    class ParseErrorServer(web.Server):
        parse_error: ParseErrorResponder

        def __call__(self) -> web_protocol.RequestHandler:
            handler = ParseErrorHandler(self, loop=self._loop, **self._kwargs)
            handler.parse_error = self.parse_error
            return handler

    return ParseErrorServer, ParseErrorHandler
