"""The device manager as a service: its machines started and stopped over HTTP, for kopf
controllers that run in a process of their own (`wasmbed-hil controllers --machine-manager`,
`PlatformConfig.controllers_process`), as they do in a cluster.

The client is `wasmbed_hil.controlplane.machineclient.RemoteMachineManager`; the wire format
is there and in docs/architecture.md. Served on the harness loop, on 127.0.0.1 by default;
every request must carry the service's bearer token. `DeviceManager.start`/`stop` are
synchronous and wait on the harness loop, so they run in worker threads of the service's own
pool, never on the loop, and never in the loop's default executor: a start waits on the
loop, and whatever the loop hands to that executor meanwhile (a provisioning, a name
look-up) would wait behind the starts that wait on it.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from ..aio import AppServer
from ..controlplane.emulation import EmulationError
from .devicemanager import NAME, DeviceManager

log = logging.getLogger(__name__)

#: The largest request body taken (a start's fields and its backend options).
MAX_BODY = 64 * 1024
#: Machine starts and stops served at once (the controllers run up to 8 handlers at a time).
WORKERS = 16
_OPTIONAL_STR = ("board", "preferredGateway")


class MachineService:
    """`manager`'s start/stop at `url` (once started) for callers presenting `token`."""

    def __init__(self, manager: DeviceManager, token: str | None = None) -> None:
        self.manager = manager
        self.token = token or secrets.token_urlsafe(24)
        self._token = self.token.encode()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth])
        app.router.add_put("/v1/machines/{name}", self._start)
        app.router.add_delete("/v1/machines/{name}", self._stop)
        self._server = AppServer(app)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:  # never the token
        return f"MachineService(url={self.url!r})"

    @property
    def url(self) -> str | None:
        return self._server.url

    async def start(self, sock: socket.socket | None = None) -> str:
        """Serve on `sock` (kept by its owner) or an OS-chosen port of 127.0.0.1."""
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="machine-service")
        return await self._server.start(sock)

    async def stop(self) -> None:
        await self._server.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            # Not waited for: a start in flight waits on this loop (DeviceManager.close
            # waits for those).
            pool.shutdown(wait=False)

    async def _in_pool(self, call: functools.partial[Any]) -> Any:
        if self._pool is None:
            raise RuntimeError("the machine service is not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token):
            return _error(401, "send Authorization: Bearer <the device manager's token>")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413
            return _error(exc.status, exc.reason)

    async def _start(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not NAME.match(name):
            return _error(400, f"{name!r} is not a Device name")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body must be a JSON object")
        problem = _check_start(body)
        if problem:
            return _error(400, problem)
        call = functools.partial(
            self.manager.start, name, body["identity"], body["backend"], body.get("board"),
            body.get("preferredGateway"), body.get("options") or {})
        try:
            machine = await self._in_pool(call)
        except EmulationError as exc:
            return _error(422, str(exc))
        except Exception as exc:  # a bench defect: said to the controller, logged here
            log.exception("starting the machine of %s failed", name)
            return _error(500, f"the device manager failed: {type(exc).__name__}: {exc}")
        return web.json_response({"backend": machine.backend, "gateway": machine.gateway})

    async def _stop(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not NAME.match(name):
            return _error(400, f"{name!r} is not a Device name")
        call = functools.partial(self.manager.stop, name)
        try:
            stopped = await self._in_pool(call)
        except Exception as exc:
            log.exception("stopping the machine of %s failed", name)
            return _error(500, f"the device manager failed: {type(exc).__name__}: {exc}")
        return web.json_response({"stopped": bool(stopped)})


def _check_start(body: Any) -> str | None:
    """What is wrong with a start request's body, None if nothing."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for key in ("identity", "backend"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key!r} must be a non-empty string"
    for key in _OPTIONAL_STR:
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"{key!r} must be a string or null"
    if body.get("options") is not None and not isinstance(body["options"], dict):
        return "'options' must be a JSON object"
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
